"""The ``zonepurge`` command.

Exit status: 0 done; 1 refused (bad input, unknown environment); 2 usage or configuration
error (and an unknown receipt id); 3 Redis or the broker unreachable (the message says how much
was stored). ``wait`` adds: 1 done with dead letters, 4 timed out.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from typing import Any

import click

from zonepurge.items import Kind, Mode

EXIT_REFUSED = 1
EXIT_CONFIG = 2  # click's own code for usage errors: both mean "fix how you called it"
EXIT_UNAVAILABLE = 3
EXIT_TIMED_OUT = 4

_HELP_SETTINGS = dict(help_option_names=["-h", "--help"], max_content_width=100)


class _Main(click.Group):
    """Turns a bad setting into one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from pydantic import ValidationError
        from pydantic_settings import SettingsError

        try:
            return super().invoke(ctx)
        except (ValidationError, SettingsError) as exc:
            if isinstance(exc, ValidationError) and exc.title != "Settings":
                raise
            from zonepurge.settings import describe_settings_error

            for line in describe_settings_error(exc):
                click.echo(f"configuration error: {line}", err=True)
            sys.exit(EXIT_CONFIG)


@click.group(cls=_Main, context_settings=_HELP_SETTINGS)
@click.version_option(package_name="zonepurge")
def main() -> None:
    """A purge queue for Cloudflare zones and their environments.

    Producers enqueue purges (this CLI, the Python API); Celery workers batch and deduplicate them
    per zone, environment and kind and call Cloudflare's purge endpoints within the account's
    limits. Configuration comes from the environment: see the README's table.
    """


# -- enqueue ---------------------------------------------------------------------------------


@main.command(context_settings=_HELP_SETTINGS)
@click.option("--zone", "-z", required=True, envvar="ZONEPURGE_ZONE", metavar="ZONE_ID",
              help="Cloudflare zone id (32 hex characters). Env: ZONEPURGE_ZONE.")
@click.option("--env", "-e", "environment", metavar="NAME|REF",
              help="Environment by name (any case) or ref; production when omitted.")
@click.option("--url", "urls", multiple=True, metavar="URL", help="A URL to purge (repeatable).")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="A cache tag (repeatable).")
@click.option("--host", "hosts", multiple=True, metavar="HOST", help="A hostname (repeatable).")
@click.option("--prefix", "prefixes", multiple=True, metavar="HOST/PATH", help="A prefix (repeatable).")
@click.option("--everything", is_flag=True, help="Purge everything in the environment "
              "(in production: in every environment of the zone).")
@click.option("--from-file", "from_file", type=click.File("r", encoding="utf-8-sig", lazy=False),
              metavar="PATH", help="Read items from a file, one per line ('-' for stdin).")
@click.option("--kind", type=click.Choice([k.value for k in Kind if k is not Kind.EVERYTHING]),
              default=None, help="What the lines of --from-file are [default: files].")
@click.option("--invalidate", is_flag=True,
              help="Soft purge: mark stale and revalidate instead of evicting (invalidate_cache).")
