"""The sweep every worker runs in the background: nothing pending is left without a flush.

A flush can be lost with its worker, a lease can outlive a killed worker, and a nudge can fail
while Redis restarts. Every ``ZONEPURGE_SWEEP_INTERVAL_S`` the sweep releases leases past their
deadline and nudges every lane that holds items; the per-lane flag (zonepurge.scheduling) makes the
nudges of many workers cost one queued flush.
"""

from __future__ import annotations

import logging
import threading

from celery import signals

from worker.flush import Flusher
from zonepurge.runtime import Runtime

log = logging.getLogger("zonepurge.sweeper")


# Lanes whose oldest item waited this many sweep intervals (past its debounce) are flushed by
# the sweep itself, at most this many per sweep.
OVERDUE_SWEEPS = 3
MAX_DIRECT_FLUSHES = 8


def sweep(runtime: Runtime, flusher: Flusher | None = None) -> int:
    """One sweep; returns the number of flushes queued.

    With a ``flusher``, lanes whose items are overdue are also flushed right here, on the
    sweep's own thread. Celery's consumer has been seen to stop consuming after its Redis
    connection was restored (celery/celery #8030, #4453); the queue must not depend on it. A flush
    that finds its lane waiting for budget, a backoff, a pause or a purge-everything changes
    nothing, so a direct flush is always safe.
    """
    released = runtime.store.release_expired()
    if released:
        log.warning("released %d expired lease(s) back to pending", len(released))
    queued = 0
    for lane in runtime.store.lanes():
        if runtime.scheduler.nudge(lane, delay_s=0):
            queued += 1
    if flusher is not None:
        settings = runtime.settings
        overdue_s = settings.debounce_s + OVERDUE_SWEEPS * settings.sweep_interval_s
        now_ms = runtime.store.server_ms()
        overdue = [s.lane for s in runtime.store.snapshot().lanes
                   if s.pending and s.oldest_ms is not None and now_ms - s.oldest_ms > overdue_s * 1000]
        for lane in overdue[:MAX_DIRECT_FLUSHES]:
            outcome = flusher.flush(lane.id)
            log.warning("%s was overdue; the sweep flushed it itself: %s", lane, outcome.value)
    return queued


class Sweeper(threading.Thread):
    def __init__(self, runtime: Runtime, interval_s: float, flusher: Flusher | None = None) -> None:
        super().__init__(name="zonepurge-sweeper", daemon=True)
        self._runtime = runtime
        self._flusher = flusher
        self._interval = interval_s
        self._halt = threading.Event()  # not _stop: threading.Thread has one

    def run(self) -> None:
        while not self._halt.wait(self._interval):
            try:
                sweep(self._runtime, self._flusher)
            except Exception:  # Redis restarting, say: try again next round
                log.warning("sweep failed; will try again", exc_info=True)

    def halt(self) -> None:
        self._halt.set()


_sweeper: Sweeper | None = None


@signals.worker_ready.connect
def _start(**_: object) -> None:
    global _sweeper
    runtime = Runtime()
    try:
        sweep(runtime)  # pick up whatever an earlier worker left behind, at once
    except Exception:
        log.warning("first sweep failed; will try again", exc_info=True)
    _sweeper = Sweeper(runtime, runtime.settings.sweep_interval_s, Flusher(runtime))
    _sweeper.start()
    if runtime.settings.metrics_port:
        from zonepurge import metrics

        metrics.serve(runtime.settings.metrics_port, runtime)
        log.info("metrics on http://0.0.0.0:%d/metrics", runtime.settings.metrics_port)


@signals.worker_shutdown.connect
def _stop(**_: object) -> None:
    if _sweeper is not None:
        _sweeper.halt()
