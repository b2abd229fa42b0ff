"""The Celery task: a thin wrapper over worker.flush, with one Runtime per worker process."""

from __future__ import annotations

import threading

from worker.app import FLUSH_TASK, app
from worker.flush import Flusher
from zonepurge.runtime import Runtime

_build_lock = threading.Lock()
_flusher: Flusher | None = None


def process_flusher() -> Flusher:
    """The process's Flusher, built on first use (after a prefork child has forked)."""
    global _flusher
    with _build_lock:
        if _flusher is None:
            _flusher = Flusher(Runtime())
        return _flusher


@app.task(name=FLUSH_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def flush(lane_id: str) -> str:
    return process_flusher().drain(lane_id).value
