"""Serve the ingest with uvicorn (``zonepurge serve``).

Once uvicorn is accepting, one line goes to stdout (``zonepurge.serving``)::

    zonepurge ingest listening on http://127.0.0.1:PORT

Logs go to stderr: uvicorn's own, and the ingest's access log (``ingest.app.AccessLog``) in
place of uvicorn's, which names the token by its label and shows no header or query string.
"""

from __future__ import annotations

import copy
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from ingest.app import create_app
from zonepurge.runtime import Runtime
from zonepurge.serving import AnnouncingServer, bind, serve, url_host

READY = "zonepurge ingest listening on "
BANNER = READY + "http://{host}:{port}"


def _log_config() -> dict[str, Any]:
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["zonepurge"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def run(host: str = "127.0.0.1", port: int = 8788, runtime: Runtime | None = None) -> None:
    """Serve the ingest until interrupted. ``port=0`` picks a free port."""
    app = create_app(runtime)
    sock = bind(host, port)
    uv_config = uvicorn.Config(app, log_config=_log_config(), access_log=False, lifespan="off",
                               server_header=False)
    server = AnnouncingServer(uv_config, BANNER.format(host=url_host(host),
                                                       port=sock.getsockname()[1]))
    serve(server, sock)
