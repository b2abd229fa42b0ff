"""The benchmark's report: verdicts follow the figures measured, whatever they are."""

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location("zonepurge_bench", Path(__file__).parents[2] / "bench" / "run.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench  # dataclasses look their module up there
_spec.loader.exec_module(bench)
table, _rate_series = bench.table, bench._rate_series


def results(cli_per_s: float, drain_seconds: float) -> dict:
    drain = {"n": 12_000, "seconds": drain_seconds, "floor_s": 14.0, "calls": 120, "min_calls": 120,
             "throttled": 0, "lost": 0}
    return {
        "enqueue": {"n": 1_000_000, "runs": 3, "cli_per_s": cli_per_s, "file_api_per_s": 250_000.0,
                    "api_per_s": 190_000.0},
        "headroom": {"n": 1_000_000, "per_s": 52_000.0, "per_cpu_s": 80_000.0},
        "memory": {"n": 1_000_000, "peak_rss_mb": 160.0},
        "drain_free": drain, "drain_enterprise": {**drain, "n": 60_000, "floor_s": 19.0, "seconds": 19.1},
        "latency": {"n": 60, "p50": 0.26, "p99": 0.3, "debounce": 0.25},
        "baselines": {"n": 12_000,
                      "celery_per_url": {"seconds": 28.2, "calls": 12_000, "throttled": 0, "lost": 0},
                      "chunked_30": {"seconds": 0.5, "calls": 400, "throttled": 360, "lost": 10_800}},
    }


def row(report: str, starts: str) -> str:
    return next(line for line in report.splitlines() if line.startswith(f"| {starts}"))


def test_each_verdict_follows_its_figure():
    report = table(results(cli_per_s=150_000, drain_seconds=14.1), quick=False)
    assert row(report, "a. enqueue from a file, CLI").endswith("| missed by 25% |")
    assert row(report, "c. drain at Free limits").endswith("| met |")  # 0.7% over the minimum
    assert row(report, "e. worker peak RSS").endswith("| missed by 7% |")  # 160 MB against 150
    report = table(results(cli_per_s=210_000, drain_seconds=14.5), quick=False)
    assert row(report, "a. enqueue from a file, CLI").endswith("| met |")
    assert "missed by 1.6% points" in row(report, "c. drain at Free limits")  # 3.6% over


def test_the_baselines_stand_beside_zonepurge_as_ratios():
    report = table(results(cli_per_s=210_000, drain_seconds=14.0), quick=False)
    assert "| one Celery task per URL, `rate_limit` 800/s, 2 workers | 28.2 s (2×) | 12,000 (100×) |" in report
    assert row(report, "synchronous chunks of 30").endswith("| 360 | 10,800 (90%) |")


def test_the_plot_counts_urls_per_whole_second():
    purges = [{"at": 10.0, "items": ["a"] * 3}, {"at": 10.9, "items": ["b"]}, {"at": 12.2, "items": ["c"] * 2}]
    assert _rate_series(purges) == [(0, 4), (1, 0), (2, 2)]
