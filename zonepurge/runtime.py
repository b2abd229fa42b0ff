"""The parts a producer or a worker process works with, built once from the settings.

Tests build a Runtime with their own Redis client, HTTP transport or task sender; everything
else takes the defaults.
"""

from __future__ import annotations

import threading
from urllib.parse import urlsplit, urlunsplit

import httpx
import redis

from zonepurge.cloudflare import CloudflareClient
from zonepurge.environments import EnvironmentDirectory
from zonepurge.settings import Settings, get_settings
from zonepurge.store import Store
from zonepurge.scheduling import FlushScheduler, SendFlush, celery_sender


def redact_url(url: str) -> str:
    """A Redis or broker URL without its user and password, for messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def connect_redis(settings: Settings) -> redis.Redis:
    # Timeouts so that a producer facing a dead Redis fails in seconds instead of hanging.
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=5,
        socket_timeout=30,
        health_check_interval=15,
        retry_on_timeout=True,
    )


class Runtime:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        redis_client: redis.Redis | None = None,
        transport: httpx.BaseTransport | None = None,
        send: SendFlush | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.store = Store(redis_client or connect_redis(self.settings))
        self._transport = transport
        self._client: CloudflareClient | None = None
        self._lock = threading.Lock()
        self.directory = EnvironmentDirectory(self.store, self.settings, self.cloudflare)
        self.scheduler = FlushScheduler(
            self.store, self.settings, send or celery_sender(self.settings)
        )

    def cloudflare(self) -> CloudflareClient | None:
        """The API client, or None when no token (and no sandbox) is set."""
        target = self.settings.api_target
        if target is None:
            return None
        with self._lock:
            if self._client is None:
                self._client = CloudflareClient(
                    target[0],
                    target[1],
                    timeout_s=self.settings.http_timeout_s,
                    transport=self._transport,
                )
            return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self.store.redis.close()
