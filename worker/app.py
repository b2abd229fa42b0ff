"""The Celery application: broker, queue and the reliability options every task relies on.

No result backend: a flush's outcome is recorded in Redis by the flush itself (purged, pending
again, or dead-lettered), never in a Celery result.
"""

from __future__ import annotations

import logging

import threading
from typing import Any

from celery import Celery, signals

from zonepurge.settings import Settings, get_settings

FLUSH_TASK = "zonepurge.flush"


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("zonepurge", broker=settings.broker_url, include=["worker.tasks"])
    app.conf.update(
        task_default_queue=settings.queue,
        task_ignore_result=True,
        # A task is acknowledged after it ran, and given back if its worker process dies, so a
        # flush interrupted by a crash runs again. Items are safe either way: they sit in a
        # lease that expires back to pending (zonepurge.store).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Flush countdowns are short (the debounce, a backoff capped at retry_max_s); this stays
        # well above them so the Redis transport never redelivers a task still waiting for its
        # ETA (celery/kombu #337).
        broker_transport_options={"visibility_timeout": 3600},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_serializer="json",
        accept_content=["json"],
    )
    return app


# httpx logs every request at INFO; the flush logs one line per call with what matters.
logging.getLogger("httpx").setLevel(logging.WARNING)


@signals.setup_logging.connect
def _logging(loglevel: Any = "INFO", **_: object) -> None:
    """Celery leaves logging to us when this signal has a receiver: text or JSON lines."""
    from zonepurge.logs import configure

    configure(loglevel or "INFO", get_settings().log_format)

app = make_app()

_apps: dict[tuple[str, str], Celery] = {}
_apps_lock = threading.Lock()


def app_for(settings: Settings) -> Celery:
    """The app that sends to ``settings``' broker: the process's own when they agree (a worker,
    the CLI), else one made for them (a Python producer given its own settings)."""
    key = (settings.broker_url, settings.queue)
    if key == (app.conf.broker_url, app.conf.task_default_queue):
        return app
    with _apps_lock:
        if key not in _apps:
            _apps[key] = make_app(settings)
        return _apps[key]
