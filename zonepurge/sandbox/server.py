"""Serve the sandbox over real HTTP with uvicorn.

``run()`` binds the socket itself (so port 0 gives a free port whose number it knows), starts
uvicorn on it and, once uvicorn is accepting, prints one line to stdout::

    zonepurge sandbox listening on http://127.0.0.1:PORT/client/v4

Scripts and tests learn the port from that line. Everything else uvicorn says, access log
included, goes to stderr, so a parent that reads only that line never fills the stdout pipe.
The access log shows method, path and status; it never shows headers, hence no tokens.
"""

from __future__ import annotations

import copy
import ipaddress
import socket
import sys
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from zonepurge.sandbox.app import API_PREFIX, create_app
from zonepurge.sandbox.config import SandboxConfig

BANNER = "zonepurge sandbox listening on http://{host}:{port}" + API_PREFIX


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # a name such as "localhost"
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _log_config() -> dict[str, Any]:
    config = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    # The sandbox's own notes (injected faults) beside uvicorn's, on stderr too.
    config["loggers"]["zonepurge.sandbox"] = {
        "handlers": ["default"],
        "level": "INFO",
        "propagate": False,
    }
    return config


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class _Server(uvicorn.Server):
    """uvicorn's server, announcing itself on stdout once it accepts connections, and able to
    close one client's connection on the app's request (the "dropped connection" fault)."""

    def __init__(self, config: uvicorn.Config, banner: str) -> None:
        super().__init__(config)
        self._banner = banner

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            print(self._banner, flush=True)

    def abort_connection(self, client: tuple[str, int]) -> bool:
        """Close the TCP connection of ``client`` at once, with no response.

        uvicorn keeps its live connections (protocol objects with ``client`` and ``transport``)
        in ``server_state``; ASGI itself has no way to abort, and starting a response first
        would hand the client a status line, which a dropped connection must not do.
        """
        for connection in list(self.server_state.connections):
            if getattr(connection, "client", None) == client:
                transport = getattr(connection, "transport", None)
                if transport is not None:
                    transport.abort()
                    return True
        return False


def run(host: str = "127.0.0.1", port: int = 8787, config: SandboxConfig | None = None) -> None:
    """Serve the sandbox until interrupted. ``port=0`` picks a free port."""
    app = create_app(config if config is not None else SandboxConfig())
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    uv_config = uvicorn.Config(
        app,
        log_config=_log_config(),
        lifespan="off",
        # scope["client"] must stay the socket's peer: the drop fault finds the connection by
        # it, and no proxy sits in front of a sandbox.
        proxy_headers=False,
    )
    server = _Server(uv_config, BANNER.format(host=_url_host(host), port=bound_port))
    app.state.abort_connection = server.abort_connection
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        sys.exit(1)
