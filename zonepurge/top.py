"""`zonepurge top`: a live view of the queue for the operator without Grafana.

Each frame answers the three questions of the day: is it keeping up (pending, the oldest item's
age, purge rate), is Cloudflare refusing us (429s, failed calls, paused zones, the budget), and did
things go out (purged and dead-lettered, per second and in all). Rates are the change of Redis's
running totals (`zp:stats`) between two frames, so they cover every worker.
"""

from __future__ import annotations

import time
from typing import Any

from zonepurge.runtime import Runtime
from zonepurge.status import collect, render_table

CLEAR = "\033[H\033[2J"


def rates(before: dict[str, int], after: dict[str, int], seconds: float) -> dict[str, float]:
    names = ("purged", "dead_lettered", "calls", "throttled", "failed")
    return {n: (after.get(n, 0) - before.get(n, 0)) / seconds if seconds > 0 else 0.0 for n in names}


def frame(report: dict[str, Any], per_s: dict[str, float], totals: dict[str, int], interval_s: float,
          live: bool = True) -> str:
    quits = " (Ctrl-C quits)" if live else ""
    head = (f"zonepurge top — {time.strftime('%H:%M:%S')}, rates over {interval_s:g}s{quits}\n"
            f"purged {per_s['purged']:,.0f}/s ({totals.get('purged', 0):,} in all)   "
            f"dead-lettered {per_s['dead_lettered']:,.1f}/s   calls {per_s['calls']:,.1f}/s   "
            f"429s {per_s['throttled']:,.1f}/s   failed calls {per_s['failed']:,.1f}/s\n")
    return head + render_table(report)


def run(runtime: Runtime, interval_s: float, once: bool, out: Any) -> None:
    before, started = runtime.store.totals(), time.monotonic()
    while True:
        time.sleep(interval_s)  # the refresh period of the view itself
        after, now = runtime.store.totals(), time.monotonic()
        text = frame(collect(runtime), rates(before, after, now - started), after, interval_s, live=not once)
        out.write(text + "\n" if once else CLEAR + text + "\n")
        out.flush()
        if once:
            return
        before, started = after, now
