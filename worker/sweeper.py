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


# A lane whose pending items stood still (the same count, the same oldest item) for this many
# sweeps in a row is flushed by the sweep itself, at most this many lanes per sweep.
STILL_SWEEPS = 3
MAX_DIRECT_FLUSHES = 8

# What a sweep saw of each lane: (pending count, oldest item's time), and for how many sweeps.
Sightings = dict[str, tuple[tuple[int, float | None], int]]


def sweep(runtime: Runtime, flusher: Flusher | None = None, seen: Sightings | None = None) -> int:
    """One sweep; returns the number of flushes queued.

    With a ``flusher`` and the ``seen`` of the sweeps before, a lane whose items have not moved
    for STILL_SWEEPS sweeps is also flushed right here, on the sweep's own thread. Celery's
    consumer has been seen to stop consuming after its Redis connection was restored
    (celery/celery #8030, #4453); the queue must not depend on it. Items that do not move while
    a flush is queued for them mean nobody takes those flushes; a lane that drains, however
    long its backlog, changes between sweeps and is left to the pool. A flush that finds its
    lane waiting for budget, a backoff (kept in Redis, zp:backoff), a pause or a purge-everything
    sends nothing, so a direct flush is always safe.
    """
    released = runtime.store.release_expired()
    if released:
        log.warning("released %d expired lease(s) back to pending", len(released))
    queued = 0
    for lane in runtime.store.lanes():
        if runtime.scheduler.nudge(lane, delay_s=0):
            queued += 1
    if flusher is not None and seen is not None:
        now: Sightings = {}
        still = []
        for stats in runtime.store.snapshot().lanes:
            if not stats.pending:
                continue
            sighting = (stats.pending, stats.oldest_ms)
            before = seen.get(stats.lane.id)
            sweeps = before[1] + 1 if before is not None and before[0] == sighting else 0
            now[stats.lane.id] = (sighting, sweeps)
            if sweeps >= STILL_SWEEPS:
                still.append(stats.lane)
        seen.clear()
        seen.update(now)
        for lane in still[:MAX_DIRECT_FLUSHES]:
            outcome = flusher.flush(lane.id)
            log.warning("%s: its items did not move for %d sweeps; the sweep flushed it itself: %s",
                        lane, STILL_SWEEPS, outcome.value)
    return queued


class Sweeper(threading.Thread):
    def __init__(self, runtime: Runtime, interval_s: float, flusher: Flusher | None = None) -> None:
        super().__init__(name="zonepurge-sweeper", daemon=True)
        self._runtime = runtime
        self._flusher = flusher
        self._seen: Sightings = {}
        self._interval = interval_s
        self._halt = threading.Event()  # not _stop: threading.Thread has one

    def run(self) -> None:
        while not self._halt.wait(self._interval):
            try:
                sweep(self._runtime, self._flusher, self._seen)
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
