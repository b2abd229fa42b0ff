"""One flush: take a batch from a lane, pay for it from the account's budget, send it to the
right endpoint, and record what became of every item.

Independent of Celery (the task in worker.tasks is a thin wrapper), so it is tested with a
real Redis and the sandbox and no worker process; time and sleeping are injected.

What a send's answer does:

| answer | the items | the lane |
|---|---|---|
| 200 | purged | next batch at once if one is due |
| 429 | back to pending, no attempt counted | the bucket is closed for Retry-After (or a guess) for every worker |
| 5xx, timeout, dropped connection | back to pending, attempt counted; dead-lettered past max attempts or max age | retried after jittered exponential backoff |
| 401/403 | back to pending | the zone is paused; one send is tried every pause_probe_s until one works |
| 1136 on a URL purge | sent as prefix purges (or dead-lettered, by setting) | the environment is remembered as refusing URL purges |
| other 400 or 413, batch of several | the batch is halved; each half is sent apart until the bad items stand alone | at once |
| other 4xx, or one item refused | dead-lettered with Cloudflare's code and message | at once |
"""

from __future__ import annotations

import logging
import random
import socket
import time
from collections.abc import Callable
from enum import StrEnum

from zonepurge import metrics
from zonepurge.backoff import full_jitter
from zonepurge.budget import Budget, bucket_for
from zonepurge.cloudflare import (
    CloudflareError,
    ForbiddenError,
    RejectedError,
    ThrottledError,
)
from zonepurge.environments import UnknownEnvironmentError
from zonepurge.items import ItemError, Kind, body_for, prefix_for_url
from zonepurge.lanes import EnvTarget, Lane
from zonepurge.runtime import Runtime
from zonepurge.store import Batch, DeadLetter, DeadReason, Settlement

log = logging.getLogger("zonepurge.flush")

# How long one flush task may go on sending batches of its lane (Flusher.drain).
DRAIN_SPAN_S = 2.0
# Longest countdown a flush is ever queued with: well under the broker's visibility timeout
# (worker.app), past which Redis would deliver the waiting task a second time. A longer wait is
# served in several hops: each hop finds the bucket still closed and waits again.
MAX_DELAY_S = 300.0
# How long an environment that answered 1136 is remembered as refusing URL purges.
NO_URL_PURGE_TTL_S = 3600.0
# Cloudflare refuses the request as a whole for these; halving it finds the items at fault.
_SPLIT_STATUSES = {400, 413}
_ERROR_1136 = 1136


class Outcome(StrEnum):
    EMPTY = "empty"
    WAITING = "waiting"
    PURGED = "purged"
    RETRYING = "retrying"
    SPLIT = "split"
    REDIRECTED = "redirected"
    DEAD_LETTERED = "dead-lettered"


