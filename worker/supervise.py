"""Keeps a Celery worker running: `zonepurge worker` starts it as a child and starts it again if
it exits without being asked to.

Celery's worker has been seen to shut itself down (exit status 0) when its Redis broker restarts
under it: kombu fails to acknowledge a message on the dead connection while the consumer
restarts (see the kombu tracebacks in celery/kombu #582 and celery/celery #8030). The queue
loses nothing when that happens (leases, sweeps), but a worker that is gone purges nothing either,
and not every deployment has a process manager to start it again. So `zonepurge worker` is its
own: SIGTERM or Ctrl-C stops the child and the supervisor; any other exit starts a new child after
a backoff that grows while the child keeps dying young.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

log = logging.getLogger("zonepurge.supervise")

CHILD_ENV = "ZONEPURGE_WORKER_CHILD"
# A child that lived this long was healthy: its exit resets the backoff.
HEALTHY_S = 60.0


def supervise(command: list[str], sleep: Callable[[float], None] = time.sleep) -> int:
    """Run ``command`` as the child (with CHILD_ENV set) until asked to stop; its exit status."""
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    backoff = 1.0
    while True:
        started = time.monotonic()
        child = subprocess.Popen(command, env={**os.environ, CHILD_ENV: "1"})
        status = child.wait()
        if stopping:
            return status
        lived = time.monotonic() - started
        backoff = 1.0 if lived >= HEALTHY_S else min(backoff * 2, 30.0)
        print(f"zonepurge worker: the Celery worker exited (status {status}) after {lived:.0f}s "
              f"without being asked to; starting it again in {backoff:.0f}s", file=sys.stderr, flush=True)
        sleep(backoff)
        if stopping:
            return status
