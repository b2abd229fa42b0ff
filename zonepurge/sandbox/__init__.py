"""A Cloudflare cache-purge API emulator ("sandbox") for tests and trials.

``create_app(config)`` builds the ASGI app; ``run()`` serves it with uvicorn. See
:mod:`zonepurge.sandbox.app` for the endpoints and :mod:`zonepurge.sandbox.validation` for the
error codes.
"""

from zonepurge.sandbox.app import create_app
from zonepurge.sandbox.config import SandboxConfig
from zonepurge.sandbox.server import run

__all__ = ["SandboxConfig", "create_app", "run"]
