"""Enqueueing from a file of items, one per line: a million lines in modest memory, accepted
whole or refused whole like any request.

One pass: each line is validated and reduced to its member, and the members are staged in Redis,
chunk by chunk, while the lines after them are still being read (``Producer.enqueue_staged``:
Redis stores one chunk while this process checks the next). Staged members are out of every
worker's sight. Once the last line is read and every line was good, the stage joins its lane in
one step; any bad line refuses the file (every bad line reported, up to a limit) and the stage is
dropped: nothing is enqueued. Memory stays flat, stdin works like a file, and a producer that
dies halfway leaves nothing behind (the stage expires).

Blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from producer.api import Producer, Receipt
from zonepurge.items import ItemError, Kind, Mode, member_function
from zonepurge.model import RequestError, check_environment, check_zone

# Past this many bad lines, the rest are counted but not listed.
MAX_REPORTED_PROBLEMS = 50


@dataclass(frozen=True, slots=True)
class Progress:
    phase: str
    """"reading" (lines checked and staged so far) or "enqueueing" (staged items handed to the
    lane, once the file is known to be good)."""
    done: int
    """Lines read, or items enqueued."""
    fraction: float | None
    """How far along the phase is, from 0 to 1, when that is known (the size of a file that
    is not stdin; the number of items staged)."""


ProgressCallback = Callable[[Progress], None]


def member_chunks(kind: Kind, lines: Iterable[str], size: int, progress: ProgressCallback | None = None,
                  total_chars: int | None = None, every: int = 50_000) -> Iterator[list[str]]:
    """The members of ``lines``, ``size`` at a time. After the last line, RequestError if any
    line was bad (no chunk is yielded once one was), or if there were no items at all.

    This loop runs once per line of a file of millions: it keeps to local names.
    """
    problems: list[str] = []
    bad = count = 0
    member_of = member_function(kind)
    chunk: list[str] = []
    number = read = 0
    try:
        for number, line in enumerate(lines, 1):
            read += len(line)
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
                chunk.append(member)
                if len(chunk) >= size:
                    yield chunk
                    chunk = []
            if progress is not None and count % every == 0:
                progress(Progress("reading", number, min(0.99, read / total_chars) if total_chars else None))
    except UnicodeDecodeError as exc:
        raise RequestError([f"near line {number + 1}: not UTF-8 text ({exc.reason}); "
                            "nothing was enqueued"]) from None
    if bad:
        if bad > len(problems):
            problems.append(f"… {bad - len(problems)} more bad line(s) not listed ({bad} in all)")
        raise RequestError(problems)
    if count == 0:
        raise RequestError(["the file holds no items (only blank or comment lines)"])
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
    total_chars: int | None = None,
) -> Receipt:
    """Validate and enqueue the items of ``lines``, all or none. See the module docstring.

    ``total_chars``, the file's size when known, lets progress say how far along it is.
    """
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
    size = producer.runtime.settings.enqueue_chunk
    chunks = member_chunks(kind, lines, size, progress, total_chars)

    def on_enqueued(done: int, staged: int) -> None:
        if progress is not None:
            progress(Progress("enqueueing", done, done / staged if staged else None))

    return producer.enqueue_staged(zone, target, kind, mode, chunks, on_enqueued, warnings)


def enqueue_file(
    zone: str,
    lines: Iterable[str],
    *,
    environment: str | None = None,
    kind: Kind | str = Kind.FILES,
    invalidate: bool = False,
    producer: Producer | None = None,
    progress: ProgressCallback | None = None,
) -> Receipt:
    """Enqueue the items of a file (an open file, or any iterable of lines), all or none: the
    Python side of ``zonepurge enqueue --from-file``.

        with open("changed-urls.txt", encoding="utf-8") as f:
            receipt = enqueue_file(ZONE, f, environment="Staging")

    Raises what ``producer.enqueue`` raises; RequestError names the bad lines.
    """
    from producer.api import default_producer

    return enqueue_lines(producer or default_producer(), zone, environment, Kind(kind),
                         Mode.INVALIDATE if invalidate else Mode.PURGE, lines, progress)
