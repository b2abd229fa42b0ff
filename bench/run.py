"""zonepurge's benchmark: producer throughput, pipeline headroom, drains at the API's limit,
publish-to-purge latency, worker memory, and the two usual alternatives, in one run.

    scripts/bench            # the full run (several minutes): writes docs/benchmarks.md and its plot
    scripts/bench --quick    # about a minute, smaller sizes; prints the table only

Everything runs on this machine against the sandbox (zonepurge's Cloudflare API emulator), with a
redis-server of its own. Times of purges are read from the sandbox's record (its clock is
CLOCK_MONOTONIC like this process's, so the two compare).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from producer import Producer, enqueue_file  # noqa: E402
from zonepurge.plans import PLAN_LIMITS, Plan  # noqa: E402
from zonepurge.runtime import Runtime  # noqa: E402
from zonepurge.sandbox.client import SandboxClient  # noqa: E402
from zonepurge.services import SANDBOX_TOKEN, ChildProcess, RedisServer, start_sandbox, start_worker, wait_for  # noqa: E402
from zonepurge.settings import Settings  # noqa: E402

ZONE = "023e105f4ecef8ad9ca31a8372d0c353"
UNLIMITED = {"url_rate_per_s": 1e9, "url_burst": 10**9, "flex_rate_per_s": 1e9, "flex_burst": 10**9}


@dataclass
class Sizes:
    enqueue: int
    headroom: int
    """URLs drained with no API limit: the worker's rate, CPU and peak memory."""
    drain_free: int
    drain_enterprise: int
    publishes: int
    repeats: int
    """Runs of each producer measure (the median is reported)."""

    @classmethod
    def for_run(cls, quick: bool) -> Sizes:
        if quick:
            return cls(100_000, 100_000, 4_000, 12_000, 15, 1)
        return cls(1_000_000, 1_000_000, 12_000, 60_000, 60, 3)


