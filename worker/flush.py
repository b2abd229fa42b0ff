"""One flush: take a batch from a lane, send it to the right endpoint, record the outcome.

Independent of Celery (the task in worker.tasks is a thin wrapper), so it is tested with a
real Redis and a fake or real HTTP server and no worker process.

Outcomes of a send:
- success: the lease is settled; the items are purged.
- 429: the items go back to pending and the lane waits as long as Cloudflare asked.
- 5xx, timeout, dropped connection: back to pending, retried with jittered backoff.
- 401/403: back to pending (the token, not the items, is at fault), retried slowly, logged loudly.
- another 4xx, or an environment that does not exist: dead letters with Cloudflare's code and
  message, so that nothing disappears silently.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import StrEnum

from zonepurge.backoff import full_jitter
from zonepurge.cloudflare import (
    CloudflareError,
    ForbiddenError,
    RejectedError,
    ThrottledError,
    TransientError,
)
from zonepurge.environments import UnknownEnvironmentError
from zonepurge.items import body_for
from zonepurge.lanes import Lane
from zonepurge.runtime import Runtime
from zonepurge.store import Batch, DeadLetter

log = logging.getLogger("zonepurge.flush")

# Longest countdown a flush is ever queued with: well under the broker's visibility timeout
# (worker.app), past which Redis would deliver the waiting task a second time.
MAX_DELAY_S = 1800.0


class Outcome(StrEnum):
    EMPTY = "empty"
    WAITING = "waiting"
    PURGED = "purged"
    RETRYING = "retrying"
    DEAD_LETTERED = "dead-lettered"


class Flusher:
    def __init__(self, runtime: Runtime, clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self.clock = clock

    def flush(self, lane_id: str) -> Outcome:
        rt = self.runtime
        settings = rt.settings
        lane = Lane.parse(lane_id)
        rt.store.clear_flush_queued(lane)
        cap = settings.limits.items_per_request(lane.kind)
        take = rt.store.take(lane, cap, settings.debounce_s, settings.lease_s,
                            at_ms=int(self.clock() * 1000))
        if take.status == "empty":
            return Outcome.EMPTY
        if take.status == "wait":
            rt.scheduler.nudge(lane, delay_s=take.wait_s)
            return Outcome.WAITING
        batch = take.batch
        assert batch is not None
        if batch.remaining >= cap:
            # Another full batch is ready: let another worker slot send it meanwhile.
            rt.scheduler.nudge(lane, delay_s=0)
        outcome = self._send(batch)
        if outcome is Outcome.PURGED and batch.remaining:
            rt.scheduler.nudge(lane, delay_s=0)
        return outcome

    def _send(self, batch: Batch) -> Outcome:
        rt = self.runtime
        lane = batch.lane
        started = time.perf_counter()
        try:
            target = rt.directory.resolve(lane.zone, lane.env.name) if lane.env.name else lane.env
            client = rt.cloudflare()
            if client is None:
                raise ForbiddenError("no Cloudflare API token is set (CLOUDFLARE_API_TOKEN)")
            client.purge(lane.zone, target.ref, lane.mode, body_for(lane.kind, batch.members))
        except UnknownEnvironmentError as exc:
            return self._dead(batch, "unknown-environment", None, str(exc), started)
        except RejectedError as exc:
            return self._dead(batch, "rejected", exc.code, str(exc), started)
        except ThrottledError as exc:
            wait = exc.retry_after if exc.retry_after is not None else self._backoff(lane)
            return self._retry(batch, wait, f"throttled, retrying in {wait:.1f}s", started)
        except ForbiddenError as exc:
            log.error("purge refused for %s: %s; the items stay pending", lane, exc)
            return self._retry(batch, self.runtime.settings.retry_max_s, str(exc), started)
        except (TransientError, CloudflareError) as exc:
            wait = self._backoff(lane)
            return self._retry(batch, wait, f"{exc}; retrying in {wait:.1f}s", started)
        rt.store.settle(batch)
        rt.store.clear_failures(lane)
        log.info("purged %d %s in %s (%.0f ms)", len(batch.members), lane.kind.value, lane,
                 (time.perf_counter() - started) * 1000)
        return Outcome.PURGED

    def _backoff(self, lane: Lane) -> float:
        s = self.runtime.settings
        failures = self.runtime.store.count_failure(lane, ttl_s=s.retry_max_s * 10)
        return full_jitter(failures, s.retry_base_s, s.retry_max_s)

    def _retry(self, batch: Batch, wait_s: float, why: str, started: float) -> Outcome:
        self.runtime.store.release(batch.lease_id)
        self.runtime.scheduler.nudge(batch.lane, delay_s=min(max(wait_s, 0.0), MAX_DELAY_S))
        log.warning("%d %s in %s back to pending: %s (%.0f ms)", len(batch.members),
                    batch.lane.kind.value, batch.lane, why, (time.perf_counter() - started) * 1000)
        return Outcome.RETRYING

    def _dead(self, batch: Batch, reason: str, code: int | None, message: str,
              started: float) -> Outcome:
        lane = batch.lane
        now = self.clock()
        records = [
            DeadLetter(
                item=member, zone=lane.zone, environment=str(lane.env), kind=lane.kind.value,
                mode=lane.mode.value, reason=reason, code=code, message=message, attempts=1,
                first_enqueued_at=enqueued / 1000, dead_at=now, lane=lane.id,
            )
            for member, enqueued in zip(batch.members, batch.enqueued_ms, strict=True)
        ]
        self.runtime.store.settle(batch, dead=records)
        log.error("%d %s in %s dead-lettered: %s (%.0f ms)", len(records), lane.kind.value, lane,
                  message, (time.perf_counter() - started) * 1000)
        return Outcome.DEAD_LETTERED
