"""Enqueueing purges from Python: validate, resolve the environment, add to the lane, nudge.

    from producer import enqueue
    receipt = enqueue("023e105f4ecef8ad9ca31a8372d0c353", environment="Staging",
                      files=["https://www.example.com/news/"])
    receipt.accepted, receipt.already_pending

Errors, all raised before anything is stored:

- ``RequestError``: the request is invalid; ``.problems`` names each bad item.
- ``UnknownEnvironmentError``: Cloudflare lists no such environment for the zone.
- ``UnavailableError``: Redis (or the broker) cannot be reached; nothing was enqueued.

The receipt's id names it in Redis, where it follows its items until each is purged or
dead-lettered: ``zonepurge.receipts`` reads it (``zonepurge receipt ID``, ``zonepurge wait ID``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from zonepurge import metrics
from zonepurge.items import Kind, Mode
from zonepurge.lanes import EnvTarget, Lane
from zonepurge.model import PurgeRequest
from zonepurge.receipts import ReceiptReport, new_receipt_id, read_receipt, wait_for_receipt
from zonepurge.runtime import Runtime, redact_url
from zonepurge.store import STAGE_TTL_S, StageLostError, Store


class UnavailableError(ConnectionError):
    """Redis or the broker cannot be reached. What the message says was stored, was stored."""


@dataclass(frozen=True, slots=True)
class Receipt:
    id: str
    zone: str
    environment: str
    """"production", the environment's ref, or "<name> (unresolved)" when the environment list
    could not be fetched at enqueue (the worker resolves it)."""
    environment_name: str | None
    kind: str
    mode: str
    items: int
    """Items in the request, after normalization (duplicates included)."""
    accepted: int
    """Items newly pending because of this request."""
    already_pending: int
    """Items already pending, repeated within the request, or covered by a pending hard
    purge or purge-everything."""
    created_at: float
    warnings: list[str] = field(default_factory=list)
    """Things the caller should know: the environment could not be checked yet, the broker
    could not be told (a worker's sweep will find the items)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Producer:
    """Enqueues purge requests. Safe to share between threads."""

    def __init__(self, runtime: Runtime | None = None) -> None:
        self.runtime = runtime or Runtime()

    def enqueue(self, request: PurgeRequest | Mapping[str, Any],
                authorize: Callable[[Lane], None] | None = None) -> Receipt:
        """Validate and enqueue one request atomically: all of its items or none.

        ``authorize`` sees the lane once the environment is resolved, before anything is
        stored, and refuses it by raising (the HTTP ingest checks a token's scope there).
        """
        if not isinstance(request, PurgeRequest):
            request = PurgeRequest.parse(dict(request))
        target, warnings = self.resolve(request.zone, request.environment)
        lane = Lane(request.zone, target, request.kind, request.mode)
        if authorize is not None:
            authorize(lane)
        members = request.members
        receipt_id = new_receipt_id()
        with self._redis_errors(stored=0):
            result = self.runtime.store.enqueue(lane, members, receipt_id=receipt_id,
                                                receipt_ttl_s=self.runtime.settings.receipt_ttl_s)
        self._nudge(lane, result.pending, warnings)
        return self._receipt(receipt_id, lane, len(members), result.added, warnings)

    def receipt(self, receipt_id: str) -> ReceiptReport | None:
        """What became of an enqueue so far (None for an unknown or expired id)."""
        with self._redis_errors(stored=0):
            return read_receipt(self.runtime.store, receipt_id)

    def wait(self, receipt_id: str, timeout_s: float = 300) -> ReceiptReport | None:
        """Until every item of the receipt is purged or dead-lettered, or ``timeout_s`` has
        passed: its state then says which (``pending`` if it timed out)."""
        with self._redis_errors(stored=0):
            return wait_for_receipt(self.runtime.store, receipt_id, timeout_s)

    def resolve(self, zone: str, environment: str | None) -> tuple[EnvTarget, list[str]]:
        """The environment's target, and a warning when it could not be checked now.

        Raises UnknownEnvironmentError when Cloudflare's list does not have it.
        """
        with self._redis_errors(stored=0):
            target, why = self.runtime.directory.resolve_or_defer(zone, environment)
        if why is None:
            return target, []
        return target, [f"environment {environment!r} could not be checked now ({why}); a worker "
                        "will resolve it, or dead-letter the items if the zone has no such environment"]

    def enqueue_staged(self, zone: str, target: EnvTarget, kind: Kind, mode: Mode,
                       chunks: Iterable[list[str]],
                       on_enqueued: Callable[[int, int], None] | None = None,
                       warnings: list[str] | None = None) -> Receipt:
        """Enqueue a file's members, all of them or none, as ``chunks`` yields them validated
        (``producer.bulk``).

        Each chunk is staged in Redis by a thread of its own while the next one is validated;
        once ``chunks`` is exhausted without an error, the stage joins the lane
        (``Store.commit_stage``; ``on_enqueued(done, staged)`` follows a busy lane's slices).
        If ``chunks`` raises (a bad line), the stage is dropped and the error passes on. If
        Redis fails while staging, nothing was enqueued; while a busy lane takes the stage slice
        by slice, UnavailableError says how many items were stored.
        """
        lane = Lane(zone, target, kind, mode)
        warnings = list(warnings or [])
        receipt_id = new_receipt_id()
        store, settings = self.runtime.store, self.runtime.settings
        items = 0
        with self._redis_errors(stored=0):
            with _Stager(store, receipt_id, STAGE_TTL_S) as stager:
                for chunk in chunks:
                    stager.put(chunk)
                    items += len(chunk)
        stored = 0

        def on_slice(done: int, staged: int) -> None:
            nonlocal stored
            stored = done
            if on_enqueued is not None:
                on_enqueued(done, staged)

        with self._redis_errors(stored=lambda: stored):
            try:
                result = store.commit_stage(lane, receipt_id, stager.staged, settings.receipt_ttl_s,
                                            settings.enqueue_chunk, on_slice)
            except StageLostError as exc:
                raise UnavailableError(f"{exc}; enqueue it again") from None
        self._nudge(lane, result.pending, warnings)
        return self._receipt(receipt_id, lane, items, result.added, warnings)

    def _nudge(self, lane: Lane, pending: int, warnings: list[str]) -> None:
        """Ask for a flush. The items are stored already: if the broker cannot be reached, they
        are safe, and a worker's sweep queues their flush within ZONEPURGE_SWEEP_INTERVAL_S."""
        try:
            self.runtime.scheduler.nudge(lane, pending)
        except Exception as exc:
            if not _is_connection_failure(exc):
                raise
            note = (f"the broker could not be told ({type(exc).__name__}); the items are stored "
                    "and a worker's sweep will send them")
            if note not in warnings:
                warnings.append(note)

    def _receipt(self, receipt_id: str, lane: Lane, items: int, accepted: int,
                 warnings: list[str]) -> Receipt:
        """Save (and seal) the receipt of items already registered to ``receipt_id``."""
        labels = metrics.lane_labels(lane)
        metrics.ITEMS_ENQUEUED.labels(**labels).inc(accepted)
        metrics.ITEMS_DEDUPLICATED.labels(**labels).inc(items - accepted)
        receipt = Receipt(
            id=receipt_id,
            zone=lane.zone,
            environment=str(lane.env),
            environment_name="production" if lane.env.is_production else lane.env.label or lane.env.name,
            kind=lane.kind.value,
            mode=lane.mode.value,
            items=items,
            accepted=accepted,
            already_pending=items - accepted,
            created_at=time.time(),
            warnings=warnings,
        )
        with self._redis_errors(stored=items):
            self.runtime.store.save_receipt(receipt.id, receipt.to_dict(),
                                            self.runtime.settings.receipt_ttl_s)
        return receipt

    @contextmanager
    def _redis_errors(self, stored: int | Callable[[], int]) -> Iterator[None]:
        """Turns Redis and broker connection failures into UnavailableError."""
        try:
            yield
        except Exception as exc:
            if not _is_connection_failure(exc):
                raise
            count = stored() if callable(stored) else stored
            where = redact_url(self.runtime.settings.redis_url)
            raise UnavailableError(
                f"cannot reach Redis at {where} ({type(exc).__name__}); "
                f"{count} item(s) of this request were stored before the failure"
            ) from None


class _Stager:
    """Stages chunks of a file in Redis from a thread of its own, so that Redis stores one
    chunk while the producer validates the next: on two cores, the two work at once.

    ``put`` hands a chunk over (at most two wait, so memory stays flat) and raises at once if
    staging failed. Leaving the ``with`` block waits for every chunk to be stored and raises
    staging's error; leaving it by an exception drops the stage instead.
    """

    def __init__(self, store: Store, receipt_id: str, ttl_s: int) -> None:
        self._store = store
        self._receipt_id = receipt_id
        self._ttl_s = ttl_s
        self._chunks: queue.Queue[list[str] | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self.staged = 0
        """Distinct members Redis took into the stage (the commit checks they are all there)."""
        self._thread = threading.Thread(target=self._run, name="zonepurge-stager", daemon=True)

    def __enter__(self) -> _Stager:
        self._thread.start()
        return self

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            if self._error is None:
                try:
                    self.staged += self._store.stage(self._receipt_id, chunk, self._ttl_s)
                except BaseException as exc:  # noqa: BLE001 - handed to the producer's thread
                    self._error = exc  # and go on taking chunks, so that put() never blocks

    def put(self, chunk: list[str]) -> None:
        if self._error is not None:
            raise self._error
        self._chunks.put(chunk)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._chunks.put(None)
        self._thread.join()
        if exc_type is not None or self._error is not None:
            try:
                self._store.discard_stage(self._receipt_id)
            except Exception:  # noqa: BLE001 - Redis is down: the stage expires by itself
                pass
        if exc_type is None and self._error is not None:
            raise self._error


def _is_connection_failure(exc: BaseException) -> bool:
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, ConnectionError)):
        return True
    try:
        from kombu.exceptions import OperationalError
    except ImportError:  # pragma: no cover - kombu comes with celery
        return False
    return isinstance(exc, OperationalError)


