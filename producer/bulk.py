"""Enqueueing from a file of items, one per line: a million lines in modest memory.

Two passes, so that a file is accepted whole or refused whole like any request:

1. Validate every line, writing its member to a spool file on disk (so stdin works too and
   memory stays flat). Any bad line refuses the file: every bad line is reported, nothing is
   enqueued.
2. Read the spool back in chunks of ``ZONEPURGE_ENQUEUE_CHUNK`` and enqueue each chunk in one
   Redis round trip.

Blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import tempfile
from itertools import islice
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from producer.api import Producer, Receipt
from zonepurge.items import ItemError, Kind, Mode, member_function
from zonepurge.model import RequestError, check_environment, check_zone

# Past this many bad lines, the rest are counted but not listed.
MAX_REPORTED_PROBLEMS = 50


@dataclass(frozen=True, slots=True)
class Progress:
    phase: str  # "validating" or "enqueueing"
    lines: int
    total: int | None
    accepted: int


ProgressCallback = Callable[[Progress], None]


def validate_lines(kind: Kind, lines: Iterable[str], spool: IO[str],
                   progress: ProgressCallback | None = None, every: int = 50_000) -> int:
    """Pass 1: write each line's member to ``spool``; RequestError if any line is bad.

    This loop runs once per line of a file of millions: it keeps to local names and writes the
    spool in blocks (bench/, "enqueue from a file").
    """
    problems: list[str] = []
    bad = count = 0
    member_of = member_function(kind)
    block: list[str] = []
    number = 0
    try:
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if number == 1 and text.startswith("\ufeff"):  # a byte order mark
                text = text[1:].strip()
            if not text or text[0] == "#":
                continue
            try:
                member = member_of(text)
            except ItemError as exc:
                bad += 1
                if len(problems) < MAX_REPORTED_PROBLEMS:
                    problems.append(f"line {number}: {exc}")
                continue
            count += 1
            if not bad:
                block.append(member)
                if len(block) >= _SPOOL_BLOCK:
                    _spool(spool, block)
            if progress is not None and count % every == 0:
                progress(Progress("validating", count, None, 0))
    except UnicodeDecodeError as exc:
        raise RequestError([f"near line {number + 1}: not UTF-8 text ({exc.reason}); "
                            "nothing was enqueued"]) from None
    if bad:
        if bad > len(problems):
            problems.append(f"… {bad - len(problems)} more bad line(s) not listed ({bad} in all)")
        raise RequestError(problems)
    if count == 0:
        raise RequestError(["the file holds no items (only blank or comment lines)"])
    _spool(spool, block)
    return count


# Members written to the spool per write call.
_SPOOL_BLOCK = 10_000


def _spool(spool: IO[str], block: list[str]) -> None:
    if block:
        spool.write("\n".join(block))
        spool.write("\n")
        block.clear()


def _chunks(spool: IO[str], size: int) -> Iterator[list[str]]:
    while chunk := [line[:-1] for line in islice(spool, size)]:
        yield chunk


def enqueue_lines(
    producer: Producer,
    zone: str,
    environment: str | None,
    kind: Kind,
    mode: Mode,
    lines: Iterable[str],
    progress: ProgressCallback | None = None,
) -> Receipt:
    """Validate all lines, then enqueue them in chunks. See the module docstring."""
    problems = []
    try:
        zone = check_zone(zone)
    except ValueError as exc:
        problems.append(f"zone: {exc}")
    try:
        environment = check_environment(environment)
    except ValueError as exc:
        problems.append(f"environment: {exc}")
    if kind is Kind.EVERYTHING:
        problems.append("kind: purge everything takes no file of items")
    if problems:
        raise RequestError(problems)
    # The environment first: a misspelt one is refused before a million lines are read.
    target, warnings = producer.resolve(zone, environment)
    chunk = producer.runtime.settings.enqueue_chunk
    with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
        total = validate_lines(kind, lines, spool, progress)
        spool.seek(0)

        def on_chunk(done: int, accepted: int) -> None:
            if progress is not None:
                progress(Progress("enqueueing", done, total, accepted))

        return producer.enqueue_chunks(zone, target, kind, mode, _chunks(spool, chunk), on_chunk,
                                       warnings)
