"""Serving an ASGI app of zonepurge's (the sandbox, the ingest) with uvicorn on a socket of its own.

The socket is bound before uvicorn starts, so port 0 gives a free port whose number is known;
once uvicorn accepts connections, one line (the banner, with that port) goes to stdout. Scripts,
``zonepurge up`` and the tests learn the address from that line. Everything else uvicorn says goes
to stderr, so a parent that reads only the banner never fills the stdout pipe.
"""

from __future__ import annotations

import ipaddress
import socket
import sys

import uvicorn


class BindError(OSError):
    """The address cannot be listened on; the message says which, and why, in words."""


def bind(host: str, port: int) -> socket.socket:
    """A listening, non-blocking socket on host:port (0: a free port); BindError if it cannot
    be had (the port is taken, the host is not this machine's)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # a name such as "localhost"
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    # IPPROTO_TCP spelt out: asyncio turns on TCP_NODELAY only for sockets whose ``proto`` says
    # TCP, and without it every answer after a connection's first waits some 40 ms for the
    # client's delayed ACK (Nagle), since uvicorn writes headers and body apart.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = (exc.strerror or str(exc)).lower()
        raise BindError(exc.errno, f"cannot listen on {url_host(host)}:{port}: {why}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def url_host(host: str) -> str:
    """The host as written in a URL (IPv6 literals in brackets)."""
    return f"[{host}]" if ":" in host else host


class AnnouncingServer(uvicorn.Server):
    """uvicorn's server, printing ``banner`` on stdout once it accepts connections."""

    def __init__(self, config: uvicorn.Config, banner: str) -> None:
        super().__init__(config)
        self._banner = banner

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            print(self._banner, flush=True)


def serve(server: uvicorn.Server, sock: socket.socket) -> None:
    """Run ``server`` on ``sock`` until interrupted; exit 1 if it never started."""
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        sys.exit(1)
