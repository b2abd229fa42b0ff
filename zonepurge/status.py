"""What `zonepurge status` reports: totals and a line per lane, from one Redis snapshot."""

from __future__ import annotations

import time
from typing import Any

from zonepurge.budget import Budget
from zonepurge.items import Kind
from zonepurge.lanes import Lane
from zonepurge.runtime import Runtime


def collect(runtime: Runtime, now_s: float | None = None) -> dict[str, Any]:
    """The status object: integer totals ``pending``, ``in_flight``, ``dead_letters``; a
    ``lanes`` list (zone, environment, kind, mode, pending, in_flight, oldest_pending_age_s);
    ``paused_zones`` (zone, reason, since) and ``budget`` per account and bucket."""
    store = runtime.store
    snap = store.snapshot()
    now = time.time() if now_s is None else now_s
    rows: dict[str, dict[str, Any]] = {}

    names: dict[str, dict[str, str]] = {}

    def name_of(lane: Lane) -> str | None:
        """The environment's name from the cached list (no API call), if known."""
        if lane.env.is_production:
            return "production"
        if lane.env.name is not None:
            return lane.env.name
        if lane.zone not in names:
            cached = store.cached_environments(lane.zone) or []
            names[lane.zone] = {e["ref"]: e["name"] for e in cached}
        return names[lane.zone].get(lane.env.ref or "")

    def row(lane: Lane) -> dict[str, Any]:
        return rows.setdefault(lane.id, {
            "zone": lane.zone, "environment": str(lane.env), "environment_name": name_of(lane),
            "kind": lane.kind.value,
            "mode": lane.mode.value, "pending": 0, "in_flight": 0, "oldest_pending_age_s": None,
        })

    for stats in snap.lanes:
        if stats.pending == 0:
            continue
        r = row(stats.lane)
        r["pending"] = stats.pending
        if stats.oldest_ms is not None:
            r["oldest_pending_age_s"] = round(max(0.0, now - stats.oldest_ms / 1000), 3)
    for lane_id, count in snap.in_flight_by_lane.items():
        row(Lane.parse(lane_id))["in_flight"] += count
    lanes = sorted(rows.values(), key=lambda r: (r["zone"], r["environment"], r["kind"], r["mode"]))
    settings = runtime.settings
    # The accounts with work, the ones configured, and (when none is) the one every zone shares.
    accounts = sorted({settings.account_of(r["zone"]) for r in lanes} | set(settings.accounts)
                      or {settings.account_of("")})
    budget = Budget(store.redis, settings)
    budgets = {
        account: {
            state.name: {"tokens": round(state.tokens, 2), "burst": state.burst,
                         "closed_for_s": round(state.blocked_for_s, 2), "throttles": state.throttles}
            for kind in (Kind.FILES, Kind.TAGS) for state in budget.state(account, kind)
        }
        for account in accounts
    }
    return {
        "pending": sum(r["pending"] for r in lanes),
        "in_flight": sum(r["in_flight"] for r in lanes),
        "dead_letters": snap.dead_letters,
        "lanes": lanes,
        "paused_zones": [{"zone": p["zone"], "reason": p["reason"], "since": p["since"]}
                         for p in store.paused_zones()],
        "budget": budgets,
    }


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _environment(row: dict[str, Any]) -> str:
    name, ref = row.get("environment_name"), row["environment"]
    return f"{name} ({ref})" if name and name != ref and name != "production" and not ref.endswith(")") else ref


def render_table(report: dict[str, Any]) -> str:
    head = (f"pending {report['pending']:,}   in flight {report['in_flight']:,}   "
            f"dead letters {report['dead_letters']:,}")
    for pause in report.get("paused_zones", []):
        head += (f"\nPAUSED zone {pause['zone']} since "
                 f"{time.strftime('%H:%M:%S', time.localtime(pause['since']))}: {pause['reason']}")
    for account, buckets in report.get("budget", {}).items():
        parts = []
        for name, b in buckets.items():
            closed = f", closed {b['closed_for_s']:.0f}s" if b["closed_for_s"] > 0 else ""
            parts.append(f"{name} {b['tokens']:,.0f}/{b['burst']:,.0f}{closed}")
        head += f"\nbudget of account {account}: " + ", ".join(parts)
    if not report["lanes"]:
        return head + "\nnothing pending or in flight"
    columns = ["ZONE", "ENVIRONMENT", "KIND", "MODE", "PENDING", "IN FLIGHT", "OLDEST"]
    table = [columns] + [
        [r["zone"], _environment(r), r["kind"], r["mode"], f"{r['pending']:,}",
         f"{r['in_flight']:,}", _age(r["oldest_pending_age_s"])]
        for r in report["lanes"]
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    numeric = {4, 5, 6}
    lines = ["  ".join(cell.rjust(w) if i in numeric else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip()
             for line in table]
    return head + "\n\n" + "\n".join(lines)