@click.option("--json", "as_json", is_flag=True, help="Print the receipt as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors and warnings.")
def enqueue(zone: str, environment: str | None, urls: tuple[str, ...], tags: tuple[str, ...],
            hosts: tuple[str, ...], prefixes: tuple[str, ...], everything: bool,
            from_file: Any, kind: str | None, invalidate: bool, as_json: bool, quiet: bool) -> None:
    """Enqueue a purge.

    \b
    Examples:
      zonepurge enqueue -z $ZONE --url https://www.example.com/news/
      zonepurge enqueue -z $ZONE --env Staging --tag blog --tag home
      zonepurge enqueue -z $ZONE --env Development --everything
      zonepurge enqueue -z $ZONE --from-file urls.txt
      find-changed-pages | zonepurge enqueue -z $ZONE --from-file -

    A request is accepted whole or refused whole: with any bad item nothing is enqueued and each
    bad item (or line) is named. A file is enqueued once every line of it was read and found
    good; until then its items wait in Redis where no worker sees them.
    """
    from producer import Producer, RequestError, UnavailableError, UnknownEnvironmentError
    from producer.bulk import Progress, enqueue_lines

    given = {"--url": urls, "--tag": tags, "--host": hosts, "--prefix": prefixes}
    named = [flag for flag, values in given.items() if values]
    if everything:
        named.append("--everything")
    if from_file is not None:
        named.append("--from-file")
    if len(named) != 1:
        raise click.UsageError(
            "give one of --url, --tag, --host, --prefix (each repeatable), --everything or "
            f"--from-file{' (got ' + ', '.join(named) + ')' if named else ''}"
        )
    if kind is not None and from_file is None:
        raise click.UsageError("--kind goes with --from-file")

    producer = Producer()
    mode = Mode.INVALIDATE if invalidate else Mode.PURGE
    progress_line = _ProgressLine(enabled=not quiet and sys.stderr.isatty())
    try:
        if from_file is not None:
            def show(p: Progress) -> None:
                share = f" ({p.fraction:.0%})" if p.fraction is not None else ""
                if p.phase == "reading":
                    progress_line.show(f"checking {p.done:,} lines{share}")
                else:
                    progress_line.show(f"enqueueing {p.done:,} items{share}")

            receipt = enqueue_lines(producer, zone, environment, Kind(kind or "files"), mode,
                                    from_file, progress=show, total_chars=_size_of(from_file))
        else:
            data: dict[str, Any] = {"zone": zone, "environment": environment,
                                    "invalidate": invalidate, "purge_everything": everything}
            for flag, field in (("--url", "files"), ("--tag", "tags"), ("--host", "hosts"),
                                ("--prefix", "prefixes")):
                if given[flag]:
                    data[field] = list(given[flag])
            receipt = producer.enqueue(data)
    except RequestError as exc:
        progress_line.clear()
        _fail(str(exc), EXIT_REFUSED, as_json, problems=exc.problems)
    except UnknownEnvironmentError as exc:
        progress_line.clear()
        _fail(f"refused, nothing was enqueued: {exc}", EXIT_REFUSED, as_json)
    except UnavailableError as exc:
        progress_line.clear()
        _fail(str(exc), EXIT_UNAVAILABLE, as_json)
    progress_line.clear()
    for warning in receipt.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(receipt.to_dict()))
    elif not quiet:
        click.echo(
            f"accepted {receipt.accepted:,} new item(s), {receipt.already_pending:,} already pending or repeated "
            f"({receipt.kind}, {receipt.mode}, zone {receipt.zone}, environment {_environment(receipt)}); "
            f"receipt {receipt.id}"
        )


def _size_of(stream: Any) -> int | None:
    """The size of a regular file (for progress), None for stdin or a pipe."""
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) and info.st_size else None


def _environment(receipt: Any) -> str:
    if receipt.environment_name and receipt.environment_name != receipt.environment:
        if receipt.environment.endswith("(unresolved)"):
            return receipt.environment
        return f"{receipt.environment_name} (ref {receipt.environment})"
    return receipt.environment


