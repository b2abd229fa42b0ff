"""A client for a running sandbox: its Cloudflare base URL and its admin endpoints.

For tests, benchmarks and anyone scripting the sandbox: reset it, inject faults, read what it
purged and every call it answered.
"""

from __future__ import annotations

from typing import Any

import httpx

from zonepurge.sandbox.config import DEFAULT_TOKEN


class SandboxClient:
    def __init__(self, base_url: str, token: str = DEFAULT_TOKEN) -> None:
        self.base_url = base_url
        root = base_url.removesuffix("/client/v4")
        self.admin = httpx.Client(base_url=f"{root}/__sandbox", timeout=30)
        self.api = httpx.Client(base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {token}"})

    def reset(self, **body: Any) -> None:
        """Empty the records, refill the buckets, clear faults; ``plan``, ``limits``,
        ``global_limit`` and ``seed`` switch them."""
        self.admin.post("/reset", json=body or None).raise_for_status()

    def faults(self, **faults: Any) -> None:
        self.admin.post("/faults", json=faults).raise_for_status()

    def purges(self) -> list[dict[str, Any]]:
        return self.admin.get("/purges").raise_for_status().json()

    def calls(self) -> list[dict[str, Any]]:
        return self.admin.get("/calls").raise_for_status().json()

    def stats(self) -> dict[str, Any]:
        """Counts of purges, items purged, calls and 429s, and the first and last purge's time:
        cheap to poll where ``purges()`` would send every item each time."""
        return self.admin.get("/stats").raise_for_status().json()

    def environments(self, zone: str) -> dict[str, str]:
        """name -> ref of a zone's environments."""
        body = self.api.get(f"/zones/{zone}/environments").raise_for_status().json()
        return {e["name"]: e["ref"] for e in body["result"]["environments"]}

    def put_zone(self, zone: str, **config: Any) -> None:
        self.admin.put(f"/zones/{zone}", json=config).raise_for_status()

    def close(self) -> None:
        self.admin.close()
        self.api.close()