class Bench:
    def __init__(self, sizes: Sizes) -> None:
        self.sizes = sizes
        self.redis_server = RedisServer().start()
        self.sandbox_process, base_url = start_sandbox()
        self.sandbox = SandboxClient(base_url)
        self.redis = redis.Redis(port=self.redis_server.port)
        self.env = {
            **os.environ,
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_server.port}/0",
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{self.redis_server.port}/1",
            "CLOUDFLARE_BASE_URL": base_url,
            "CLOUDFLARE_API_TOKEN": SANDBOX_TOKEN,
        }
        self.results: dict[str, object] = {}

    def close(self) -> None:
        self.sandbox_process.stop()
        self.redis_server.cleanup()

    def fresh(self, **sandbox_reset: object) -> None:
        self.redis.flushall()
        self.sandbox.reset(**sandbox_reset)

    def runtime(self, **overrides: str) -> Runtime:
        env = {**self.env, **overrides}
        fields = {k.lower().removeprefix("zonepurge_"): v for k, v in env.items()
                  if k.startswith(("ZONEPURGE_", "REDIS_URL", "CELERY_BROKER_URL", "CLOUDFLARE_"))}
        return Runtime(Settings(**fields))

    @contextmanager
    def worker(self, concurrency: int = 8, **overrides: str) -> Iterator[ChildProcess]:
        child = start_worker({**self.env, **overrides}, concurrency=concurrency)
        try:
            yield child
        finally:
            child.stop()

    def enqueue_urls(self, n: int, prefix: str, **overrides: str) -> list[str]:
        urls = [f"https://www.example.com/{prefix}/{i}" for i in range(n)]
        producer = Producer(self.runtime(**overrides))
        for first in range(0, n, 100_000):
            producer.enqueue({"zone": ZONE, "files": urls[first:first + 100_000]})
        return urls

    def wait_purged(self, n: int, timeout_s: float) -> dict:
        """Until the sandbox has purged ``n`` items; its stats (counts and first/last times)."""
        wait_for(lambda: self.sandbox.stats()["items_purged"] >= n, timeout_s, f"{n} URLs to be purged",
                 interval_s=0.2)
        return self.sandbox.stats()

    # -- a. producer throughput ---------------------------------------------------------------

    def producer_throughput(self) -> None:
        """A file of N URLs enqueued by the CLI and by the Python API (``enqueue_file``), and the
        same URLs given to ``enqueue`` in requests of 100,000 (the most one request takes).
        Each is run ``repeats`` times into an emptied Redis, and the median is kept: the first
        fill of a fresh redis-server also pays for the memory it asks of the kernel."""
        n = self.sizes.enqueue
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            for i in range(n):
                f.write(f"https://www.example.com/articles/{i}?page=1\n")
            path = f.name
        producer = Producer(self.runtime())
        urls = [f"https://www.example.com/api/{i}" for i in range(n)]

        def cli() -> None:
            subprocess.run([sys.executable, "-m", "zonepurge", "enqueue", "-z", ZONE, "--from-file", path, "-q"],
                           env=self.env, check=True)

        def file_api() -> None:
            with open(path, encoding="utf-8") as lines:
                enqueue_file(ZONE, lines, producer=producer)

        def requests() -> None:
            for first in range(0, n, 100_000):
                producer.enqueue({"zone": ZONE, "files": urls[first:first + 100_000]})

        rates: dict[str, list[float]] = {"cli_per_s": [], "file_api_per_s": [], "api_per_s": []}
        try:
            for _ in range(self.sizes.repeats):
                for name, run in (("cli_per_s", cli), ("file_api_per_s", file_api), ("api_per_s", requests)):
                    self.fresh()
                    started = time.perf_counter()
                    run()
                    rates[name].append(n / (time.perf_counter() - started))
        finally:
            os.unlink(path)
        self.results["enqueue"] = {"n": n, "runs": self.sizes.repeats,
                                   **{name: statistics.median(values) for name, values in rates.items()},
                                   "all": rates}

    # -- b. pipeline headroom, and e. worker memory ----------------------------------------

    def headroom_and_memory(self) -> None:
        """One worker process drains N URLs from a sandbox with no limit: its purge rate, the
        CPU it spent, and its peak memory, in one run."""
        n = self.sizes.headroom
        self.fresh(limits=UNLIMITED)
        unlimited = {"ZONEPURGE_URL_RATE_PER_S": "1e9", "ZONEPURGE_URL_BURST": str(10**9)}
        self.enqueue_urls(n, "headroom", **unlimited)
        with self.worker(**unlimited) as child:
            cpu_before = _tree_cpu_seconds(child.pid)
            stats = self.wait_purged(n, 1800)
            cpu = _tree_cpu_seconds(child.pid) - cpu_before
            peak_kb = _tree_peak_rss_kb(child.pid)
        took = stats["last_purge_at"] - stats["first_purge_at"]
        self.results["headroom"] = {"n": n, "per_s": n / took, "worker_cpu_s": cpu,
                                    "per_cpu_s": n / cpu if cpu else math.inf, "calls": stats["calls"]}
        self.results["memory"] = {"n": n, "peak_rss_mb": peak_kb / 1024}

    # -- c. bulk drains at the limit ---------------------------------------------------------

    def drain(self, plan: Plan, n: int) -> dict[str, float]:
        limits = PLAN_LIMITS[plan]
        self.fresh(plan=plan.value)
        self.enqueue_urls(n, f"drain-{plan.value}", ZONEPURGE_PLAN=plan.value)
        with self.worker(ZONEPURGE_PLAN=plan.value):
            self.wait_purged(n, 600)
        purges, calls = self.sandbox.purges(), self.sandbox.calls()
        took = purges[-1]["at"] - purges[0]["at"]
        floor = max(0.0, (n - limits.url_burst) / limits.url_rate_per_s)
        result = {
            "n": n, "seconds": took, "floor_s": floor,
            "calls": len(calls), "min_calls": math.ceil(n / limits.url_items_per_request),
            "throttled": sum(c["status"] == 429 for c in calls), "lost": n - len({u for p in purges for u in p["items"]}),
            "series": _rate_series(purges),
        }
        self.results[f"drain_{plan.value}"] = result
        return result

    # -- d. publish -> purge latency ---------------------------------------------------------

    def latency(self) -> None:
        self.fresh()
        producer = Producer(self.runtime())
        debounce = producer.runtime.settings.debounce_s
        latencies = []
        with self.worker():
            for i in range(self.sizes.publishes):
                url = f"https://www.example.com/publish/{i}"
                started = time.monotonic()
                producer.enqueue({"zone": ZONE, "files": [url]})
                wait_for(lambda: any(url in p["items"] for p in self.sandbox.purges()), 30, "the publish",
                         interval_s=0.005)
                at = next(p["at"] for p in self.sandbox.purges() if url in p["items"])
                latencies.append(at - started)
                time.sleep(0.05)  # idle between publishes, as a CMS would be
        latencies.sort()
        self.results["latency"] = {"n": len(latencies), "p50": statistics.median(latencies),
                                   "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
                                   "debounce": debounce}

    # -- f. the usual alternatives ----------------------------------------------------------------

    def baselines(self, n: int) -> None:
        free = PLAN_LIMITS[Plan.FREE]
        urls = [f"https://www.example.com/baseline/{i}" for i in range(n)]
        # One Celery task per URL, rate-limited per worker to the URL rate, two workers.
        self.fresh(plan="free")
        env = {**self.env, "BASELINE_BROKER_URL": self.env["CELERY_BROKER_URL"],
               "BASELINE_RESULTS_URL": self.env["REDIS_URL"], "BASELINE_API": self.sandbox.base_url,
               "BASELINE_ZONE": ZONE, "BASELINE_RATE_LIMIT": f"{int(free.url_rate_per_s)}/s",
               "PYTHONPATH": str(ROOT / "bench")}
        from celery import Celery

        sender = Celery("baseline", broker=env["BASELINE_BROKER_URL"])
        for url in urls:
            sender.send_task("baseline.purge_one", args=[url], queue="baseline")
        workers = [ChildProcess(["celery", "-A", "baselines", "worker", "-Q", "baseline", "-P", "threads",
                                 "-c", "16", "--without-gossip", "--without-mingle", "-l", "WARNING"], env)
                   for _ in range(2)]
        try:
            def settled() -> bool:
                return self.sandbox.stats()["items_purged"] + self.redis.llen("baseline:lost") >= n

            wait_for(settled, 900, "the per-URL tasks to finish", interval_s=0.5)
        finally:
            for w in workers:
                w.stop()
        purges, calls = self.sandbox.purges(), self.sandbox.calls()
        per_url = {"seconds": purges[-1]["at"] - calls[0]["at"], "calls": len(calls),
                   "throttled": sum(c["status"] == 429 for c in calls),
                   "lost": n - len({u for p in purges for u in p["items"]})}
        # Synchronous chunks of 30, no queue.
        self.fresh(plan="free")
        sys.path.insert(0, str(ROOT / "bench"))
        from baselines import chunked_plugin

        started = time.monotonic()
        outcome = chunked_plugin(self.sandbox.base_url, SANDBOX_TOKEN, ZONE, urls)
        chunked = {"seconds": time.monotonic() - started, **outcome}
        self.results["baselines"] = {"n": n, "celery_per_url": per_url, "chunked_30": chunked}


