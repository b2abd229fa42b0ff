"""The two usual alternatives zonepurge is measured against, as their users run them.

- **One Celery task per URL with Celery's ``rate_limit``** (the common Celery approach): each task
  posts one URL. ``rate_limit`` is per worker process (celery/celery #5732), so two workers send
  twice the rate; a 429 is retried a few times the way Celery users usually write it
  (``autoretry_for`` with backoff), then the URL is dropped.
- **Synchronous chunks of 30 URLs with no queue** (the common CMS-plugin approach, after the old
  30-URL cap): post each chunk in turn; a refused chunk is logged and skipped.

Both record what they lost, so the benchmark can say it side by side with zonepurge's zero.
"""

from __future__ import annotations

import json
import os
import sys

import httpx
from celery import Celery

# -- one task per URL -----------------------------------------------------------------------

BROKER = os.environ.get("BASELINE_BROKER_URL", "redis://localhost:6379/2")
RESULTS = os.environ.get("BASELINE_RESULTS_URL", BROKER)
API = os.environ.get("BASELINE_API", "")
TOKEN = os.environ.get("BASELINE_TOKEN", "sandbox-token")
ZONE = os.environ.get("BASELINE_ZONE", "")
RATE = os.environ.get("BASELINE_RATE_LIMIT", "8/s")

app = Celery("baseline", broker=BROKER)
app.conf.update(task_default_queue="baseline", worker_prefetch_multiplier=4, task_ignore_result=True,
                worker_hijack_root_logger=False)
_client: httpx.Client | None = None


def _http() -> httpx.Client:
    global _client
    if _client is None:
        _client = httpx.Client(base_url=API, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    return _client


class Throttled(Exception):
    pass


@app.task(name="baseline.purge_one", rate_limit=RATE, autoretry_for=(Throttled,), retry_backoff=True,
          retry_backoff_max=8, max_retries=3, bind=True)
def purge_one(self, url: str) -> None:
    response = _http().post(f"/zones/{ZONE}/purge_cache", json={"files": [url]})
    if response.status_code == 429:
        if self.request.retries >= self.max_retries:
            _record_lost(url)
        raise Throttled()


def _record_lost(url: str) -> None:
    import redis

    redis.Redis.from_url(RESULTS).rpush("baseline:lost", url)


# -- synchronous chunks ----------------------------------------------------------------------


def chunked_plugin(api: str, token: str, zone: str, urls: list[str], chunk: int = 30) -> dict[str, int]:
    """Post chunks of 30 URLs one after another; what is refused is lost."""
    lost = calls = throttled = 0
    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        for first in range(0, len(urls), chunk):
            part = urls[first:first + chunk]
            response = client.post(f"/zones/{zone}/purge_cache", json={"files": part})
            calls += 1
            if response.status_code != 200:
                throttled += response.status_code == 429
                lost += len(part)
    return {"calls": calls, "throttled": throttled, "lost": lost}


if __name__ == "__main__":  # `python bench/baselines.py chunked API TOKEN ZONE < urls`
    urls = [line.strip() for line in sys.stdin if line.strip()]
    print(json.dumps(chunked_plugin(sys.argv[2], sys.argv[3], sys.argv[4], urls)))
