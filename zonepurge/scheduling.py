"""When the next flush of a lane runs: at most one queued flush per lane, debounced.

Producers and flushes both "nudge" a lane. A nudge queues a flush task unless one is already
queued (a short-lived Redis flag, cleared when the flush starts). A lane holding a full batch
is flushed at once; otherwise the flush is queued for the debounce window, so that a burst of
publishes shares one request.
"""

from __future__ import annotations

from collections.abc import Callable

from zonepurge.lanes import Lane
from zonepurge.settings import Settings
from zonepurge.store import Store

# The flag outlives the countdown by this much. A task that is lost (its worker died, the broker
# restarted) keeps the lane from being nudged until the flag expires; the sweep (worker.sweeper)
# then queues another. Short, because a flag that expires early costs only a duplicate flush.
_FLAG_MARGIN_S = 10.0

SendFlush = Callable[[str, float], None]
"""Queues flush(lane_id) to run after a delay in seconds."""


class FlushScheduler:
    def __init__(self, store: Store, settings: Settings, send: SendFlush) -> None:
        self._store = store
        self._settings = settings
        self._send = send

    def nudge(self, lane: Lane, pending: int | None = None, delay_s: float | None = None) -> bool:
        """Queue a flush of the lane unless one is queued; True if this call queued it."""
        if delay_s is None:
            cap = self._settings.limits.items_per_request(lane.kind)
            full = pending is not None and pending >= cap
            delay_s = 0.0 if full else self._settings.debounce_s
        if not self._store.mark_flush_queued(lane, delay_s + _FLAG_MARGIN_S):
            return False
        try:
            self._send(lane.id, delay_s)
        except BaseException:
            self._store.clear_flush_queued(lane)
            raise
        return True


def celery_sender(settings: Settings) -> SendFlush:
    """Send flush tasks to the settings' broker (Celery imported lazily: a producer may never
    send)."""

    def send(lane_id: str, delay_s: float) -> None:
        from worker.app import FLUSH_TASK, app_for

        app_for(settings).send_task(FLUSH_TASK, args=[lane_id], countdown=delay_s or None,
                                    queue=settings.queue)

    return send