_default: Producer | None = None


def default_producer() -> Producer:
    global _default
    if _default is None:
        _default = Producer()
    return _default


def enqueue(
    zone: str,
    *,
    environment: str | None = None,
    files: Iterable[str | Mapping[str, Any]] | None = None,
    tags: Iterable[str] | None = None,
    hosts: Iterable[str] | None = None,
    prefixes: Iterable[str] | None = None,
    everything: bool = False,
    invalidate: bool = False,
    producer: Producer | None = None,
) -> Receipt:
    """Enqueue one purge request; see the module docstring for the errors it raises."""
    data: dict[str, Any] = {"zone": zone, "environment": environment,
                            "purge_everything": everything, "invalidate": invalidate}
    for name, values in (("files", files), ("tags", tags), ("hosts", hosts), ("prefixes", prefixes)):
        if values is not None:
            data[name] = values if isinstance(values, (list, str, dict)) else list(_bounded(values))
    return (producer or default_producer()).enqueue(data)


def _bounded(values: Iterable[Any]) -> Iterator[Any]:
    # Stop one past the limit so that validation reports it without draining a huge iterator.
    from zonepurge.model import MAX_ITEMS_PER_REQUEST

    for i, value in enumerate(values):
        if i > MAX_ITEMS_PER_REQUEST:
            return
        yield value