class _ProgressLine:
    """A progress line on a terminal, rewritten in place at most ten times a second."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._last = 0.0
        self._shown = False

    def show(self, text: str) -> None:
        now = time.monotonic()
        if self.enabled and now - self._last >= 0.1:
            sys.stderr.write(f"\r\033[K{text}")
            sys.stderr.flush()
            self._last = now
            self._shown = True

    def clear(self) -> None:
        if self._shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self._shown = False


def _fail(message: str, code: int, as_json: bool, problems: list[str] | None = None) -> None:
    if as_json:
        click.echo(json.dumps({"error": message, "problems": problems or [message]}))
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


# -- status ----------------------------------------------------------------------------------


@main.command(context_settings=_HELP_SETTINGS)
@click.option("--json", "as_json", is_flag=True, help="Print an object for scripts.")
def status(as_json: bool) -> None:
    """Show what is pending, in flight and dead-lettered, per zone, environment and kind.

    --json prints {"pending", "in_flight", "dead_letters", "lanes": [...], "paused_zones": [...],
    "budget": {...}}; each lane has zone, environment, kind, mode, pending, in_flight and
    oldest_pending_age_s. A zone whose token Cloudflare refuses (401/403) is listed as paused.
    """
    from zonepurge.runtime import redact_url
    from zonepurge.status import collect, render_table

    runtime = _with_runtime(as_json)
    report = collect(runtime)
    if as_json:
        click.echo(json.dumps(report))
    else:
        click.echo(f"queue in Redis at {redact_url(runtime.settings.redis_url)}\n{render_table(report)}")


# -- dead letters ----------------------------------------------------------------------------


@main.group("dead-letters", context_settings=_HELP_SETTINGS)
def dead_letters() -> None:
    """List, replay or drop the items that will not be purged, and why.

    Every item zonepurge accepted is purged, or it is here with the reason: Cloudflare refused
    it (with its error code and message), it failed transiently past ZONEPURGE_MAX_ATTEMPTS or
    ZONEPURGE_MAX_AGE_S, or its environment does not exist.
    """


def _zone_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from zonepurge.model import check_zone

    if value is None:
        return None
    try:
        return check_zone(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _dead_letter_filters(f: Any) -> Any:
    from zonepurge.store import DeadReason

    f = click.option("--zone", "-z", metavar="ZONE_ID", callback=_zone_option, help="Only this zone.")(f)
    f = click.option("--env", "-e", "environment", metavar="NAME|REF",
                     help="Only this environment (name in any case, ref, or 'production').")(f)
    f = click.option("--reason", "-r", type=click.Choice([r.value for r in DeadReason]),
                     help="Only this reason.")(f)
    f = click.option("--code", type=int, metavar="CODE", help="Only this Cloudflare error code.")(f)
    return f


def _matching(runtime: Any, zone: str | None, environment: str | None, reason: str | None,
              code: int | None) -> list[Any]:
    spellings: dict[str, set[str]] = {}  # zone -> how its dead letters may spell the environment

    def in_environment(record: Any) -> bool:
        if environment is None:
            return True
        if record.zone not in spellings:
            # A dead letter names its environment as enqueued: production, a ref, or a name
            # the producer could not resolve ("Staging (unresolved)").
            spellings[record.zone] = {environment, f"{environment} (unresolved)"}
            try:
                target, _ = runtime.directory.resolve_or_defer(record.zone, environment)
                spellings[record.zone].add(str(target))
            except LookupError:  # the zone has no such environment now
                pass
        return record.environment in spellings[record.zone] or (
            record.environment.endswith(" (unresolved)")
            and record.environment.removesuffix(" (unresolved)").casefold() == environment.casefold())

    return [
        (raw, record) for raw, record in runtime.store.iter_dead_letters()
        if (zone is None or record.zone == zone)
        and (reason is None or record.reason == reason)
        and (code is None or record.code == code)
        and in_environment(record)
    ]


def _with_runtime(as_json: bool) -> Any:
    import redis

    from zonepurge.runtime import Runtime, redact_url

    runtime = Runtime()
    try:
        runtime.store.redis.ping()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        _fail(f"cannot reach Redis at {redact_url(runtime.settings.redis_url)} ({type(exc).__name__})",
              EXIT_UNAVAILABLE, as_json)
    return runtime


@dead_letters.command("list", context_settings=_HELP_SETTINGS)
@_dead_letter_filters
@click.option("--limit", type=click.IntRange(1), default=None, help="At most this many, newest last.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of records.")
def dead_letters_list(zone: str | None, environment: str | None, reason: str | None,
                      code: int | None, limit: int | None, as_json: bool) -> None:
    """Show dead letters (each: item, zone, environment, kind, reason, code, message, attempts)."""
    from zonepurge.items import display_member

    runtime = _with_runtime(as_json)
    records = [r for _, r in _matching(runtime, zone, environment, reason, code)]
    if limit is not None:
        records = records[-limit:]
    if as_json:
        click.echo(json.dumps([json.loads(r.to_json()) for r in records]))
        return
    if not records:
        click.echo("no dead letters" + (" match" if any((zone, environment, reason, code)) else ""))
        return
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.dead_at))
        code_text = f" {r.code}" if r.code is not None else ""
        click.echo(f"{when}  {r.zone}  {r.environment}  {r.kind}/{r.mode}  {r.reason}{code_text}  "
                   f"attempts {r.attempts}\n    {display_member(r.item)}\n    {r.message}")
    click.echo(f"{len(records):,} dead letter(s)")


def _confirm_scope(all_: bool, zone: str | None, environment: str | None, reason: str | None,
                   code: int | None) -> None:
    if not all_ and not any((zone, environment, reason, code is not None)):
        raise click.UsageError("name what to act on (--zone, --env, --reason, --code) or say --all")


@dead_letters.command("replay", context_settings=_HELP_SETTINGS)
@_dead_letter_filters
@click.option("--all", "all_", is_flag=True, help="Every dead letter.")
@click.option("--json", "as_json", is_flag=True, help='Print {"replayed": N}.')
def dead_letters_replay(zone: str | None, environment: str | None, reason: str | None,
                        code: int | None, all_: bool, as_json: bool) -> None:
    """Put dead letters back in the queue (attempts reset), e.g. once a token is fixed."""
    from zonepurge.lanes import Lane

    _confirm_scope(all_, zone, environment, reason, code)
    runtime = _with_runtime(as_json)
    matching = _matching(runtime, zone, environment, reason, code)
    replayed = runtime.store.replay_dead_letters(matching)
    for lane_id in {record.lane for _, record in matching}:
        runtime.scheduler.nudge(Lane.parse(lane_id), delay_s=0)
    click.echo(json.dumps({"replayed": replayed}) if as_json else f"replayed {replayed:,} dead letter(s)")


@dead_letters.command("drop", context_settings=_HELP_SETTINGS)
@_dead_letter_filters
@click.option("--all", "all_", is_flag=True, help="Every dead letter.")
@click.option("--json", "as_json", is_flag=True, help='Print {"dropped": N}.')
def dead_letters_drop(zone: str | None, environment: str | None, reason: str | None,
                      code: int | None, all_: bool, as_json: bool) -> None:
    """Delete dead letters for good."""
    _confirm_scope(all_, zone, environment, reason, code)
    runtime = _with_runtime(as_json)
    dropped = runtime.store.drop_dead_letters([raw for raw, _ in _matching(runtime, zone, environment, reason, code)])
    click.echo(json.dumps({"dropped": dropped}) if as_json else f"dropped {dropped:,} dead letter(s)")


# -- receipts --------------------------------------------------------------------------------


def _show_receipt(report: Any, as_json: bool) -> None:
    if as_json:
        click.echo(report.model_dump_json())
        return
    env_name = report.environment_name
    where = (f"{env_name} (ref {report.environment})"
             if env_name and env_name not in (report.environment, "production")
             and not report.environment.endswith("(unresolved)") else report.environment)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(report.created_at or 0))
    took = (f", completed after {report.completed_at - report.created_at:.1f}s"
            if report.completed_at is not None and report.created_at is not None else "")
    click.echo(f"receipt {report.id}: {report.state}\n"
               f"  zone {report.zone}, environment {where}, {report.kind} ({report.mode})\n"
               f"  {report.items:,} item(s): {report.accepted:,} accepted, "
               f"{report.already_pending:,} already pending\n"
               f"  {report.purged:,} purged, {report.dead_lettered:,} dead-lettered, "
               f"{report.outstanding:,} outstanding\n"
               f"  created {when}{took}")
    if report.dead_lettered:
        click.echo(f"  see why: zonepurge dead-letters list --zone {report.zone}")


def _receipt_or_exit(runtime: Any, receipt_id: str, as_json: bool) -> Any:
    from zonepurge.receipts import read_receipt

    from zonepurge.runtime import redact_url

    report = read_receipt(runtime.store, receipt_id.strip().lower())
    if report is None:
        _fail(f"no receipt {receipt_id!r} in Redis at {redact_url(runtime.settings.redis_url)} (never "
              "made there, or older than ZONEPURGE_RECEIPT_TTL_S; is REDIS_URL the queue's?)",
              EXIT_CONFIG, as_json)
    return report


@main.command(context_settings=_HELP_SETTINGS)
@click.argument("receipt_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the receipt as an object.")
def receipt(receipt_id: str, as_json: bool) -> None:
    """Show what became of an enqueue: items accepted, already pending, purged, dead-lettered.

    The state is pending, done (every item purged) or done-with-dead-letters. Exit status 2 if
    there is no such receipt, 3 if Redis cannot be reached.
    """
    runtime = _with_runtime(as_json)
    _show_receipt(_receipt_or_exit(runtime, receipt_id, as_json), as_json)


@main.command(context_settings=_HELP_SETTINGS)
@click.argument("receipt_id", metavar="ID")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0), default=300, show_default=True,
              metavar="S", help="Give up after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the receipt as an object.")
def wait(receipt_id: str, timeout_s: float, as_json: bool) -> None:
    """Wait until every item of a receipt is purged or dead-lettered (for deploy pipelines).

    \b
    Exit status:
      0  every item was purged
      1  done, but some items were dead-lettered (zonepurge dead-letters list says why)
      2  no such receipt
      3  Redis cannot be reached
      4  timed out with items still pending
    """
    import redis

    from zonepurge.receipts import State, wait_for_receipt

    runtime = _with_runtime(as_json)
    _receipt_or_exit(runtime, receipt_id, as_json)
    try:
        report = wait_for_receipt(runtime.store, receipt_id.strip().lower(), timeout_s)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        _fail(f"lost Redis while waiting ({type(exc).__name__})", EXIT_UNAVAILABLE, as_json)
    if report is None:  # its TTL passed while we waited
        _fail(f"receipt {receipt_id!r} is gone", EXIT_CONFIG, as_json)
    _show_receipt(report, as_json)
    if report.state is State.PENDING:
        click.echo(f"timed out after {timeout_s:g}s with {report.outstanding:,} item(s) "
                   "outstanding", err=True)
        sys.exit(EXIT_TIMED_OUT)
    sys.exit(0 if report.state is State.DONE else EXIT_REFUSED)


# -- ingest ----------------------------------------------------------------------------------


@main.command(context_settings=_HELP_SETTINGS)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8788, show_default=True,
              help="0 picks a free port.")
def serve(host: str, port: int) -> None:
    """Run the HTTP ingest: Cloudflare's purge API in front of the queue.

    Point a CMS plugin or Cloudflare SDK at http://HOST:PORT/client/v4 with an ingest token
    (ZONEPURGE_INGEST_TOKENS): its purges are enqueued, and answered with a receipt id
    (GET /v1/receipts/{id}). GET /health, GET /ready; the OpenAPI document at /openapi.json.
    """
    from ingest.server import run
    from zonepurge.serving import BindError
    from zonepurge.settings import get_settings

    if not get_settings().ingest_tokens:
        click.echo('configuration error: ZONEPURGE_INGEST_TOKENS is not set: give the ingest '
                   'its tokens, e.g. [{"token": "<secret>", "zones": ["*"], "environments": '
                   '["*"]}]', err=True)
        sys.exit(EXIT_CONFIG)
    try:
        run(host, port)
    except BindError as exc:
        click.echo(f"error: {exc.strerror} (another --port, or 0 for a free one)", err=True)
        sys.exit(EXIT_CONFIG)


@main.command(context_settings=_HELP_SETTINGS)
@click.option("--interval", "-n", type=click.FloatRange(0.1, 3600), default=2.0, show_default=True,
              help="Seconds between frames (and the span of the rates).")
@click.option("--once", is_flag=True, help="Print one frame and exit (for scripts and logs).")
def top(interval: float, once: bool) -> None:
    """A live view: pending per lane, purge rate, 429s and failures, budget, paused zones."""
    from zonepurge.top import run

    runtime = _with_runtime(False)
    try:
        run(runtime, interval, once, sys.stdout)
    except KeyboardInterrupt:
        pass


# -- worker ----------------------------------------------------------------------------------


@main.command(context_settings=_HELP_SETTINGS)
@click.option("--concurrency", "-c", type=click.IntRange(1, 512), default=8, show_default=True,
              help="Flushes run at once by this worker.")
@click.option("--pool", "-P", type=click.Choice(["threads", "prefork", "solo"]), default="threads",
              show_default=True, help="Celery pool. Flushes wait on the network, so threads suit.")
@click.option("--loglevel", "-l", default="INFO", show_default=True,
              help="DEBUG, INFO, WARNING or ERROR (ZONEPURGE_LOG_FORMAT=json for JSON lines).")
def worker(concurrency: int, pool: str, loglevel: str) -> None:
    """Run a Celery worker that flushes purges to Cloudflare.

    Like `celery -A worker worker -Q <queue> -P threads -c 8`, and started again if it ever exits
    without being asked to (a Redis restart can make Celery's worker quit). Run as many as you
    like, on as many hosts as you like, against one Redis.
    """
    from worker.supervise import CHILD_ENV, supervise

    if not os.environ.get(CHILD_ENV):
        sys.exit(supervise([sys.executable, "-m", "zonepurge", "worker", "--concurrency",
                            str(concurrency), "--pool", pool, "--loglevel", loglevel]))
    made_dir = None
    if pool == "prefork" and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Prefork children count into files here; the main process serves their sum.
        import tempfile

        made_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="zonepurge-metrics-")
    from worker import app
    from zonepurge.settings import get_settings

    queue = get_settings().queue
    try:
        app.worker_main(["worker", "-Q", queue, "-P", pool, "-c", str(concurrency), "-l", loglevel,
                         "--without-gossip", "--without-mingle"])
    finally:
        if made_dir is not None:
            import shutil

            shutil.rmtree(made_dir, ignore_errors=True)


# -- sandbox ---------------------------------------------------------------------------------


@main.command(context_settings=_HELP_SETTINGS)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8787, show_default=True,
              help="0 picks a free port.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="A JSON file of sandbox settings (tokens, plan, zones, faults).")
@click.option("--plan", type=click.Choice(["free", "pro", "business", "enterprise"]),
              help="Enforce this plan's limits (default: the config's, else enterprise).")
def sandbox(host: str, port: int, config_path: str | None, plan: str | None) -> None:
    """Run the Cloudflare API emulator, to try zonepurge without touching Cloudflare.

    Point zonepurge at it with CLOUDFLARE_BASE_URL=http://HOST:PORT/client/v4 and
    CLOUDFLARE_API_TOKEN=sandbox-token. GET /__sandbox/purges lists what it purged.
    """
    from zonepurge.sandbox.__main__ import main as sandbox_main

    args = ["--host", host, "--port", str(port)]
    if config_path:
        args += ["--config", config_path]
    if plan:
        args += ["--plan", plan]
    sandbox_main(args)


# -- up ----------------------------------------------------------------------------------------


@main.command(context_settings=_HELP_SETTINGS)
@click.option("--concurrency", "-c", type=click.IntRange(1, 512), default=8, show_default=True,
              help="Flushes the worker runs at once.")
@click.option("--ingest-host", default="127.0.0.1", show_default=True,
              help="Where the HTTP ingest listens (0.0.0.0 for every interface).")
@click.option("--ingest-port", type=click.IntRange(0, 65535), default=8788, show_default=True,
              help="The HTTP ingest's port; 0 picks a free port.")
def up(concurrency: int, ingest_host: str, ingest_port: int) -> None:
    """Run the whole system on this machine until Ctrl-C.

    Starts redis-server on a free port unless REDIS_URL is set, the sandbox unless
    CLOUDFLARE_API_TOKEN is set, a worker and the HTTP ingest; then prints the environment to use
    from another terminal. Without ZONEPURGE_INGEST_TOKENS, the ingest gets a token made now for
    every zone and environment, printed once.
    """
    import secrets

    from zonepurge.services import (
        SANDBOX_TOKEN,
        RedisServer,
        ServiceError,
        start_ingest,
        start_sandbox,
        start_worker,
    )

    env: dict[str, str] = {}
    started: list[tuple[str, Any]] = []  # (what, the part), stopped in the reverse order

    def on_sigterm(*_: object) -> None:
        # Unwind to the `finally` below, which stops the children; stopping them here, inside
        # a handler that interrupted a wait() on one of them, would deadlock on that wait.
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    # SIGINT too, explicitly: started in the background by a shell, `up` inherits it ignored,
    # and `kill -INT` would then stop nothing.
    signal.signal(signal.SIGINT, on_sigterm)
    status = 0
    try:
        if not os.environ.get("REDIS_URL"):
            redis_server = RedisServer(appendonly=True).start()
            started.append(("redis-server", redis_server))
            env["REDIS_URL"] = redis_server.url
            click.echo(f"redis-server on {redis_server.url} (AOF in {redis_server.dir}, "
                       "removed when this stops)")
        if not os.environ.get("CLOUDFLARE_API_TOKEN"):
            sandbox_process, base_url = start_sandbox(echo=None)
            started.append(("the sandbox", sandbox_process))
            env["CLOUDFLARE_BASE_URL"] = base_url
            env["CLOUDFLARE_API_TOKEN"] = SANDBOX_TOKEN
            click.echo(f"no CLOUDFLARE_API_TOKEN: purging against the sandbox at {base_url}")
        started.append(("the worker", start_worker(env, concurrency=concurrency, echo=sys.stdout)))
        ingest_env = dict(env)
        made_token = None
        if not os.environ.get("ZONEPURGE_INGEST_TOKENS"):
            # Only the ingest's environment holds it; it is printed once, below.
            made_token = secrets.token_urlsafe(32)
            ingest_env["ZONEPURGE_INGEST_TOKENS"] = json.dumps(
                [{"token": made_token, "zones": ["*"], "environments": ["*"], "name": "up"}])
        ingest_process, ingest_url = start_ingest(ingest_env, host=ingest_host, port=ingest_port,
                                                  echo=sys.stdout)
        started.append(("the ingest", ingest_process))
        # Only what `up` made is printed: the sandbox's token is no secret, the user's tokens are
        # never in `env`, and the ingest token made here exists only in this run. INGEST, TOKEN
        # and ZONE are what the README's curl examples use.
        shown = {**env, "INGEST": f"{ingest_url}/client/v4", "ZONE": "023e105f4ecef8ad9ca31a8372d0c353"}
        if made_token:
            shown["TOKEN"] = made_token
        token_line = ("  (TOKEN is an ingest token for every zone and environment, made for this run and "
                      "shown once)\n" if made_token else "  ingest tokens: ZONEPURGE_INGEST_TOKENS\n")
        click.echo("\nzonepurge is running. From another terminal:\n"
                   f"  export {' '.join(f'{k}={v}' for k, v in shown.items())}\n"
                   f"{token_line}"
                   "  zonepurge enqueue --zone $ZONE --url https://www.example.com/\n"
                   "  zonepurge status\n"
                   f"ingest (Cloudflare's purge API) at {ingest_url}/client/v4\n"
                   "Ctrl-C stops everything.\n")
        what, code = _first_to_exit(started)
        click.echo(f"error: {what} exited (status {code}); stopping everything", err=True)
        status = 1
    except ServiceError as exc:
        click.echo(f"error: {exc}", err=True)
        status = 1
    except KeyboardInterrupt:
        pass
    finally:
        for _, part in reversed(started):
            part.stop()
        for _, part in started:
            if hasattr(part, "cleanup"):
                part.cleanup()
    sys.exit(status)


def _first_to_exit(parts: list[tuple[str, Any]], every_s: float = 0.5) -> tuple[str, int]:
    """Watch the parts `up` started until one of them ends; which, and its exit status."""
    while True:
        for what, part in parts:
            code = part.process.poll() if part.process is not None else None
            if code is not None:
                return what, code
        time.sleep(every_s)  # the watch's own pace: nothing here waits for a result
