"""Serve the sandbox over real HTTP with uvicorn (``zonepurge.serving``).

Once uvicorn is accepting, ``run()`` prints one line to stdout::

    zonepurge sandbox listening on http://127.0.0.1:PORT/client/v4

Everything else uvicorn says, access log included, goes to stderr. The access log shows method,
path and status; it never shows headers, hence no tokens.
"""

from __future__ import annotations

import copy
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from zonepurge.sandbox.app import API_PREFIX, create_app
from zonepurge.sandbox.config import SandboxConfig
from zonepurge.serving import AnnouncingServer, bind, serve, url_host

BANNER = "zonepurge sandbox listening on http://{host}:{port}" + API_PREFIX


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


class _Server(AnnouncingServer):
    """Able to close one client's connection on the app's request (the "dropped connection"
    fault)."""

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
    sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    uv_config = uvicorn.Config(
        app,
        log_config=_log_config(),
        lifespan="off",
        # scope["client"] must stay the socket's peer: the drop fault finds the connection by
        # it, and no proxy sits in front of a sandbox.
        proxy_headers=False,
    )
    server = _Server(uv_config, BANNER.format(host=url_host(host), port=bound_port))
    app.state.abort_connection = server.abort_connection
    serve(server, sock)
