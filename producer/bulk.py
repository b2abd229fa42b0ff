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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from producer.api import Producer, Receipt
from zonepurge.items import ItemError, Kind, Mode, member_for_line
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
    """Pass 1: write each line's member to ``spool``; RequestError if any line is bad."""
    problems: list[str] = []
    bad = count = 0
    for number, line in _numbered(lines):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            member = member_for_line(kind, text)
        except ItemError as exc:
            bad += 1
            if len(problems) < MAX_REPORTED_PROBLEMS:
                problems.append(f"line {number}: {exc}")
            continue
        if not bad:
            spool.write(member)
            spool.write("\n")
        count += 1
        if progress is not None and count % every == 0:
            progress(Progress("validating", count, None, 0))
    if bad:
        if bad > len(problems):
            problems.append(f"… {bad - len(problems)} more bad line(s) not listed ({bad} in all)")
        raise RequestError(problems)
    if count == 0:
        raise RequestError(["the file holds no items (only blank or comment lines)"])
    return count


def _numbered(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """Lines with their numbers; text that is not UTF-8 refuses the file, naming the line."""
    iterator = iter(lines)
    number = 0
    while True:
        number += 1
        try:
            line = next(iterator)
        except StopIteration:
            return
        except UnicodeDecodeError as exc:
            raise RequestError([f"near line {number}: not UTF-8 text ({exc.reason}); "
                                "nothing was enqueued"]) from None
        yield number, line.removeprefix("\ufeff") if number == 1 else line


def _chunks(spool: IO[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for line in spool:
        chunk.append(line.rstrip("\n"))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
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