class Flusher:
    def __init__(self, runtime: Runtime, clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 budget: Budget | None = None,
                 rng: Callable[[], float] = random.random) -> None:
        """``clock`` (seconds) and ``rng`` (the backoff's jitter, in [0, 1)) are for tests;
        without a clock, the queue's times are Redis's own, so that workers and producers on
        several hosts agree on them."""
        self.runtime = runtime
        self._given_clock = clock
        self.clock = clock or time.time
        self.sleep = sleep
        self.rng = rng
        self.budget = budget or Budget(runtime.store.redis, runtime.settings)

    def _at_ms(self) -> int | None:
        """The time for the store's scripts: the injected clock's (tests), else None for Redis's."""
        return int(self._given_clock() * 1000) if self._given_clock is not None else None

    def flush(self, lane_id: str) -> Outcome:
        """Send one batch of the lane (if one is due); queue the next flush if more remain."""
        return self.drain(lane_id, span_s=0)

    def drain(self, lane_id: str, span_s: float = DRAIN_SPAN_S) -> Outcome:
        """Send batch after batch of the lane for up to ``span_s`` seconds, while batches are
        due and sends go through; then queue the next flush if more remain.

        One task sends many batches under a backlog instead of one task per batch, which
        spared Celery's dispatch for every 500 URLs. Other worker slots still join in: each
        batch taken with a full batch behind it queues one more flush of the lane, if none is
        queued. The span bounds how long one lane holds a slot while other lanes wait.
        """
        lane = Lane.parse(lane_id)
        # This queued flush has started: a nudge may queue another from now on. (A flush of the
        # sweep's own clears the flag too: the flush it stood for was lost, or nobody takes it.)
        self.runtime.store.clear_flush_queued(lane)
        deadline = time.monotonic() + span_s
        while True:
            outcome, more = self._flush_once(lane)
            if not more:
                return outcome
            if time.monotonic() >= deadline:
                self.runtime.scheduler.nudge(lane, delay_s=0)
                return outcome

    def _flush_once(self, lane: Lane) -> tuple[Outcome, bool]:
        """One batch: its outcome, and whether the lane has more to send at once."""
        rt = self.runtime
        settings = rt.settings
        pause = rt.store.paused(lane.zone)
        if pause is not None and pause["probe_at"] > self.clock():
            rt.scheduler.nudge(lane, delay_s=min(pause["probe_at"] - self.clock(), MAX_DELAY_S))
            return Outcome.WAITING, False
        cap = settings.limits.items_per_request(lane.kind)
        take = rt.store.take(lane, cap, settings.debounce_s, settings.lease_s, at_ms=self._at_ms())
        if take.status == "empty":
            return Outcome.EMPTY, False
        if take.status == "covered":
            # A pending purge-everything will purge these too; its flush nudges this lane after.
            return Outcome.WAITING, False
        if take.status == "wait":
            rt.scheduler.nudge(lane, delay_s=take.wait_s)
            return Outcome.WAITING, False
        batch = take.batch
        assert batch is not None
        if batch.remaining >= cap:
            # Another full batch is ready: let another worker slot send it meanwhile.
            rt.scheduler.nudge(lane, delay_s=0)
        outcome = self._send(batch, was_paused=pause is not None)
        if lane.kind is Kind.EVERYTHING:
            self._after_everything(batch, outcome)
        more = outcome in (Outcome.PURGED, Outcome.SPLIT, Outcome.REDIRECTED, Outcome.DEAD_LETTERED) and (
            batch.remaining > 0 or outcome is Outcome.SPLIT)
        return outcome, more

    # -- one batch ---------------------------------------------------------------------------

    def _send(self, batch: Batch, was_paused: bool = False) -> Outcome:
        rt = self.runtime
        lane = batch.lane
        if lane.kind is Kind.FILES and rt.store.refuses_url_purge(lane):
            return self._refused_url_purge(batch, None)
        try:
            target = rt.directory.resolve(lane.zone, lane.env.name) if lane.env.name else lane.env
        except UnknownEnvironmentError as exc:
            return self._dead(batch, batch.members, DeadReason.UNKNOWN_ENVIRONMENT, None, str(exc))
        except CloudflareError as exc:
            return self._retry(batch, f"cannot list environments: {exc}")
        client = rt.cloudflare()
        if client is None:
            return self._forbidden(batch, "no Cloudflare API token is set (CLOUDFLARE_API_TOKEN)")

        account = rt.settings.account_of(lane.zone)
        wait = self._pay(account, lane.kind, len(batch.members))
        if wait > 0:
            rt.store.finish(batch, Settlement(back=batch.members))
            rt.scheduler.nudge(lane, delay_s=min(wait, MAX_DELAY_S))
            return Outcome.WAITING

        started = time.perf_counter()
        error: CloudflareError | None = None
        try:
            client.purge(lane.zone, target.ref, lane.mode, body_for(lane.kind, batch.members))
        except CloudflareError as exc:
            error = exc
        counts = self._observe_call(batch, target, error, time.perf_counter() - started)
        if isinstance(error, ThrottledError):
            return self._throttled(batch, account, error, counts)
        if isinstance(error, ForbiddenError):
            return self._forbidden(batch, str(error), counts)
        if isinstance(error, RejectedError):
            return self._rejected(batch, error, counts)
        if error is not None:
            return self._retry(batch, str(error), counts)
        rt.store.finish(batch, Settlement(counts=counts, sent_ok=True))
        if was_paused and rt.store.resume(lane.zone):
            log.warning("zone %s: purging works again; resumed", lane.zone)
        labels = metrics.lane_labels(lane)
        metrics.ITEMS_PURGED.labels(**labels).inc(len(batch.members))
        now = time.time()
        latency = metrics.PURGE_LATENCY.labels(lane.kind.value)
        for enqueued_ms in batch.enqueued_ms:
            latency.observe(max(0.0, now - enqueued_ms / 1000))
        return Outcome.PURGED

    def _observe_call(self, batch: Batch, target: EnvTarget, error: CloudflareError | None,
                      seconds: float) -> dict[str, int]:
        """One log line and the metrics of one call to Cloudflare; what it adds to the running
        totals, for the settlement to record."""
        lane = batch.lane
        status = "200" if error is None else str(error.status or "error")
        code = error.code if isinstance(error, RejectedError) else None
        throttled = isinstance(error, ThrottledError)
        metrics.API_CALLS.labels(lane.kind.value, status, str(code or "")).inc()
        metrics.CALL_DURATION.labels(lane.kind.value).observe(seconds)
        metrics.BATCH_SIZE.labels(lane.kind.value).observe(len(batch.members))
        if throttled:
            metrics.THROTTLED.labels(bucket_for(lane.kind)).inc()
        log.log(logging.INFO if error is None else logging.WARNING, "api call: %s %d %s, %s",
                lane, len(batch.members), lane.kind.value, status,
                extra={"event": "api_call", "zone": lane.zone, "environment": target.describe(),
                       "kind": lane.kind.value, "mode": lane.mode.value, "items": len(batch.members),
                       "status": status, "code": code, "duration_ms": round(seconds * 1000, 1),
                       "receipts": ",".join(batch.receipts) or None})
        return {"calls": 1, "throttled": int(throttled), "failed": int(error is not None and not throttled)}

    def _after_everything(self, batch: Batch, outcome: Outcome) -> None:
        """A purge-everything went out: the items it covered are done. Whatever its outcome,
        the lanes it held back may go on (with newer items, or with all of theirs if it failed)."""
        store = self.runtime.store
        if outcome is Outcome.PURGED:
            dropped = store.drop_covered(batch.lane, batch.taken_ms)
            if dropped:
                log.info("%s: %d pending item(s) of the zone purged by it", batch.lane, dropped)
        if outcome is not Outcome.WAITING and outcome is not Outcome.RETRYING:
            for lane in store.covered_lanes(batch.lane):
                self.runtime.scheduler.nudge(lane, delay_s=0)

    def _pay(self, account: str, kind: Kind, items: int) -> float:
        """Take the send's cost from the budget, waiting in this slot for a short wait only.
        Returns 0 once paid, else the wait still ahead (nothing paid)."""
        in_slot = self.runtime.settings.budget_wait_in_slot_s
        waited = 0.0
        wait = 0.0
        for _ in range(8):
            wait = self.budget.acquire(account, kind, items)
            if wait <= 0 or wait > in_slot:
                break
            waited += max(wait, 0.001)
            self.sleep(max(wait, 0.001))  # a wait of rounding error would otherwise spin
        else:
            wait = self.budget.acquire(account, kind, items)
        if waited or wait > 0:
            bucket = bucket_for(kind)
            metrics.BUDGET_WAITS.labels(bucket).inc()
            metrics.BUDGET_WAIT_SECONDS.labels(bucket).inc(waited + max(wait, 0.0))
        return wait

    # -- answers -----------------------------------------------------------------------------

    def _throttled(self, batch: Batch, account: str, exc: ThrottledError,
                   counts: dict[str, int]) -> Outcome:
        s = self.runtime.settings
        if exc.retry_after is not None:
            wait = exc.retry_after
        else:
            throttles = self.runtime.store.count_failure(batch.lane, ttl_s=s.retry_max_s * 10)
            wait = min(s.retry_max_s, s.throttle_guess_s * 2 ** (throttles - 1))
        closed_for = self.budget.block(account, bucket_for(batch.lane.kind), wait)
        self.runtime.store.finish(batch, Settlement(back=batch.members, counts=counts))
        self.runtime.scheduler.nudge(batch.lane, delay_s=min(closed_for, MAX_DELAY_S))
        log.warning("429 for %s: the %s budget of account %s is closed for %.1fs; %d item(s) wait",
                    batch.lane, bucket_for(batch.lane.kind), account, closed_for, len(batch.members))
        return Outcome.WAITING

    def _retry(self, batch: Batch, why: str, counts: dict[str, int] | None = None) -> Outcome:
        """A transient failure: back to pending with an attempt counted, unless spent."""
        s = self.runtime.settings
        store = self.runtime.store
        now = self.clock()
        tries = store.attempts(batch.lane, batch.members)
        back, spent = [], []
        for member, enqueued_ms, count in zip(batch.members, batch.enqueued_ms, tries, strict=True):
            too_old = now - enqueued_ms / 1000 > s.max_age_s
            (spent if count + 1 >= s.max_attempts or too_old else back).append(member)
        dead = self._records(batch, spent, DeadReason.GAVE_UP, None,
                             f"{why} (after {s.max_attempts} attempts or {s.max_age_s:.0f}s)",
                             {m: c + 1 for m, c in zip(batch.members, tries, strict=True)})
        failures = store.count_failure(batch.lane, ttl_s=s.retry_max_s * 10)
        wait = full_jitter(failures, s.retry_base_s, s.retry_max_s, self.rng)
        store.finish(batch, Settlement(back=back, count_attempt=True, dead=dead, counts=counts or {},
                                       backoff_s=wait),
                     attempts_ttl_s=s.max_age_s, at_ms=self._at_ms())
        metrics.RETRIES.labels(batch.lane.kind.value).inc()
        _count_dead(batch.lane, dead)
        self.runtime.scheduler.nudge(batch.lane, delay_s=wait)
        log.warning("%s: %s; %d item(s) retry in %.1fs, %d given up", batch.lane, why, len(back),
                    wait, len(spent))
        return Outcome.RETRYING if back else Outcome.DEAD_LETTERED

    def _forbidden(self, batch: Batch, why: str, counts: dict[str, int] | None = None) -> Outcome:
        s = self.runtime.settings
        zone = batch.lane.zone
        # Which host saw it: with several workers, one with a wrong token pauses the zone for all.
        self.runtime.store.pause(zone, f"{why} (seen by the worker on {socket.gethostname()})",
                                 probe_at=self.clock() + s.pause_probe_s)
        self.runtime.store.finish(batch, Settlement(back=batch.members, counts=counts or {}))
        self.runtime.scheduler.nudge(batch.lane, delay_s=s.pause_probe_s)
        log.error("zone %s PAUSED: %s. Its items stay pending; a send is tried every %.0fs and "
                  "purging resumes by itself once one works.", zone, why, s.pause_probe_s)
        return Outcome.WAITING

    def _rejected(self, batch: Batch, exc: RejectedError, counts: dict[str, int]) -> Outcome:
        lane = batch.lane
        if exc.code == _ERROR_1136 and lane.kind is Kind.FILES:
            self.runtime.store.mark_no_url_purge(lane, NO_URL_PURGE_TTL_S)
            return self._refused_url_purge(batch, exc, counts)
        if exc.status in _SPLIT_STATUSES and len(batch.members) > 1:
            half = len(batch.members) // 2
            groups = [batch.members[:half], batch.members[half:]]
            self.runtime.store.finish(batch, Settlement(split=groups, counts=counts))
            log.warning("%s: %d item(s) refused together (%s); sending them in halves to find "
                        "the items at fault", lane, len(batch.members), exc)
            return Outcome.SPLIT
        return self._dead(batch, batch.members, DeadReason.REJECTED, exc.code, str(exc), counts)

    def _refused_url_purge(self, batch: Batch, exc: RejectedError | None,
                           counts: dict[str, int] | None = None) -> Outcome:
        """The environment refuses purge by URL (1136): purge prefixes instead, or give up."""
        lane = batch.lane
        why = str(exc) if exc else "this environment refuses purge by URL (Cloudflare error 1136)"
        if self.runtime.settings.on_1136 == "dead-letter":
            return self._dead(batch, batch.members, DeadReason.URL_PURGE_REFUSED, _ERROR_1136, why, counts)
        prefixes: list[str] = []
        unusable: list[str] = []
        for member in batch.members:
            try:
                prefixes.append(prefix_for_url(member))
            except ItemError:
                unusable.append(member)
        target = lane.with_(kind=Kind.PREFIXES)
        dead = self._records(batch, unusable, DeadReason.URL_PURGE_REFUSED, _ERROR_1136,
                             f"{why}; no prefix purge can stand in for this URL")
        # Each prefix keeps the earliest first-enqueue time of the URLs it stands for, so it
        # goes out no later than they would have.
        scores = batch.scores()
        firsts: dict[str, float] = {}
        moved = dict(zip([m for m in batch.members if m not in unusable], prefixes, strict=True))
        for member, prefix in moved.items():
            firsts[prefix] = min(firsts.get(prefix, scores[member]), scores[member])
        self.runtime.store.finish(batch, Settlement(dead=dead, redirect=(target, firsts), moved=moved,
                                                    counts=counts or {}),
                                  attempts_ttl_s=self.runtime.settings.max_age_s)
        self.runtime.scheduler.nudge(target, delay_s=0)
        log.warning("%s: %s; %d URL(s) go out as %d prefix purge(s)", lane,
                    "URL purge refused (1136)" if exc else "this environment refuses URL purges (1136, "
                    "remembered for an hour)", len(batch.members), len(firsts))
        return Outcome.REDIRECTED

    def _dead(self, batch: Batch, members: list[str], reason: DeadReason, code: int | None,
              message: str, counts: dict[str, int] | None = None) -> Outcome:
        tries = self.runtime.store.attempts(batch.lane, members)
        records = self._records(batch, members, reason, code, message,
                                {m: c + 1 for m, c in zip(members, tries, strict=True)})
        self.runtime.store.finish(batch, Settlement(dead=records, counts=counts or {}))
        _count_dead(batch.lane, records)
        log.error("%d %s in %s dead-lettered: %s", len(records), batch.lane.kind.value, batch.lane,
                  message)
        return Outcome.DEAD_LETTERED

    def _records(self, batch: Batch, members: list[str], reason: DeadReason, code: int | None,
                 message: str, attempts: dict[str, int] | None = None) -> list[DeadLetter]:
        lane = batch.lane
        scores = batch.scores()
        now = self.clock()
        return [
            DeadLetter(item=member, zone=lane.zone, environment=str(lane.env), kind=lane.kind.value,
                       mode=lane.mode.value, reason=reason.value, code=code, message=message,
                       attempts=(attempts or {}).get(member, 1), first_enqueued_at=scores[member] / 1000,
                       dead_at=now, lane=lane.id)
            for member in members
        ]


def _count_dead(lane: Lane, records: list[DeadLetter]) -> None:
    by_reason: dict[str, int] = {}
    for record in records:
        by_reason[record.reason] = by_reason.get(record.reason, 0) + 1
    for reason, count in by_reason.items():
        metrics.ITEMS_DEAD_LETTERED.labels(**metrics.lane_labels(lane), reason=reason).inc(count)
