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

from zonepurge.runtime import Runtime

log = logging.getLogger("zonepurge.sweeper")


def sweep(runtime: Runtime) -> int:
    """One sweep; returns the number of flushes queued."""
    released = runtime.store.release_expired()
    if released:
        log.warning("released %d expired lease(s) back to pending", len(released))
    queued = 0
    for lane in runtime.store.lanes():
        if runtime.scheduler.nudge(lane, delay_s=0):
            queued += 1
    return queued


class Sweeper(threading.Thread):
    def __init__(self, runtime: Runtime, interval_s: float) -> None:
        super().__init__(name="zonepurge-sweeper", daemon=True)
        self._runtime = runtime
        self._interval = interval_s
        self._halt = threading.Event()  # not _stop: threading.Thread has one

    def run(self) -> None:
        while not self._halt.wait(self._interval):
            try:
                sweep(self._runtime)
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
    _sweeper = Sweeper(runtime, runtime.settings.sweep_interval_s)
    _sweeper.start()


@signals.worker_shutdown.connect
def _stop(**_: object) -> None:
    if _sweeper is not None:
        _sweeper.halt()
