"""What became of one enqueue: a receipt's counts and state, read from Redis, and waiting on it.

Every enqueue (one request, or one whole file) returns a receipt. The store keeps it up to date
as the items it accepted or found pending are settled (``zonepurge.store``: watch entries), so
that reading it is one ``HGETALL``. Its state:

- ``pending``: some item is still pending or in flight (or a file is still being enqueued);
- ``done``: every item was purged;
- ``done-with-dead-letters``: every item was settled, and some were dead-lettered
  (``zonepurge dead-letters list`` says why).

``zonepurge receipt``, ``zonepurge wait`` and the ingest's ``GET /v1/receipts/{id}`` all read
receipts through this module.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from zonepurge.store import Store

_RECEIPT_ID = re.compile(r"^[0-9a-f]{32}$")


def new_receipt_id() -> str:
    return uuid.uuid4().hex


def is_receipt_id(text: str) -> bool:
    return bool(_RECEIPT_ID.match(text))


class State(StrEnum):
    PENDING = "pending"
    DONE = "done"
    DONE_WITH_DEAD_LETTERS = "done-with-dead-letters"


class ReceiptReport(BaseModel):
    """A receipt as people and scripts read it."""

    model_config = ConfigDict(frozen=True)

    id: str
    zone: str
    environment: str = Field(description='"production", a ref, or "<name> (unresolved)"')
    environment_name: str | None = None
    kind: str
    mode: str
    items: int = Field(description="items in the request or file, duplicates included")
    accepted: int = Field(description="items newly pending because of it")
    already_pending: int = Field(description="items that were pending already (or repeated)")
    purged: int = Field(description="items settled as purged")
    dead_lettered: int = Field(description="items settled as dead letters")
    outstanding: int = Field(description="items still pending or in flight")
    created_at: float | None = Field(description="seconds since the epoch")
    completed_at: float | None = Field(description="when the last item was settled")
    state: State
    warnings: list[str] = Field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.state is not State.PENDING


def read_receipt(store: Store, receipt_id: str) -> ReceiptReport | None:
    """The receipt, or None if there is none of that id (never was, or its TTL has passed)."""
    if not is_receipt_id(receipt_id):
        return None
    fields = store.receipt(receipt_id)
    if fields is None:
        return None
    outstanding = max(0, int(fields.get("outstanding", 0)))
    dead = int(fields.get("dead_lettered", 0))
    completed = fields.get("completed_at")
    # ``open`` is there while a file is still being enqueued; ``completed_at`` is set by the
    # same script that settles the last item of a sealed receipt.
    if "open" in fields or completed is None:
        state = State.PENDING
    else:
        state = State.DONE_WITH_DEAD_LETTERS if dead else State.DONE
    return ReceiptReport(
        id=receipt_id,
        zone=str(fields.get("zone", "")),
        environment=str(fields.get("environment", "")),
        environment_name=fields.get("environment_name"),
        kind=str(fields.get("kind", "")),
        mode=str(fields.get("mode", "")),
        items=int(fields.get("items", 0)),
        accepted=int(fields.get("accepted", 0)),
        already_pending=int(fields.get("already_pending", 0)),
        purged=int(fields.get("purged", 0)),
        dead_lettered=dead,
        outstanding=outstanding,
        created_at=fields.get("created_at"),
        completed_at=float(completed) if completed is not None else None,
        state=state,
        warnings=list(fields.get("warnings") or []),
    )


def wait_for_receipt(
    store: Store,
    receipt_id: str,
    timeout_s: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    first_interval_s: float = 0.05,
    max_interval_s: float = 1.0,
) -> ReceiptReport | None:
    """Poll until the receipt is done or ``timeout_s`` has passed; the last reading (still
    pending if it timed out), or None if there is no such receipt.

    The interval starts short (a publish hook's purge is usually out within the debounce) and
    grows to ``max_interval_s``, so a long wait costs a read a second.
    """
    deadline = clock() + timeout_s
    interval = first_interval_s
    while True:
        report = read_receipt(store, receipt_id)
        if report is None or report.done:
            return report
        left = deadline - clock()
        if left <= 0:
            return report
        sleep(min(interval, left))
        interval = min(interval * 2, max_interval_s)