def _stolen_cpu_s() -> float:
    """CPU time the hypervisor gave to others (steal, all cores), in seconds: on a shared
    virtual machine, what makes two runs of the same code differ."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``zonepurge worker`` runs Celery's worker as its child)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def _tree_cpu_seconds(pid: int) -> float:
    total = 0
    for member in _tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _tree_peak_rss_kb(pid: int) -> int:
    """The largest peak resident set (VmHWM) of the process tree: the Celery worker's."""
    peaks = [0]
    for member in _tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        peaks += [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")]
    return max(peaks)


def _rate_series(purges: list[dict]) -> list[tuple[float, int]]:
    """URLs purged per whole second since the first purge."""
    if not purges:
        return []
    start = purges[0]["at"]
    bins: dict[int, int] = {}
    for p in purges:
        second = int(p["at"] - start)
        bins[second] = bins.get(second, 0) + len(p["items"])
    return [(s, bins.get(s, 0)) for s in range(max(bins) + 1)]


# -- report -----------------------------------------------------------------------------------


def _vs(value: float, target: float, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    if ok:
        return "met"
    gap = (target - value) / target if higher_is_better else (value - target) / target
    return f"missed by {gap:.0%}"


def table(r: dict, quick: bool) -> str:
    e, h, lat, mem, b = r["enqueue"], r["headroom"], r["latency"], r["memory"], r["baselines"]
    free, ent = r["drain_free"], r["drain_enterprise"]
    rows = [
        ("a. enqueue from a file, CLI", f"{e['n']:,} URLs, median of {e['runs']}", f"{e['cli_per_s']:,.0f} URLs/s", "≥ 200,000 URLs/s",
         _vs(e["cli_per_s"], 200_000)),
        ("a. enqueue from a file, Python API (`enqueue_file`)", f"{e['n']:,} URLs, median of {e['runs']}",
         f"{e['file_api_per_s']:,.0f} URLs/s", "≥ 200,000 URLs/s", _vs(e["file_api_per_s"], 200_000)),
        ("a. enqueue, Python API (`enqueue`, requests of 100,000)", f"{e['n']:,} URLs, median of {e['runs']}",
         f"{e['api_per_s']:,.0f} URLs/s", "", ""),
        ("b. one worker, no API limit", f"{h['n']:,} URLs", f"{h['per_s']:,.0f} URLs/s purged; "
         f"{h['per_cpu_s']:,.0f} URLs per worker CPU-second", "≥ 30,000 URLs/s", _vs(h["per_s"], 30_000)),
    ]
    for name, d in (("Free", free), ("Enterprise", ent)):
        over = d["seconds"] / d["floor_s"] - 1 if d["floor_s"] else 0.0
        rows.append((f"c. drain at {name} limits", f"{d['n']:,} URLs",
                     f"{d['seconds']:.2f} s vs {d['floor_s']:.2f} s minimum ({over:+.1%}); "
                     f"{d['calls']} calls vs {d['min_calls']}; {d['throttled']} × 429",
                     "within 2% of the minimum", "met" if over <= 0.02 else f"missed by {over - 0.02:.1%} points"))
    target = lat["debounce"] + 0.030
    rows.append(("d. publish → purge, idle", f"{lat['n']} publishes",
                 f"p50 {lat['p50'] * 1000:.0f} ms, p99 {lat['p99'] * 1000:.0f} ms",
                 f"p50 ≤ debounce + 30 ms = {target * 1000:.0f} ms", _vs(lat["p50"], target, higher_is_better=False)))
    rows.append(("e. worker peak RSS, draining", f"{mem['n']:,} URLs", f"{mem['peak_rss_mb']:.0f} MB", "< 150 MB",
                 _vs(mem["peak_rss_mb"], 150, higher_is_better=False)))
    lines = ["| measure | size | result | target | |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    zp = free
    lines += ["", f"Against the usual alternatives, same {b['n']:,} URLs at Free limits:", "",
              "| approach | drain | API calls | 429s | URLs lost |", "|---|---|---|---|---|",
              f"| zonepurge | {zp['seconds']:.1f} s | {zp['calls']:,} | {zp['throttled']:,} | {zp['lost']:,} |"]
    for label, key in (("one Celery task per URL, `rate_limit` 800/s, 2 workers", "celery_per_url"),
                       ("synchronous chunks of 30, no queue", "chunked_30")):
        x = b[key]
        ratio = f"{x['seconds'] / zp['seconds']:.2g}×" if zp["seconds"] else "-"
        lines.append(f"| {label} | {x['seconds']:.1f} s ({ratio}) | {x['calls']:,} ({x['calls'] / zp['calls']:.0f}×) "
                     f"| {x['throttled']:,} | {x['lost']:,} ({x['lost'] / b['n']:.0%}) |")
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, (key, plan) in zip(axes, (("drain_free", Plan.FREE), ("drain_enterprise", Plan.ENTERPRISE)), strict=True):
        series = r[key]["series"]
        ax.step([s for s, _ in series], [v for _, v in series], where="post", label="URLs purged per second")
        ax.axhline(PLAN_LIMITS[plan].url_rate_per_s, color="red", linestyle="--", label="the plan's URL rate")
        ax.set_title(f"{plan.value.capitalize()}: {r[key]['n']:,} URLs")
        ax.set_xlabel("seconds since the first purge")
        ax.set_ylabel("URLs per second")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, about a minute; no files written")
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON too")
    args = parser.parse_args(argv)
    sizes = Sizes.for_run(args.quick)
    bench = Bench(sizes)
    started, stolen_before = time.monotonic(), _stolen_cpu_s()
    try:
        steps = [("producer throughput", bench.producer_throughput),
                 ("pipeline headroom and worker memory", bench.headroom_and_memory),
                 ("drain at Free limits", lambda: bench.drain(Plan.FREE, sizes.drain_free)),
                 ("drain at Enterprise limits", lambda: bench.drain(Plan.ENTERPRISE, sizes.drain_enterprise)),
                 ("publish latency", bench.latency),
                 ("baselines", lambda: bench.baselines(sizes.drain_free))]
        for name, step in steps:
            print(f"bench: {name}…", file=sys.stderr, flush=True)
            step()
    finally:
        bench.close()
    took, stolen = time.monotonic() - started, _stolen_cpu_s() - stolen_before
    report = table(bench.results, args.quick)
    print(report)
    print(f"\nthe run took {took:.0f} s; the hypervisor took {stolen:.1f} s of CPU from this machine meanwhile",
          file=sys.stderr)
    if args.json:
        print(json.dumps(bench.results, default=str))
    if not args.quick:
        docs = ROOT / "docs"
        plot(bench.results, docs / "benchmark-drain.png")
        header = (f"# Benchmarks\n\nMade by `scripts/bench` on {time.strftime('%Y-%m-%d')}: "
                  f"{platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
                  f"the run took {took:.0f} s, and the hypervisor took {stolen:.1f} s of CPU from the machine "
                  "meanwhile (steal time, /proc/stat). Everything ran on this one machine against "
                  "the sandbox, zonepurge's Cloudflare API emulator.\n\n")
        (docs / "benchmarks.md").write_text(header + report + "\n\n![URLs purged per second against the plan's "
                                            "rate](benchmark-drain.png)\n" + NOTES)
    return 0


NOTES = """
## How to read it

- Figures move between runs on a shared virtual machine: seven full runs here on 2026-12-03 gave
  the CLI 151,000 to 324,000 URLs/s and one worker 53,000 to 118,000 URLs/s, while the drains
  stayed between 0.3% and 1.5% over their minimum (one run's drains met 5 and 1 × 429, the
  others none). Compare the figures of one run with each other; the header says how much CPU
  the hypervisor took from the machine during this one.
- **a** is the median of three runs, each into an emptied Redis (`scripts/bench --json` prints
  every run). The CLI's figure includes starting Python and importing zonepurge (about 0.4 s).
  A file is read once: its lines are checked while Redis stores the chunks before them in a
  stage no worker sees, and the stage joins its lane in one step at the end (docs/architecture.md).
  Redis spends about 4 µs a URL storing it twice, in the lane's pending set (the deduplication)
  and in its receipt's watch entry, so on this machine Redis's one core bounds a file at some
  250,000 URLs/s whatever the producer does. `enqueue` checks its whole request before storing
  any of it, so it pays for the checking and the storing one after the other.
- **b** drains with no API limit. Its purge rate is bounded by the sandbox, one Python process
  that validates every URL it is sent, sharing the machine's two cores with Redis and the worker;
  URLs per worker CPU-second is what one worker process can push.
- **c**'s minimum is what the plan's bucket allows: (URLs − burst) / rate, from the first purge to
  the last. zonepurge keeps its buckets 0.1 s of tokens smaller than Cloudflare's
  (`ZONEPURGE_BUDGET_MARGIN_S`, docs/budget.md), which is the gap.
- **d** includes the debounce window (`ZONEPURGE_DEBOUNCE_S`, 0.25 s): a lone publish waits that
  long for company before it is sent.
- **e** is the peak resident memory (VmHWM) of the Celery worker process during **b**'s drain.
- The baselines are in `bench/baselines.py`, written as their users write them. Celery's
  per-task overhead keeps the task-per-URL approach below the rate it is limited to, so it earns
  no 429s, but it makes a hundred times the calls and takes longer (1.2 to 2.6 times as long in
  our runs: its pace depends on how busy the machine's two cores are). The synchronous
  chunks go out as fast as the sandbox answers: the bucket's burst is purged, every call after
  it is answered 429, and those URLs are lost (what cloudflare/Cloudflare-WordPress #268 and
  putyourlightson/craft-blitz #296 describe).
"""


if __name__ == "__main__":
    sys.exit(main())
