"""The API token appears in no log line, exception, status output or dead-letter record."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import httpx
import pytest
from pydantic import SecretStr

from producer import Producer
from tests.conftest import ZONE, RecordingSender
from worker.flush import Flusher
from zonepurge.cloudflare import CloudflareClient, CloudflareError
from zonepurge.items import Mode
from zonepurge.runtime import Runtime
from zonepurge.services import start_worker, wait_for

pytestmark = pytest.mark.integration

TOKEN = "tok-3f9a1c7e5b2d4a6f8e0c1b3d5f7a9c2e"


class ExplodingTransport(httpx.BaseTransport):
    """Fails the way httpx fails, with the request (and its Authorization header) attached."""

    def __init__(self, error: type[httpx.TransportError]) -> None:
        self.error = error

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"  # it is there to leak
        raise self.error(f"failed sending {request!r} with {dict(request.headers)!r}", request=request)


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError])
def test_transport_errors_do_not_carry_the_token_out(error):
    client = CloudflareClient("https://api.example.test/client/v4", TOKEN, transport=ExplodingTransport(error))
    with pytest.raises(CloudflareError) as caught:
        client.purge(ZONE, None, Mode.PURGE, {"tags": ["a"]})
    exc = caught.value
    seen = [str(exc), repr(exc), repr(exc.args), str(exc.__context__ if not exc.__suppress_context__ else "")]
    assert all(TOKEN not in text for text in seen)
    assert exc.__cause__ is None and exc.__suppress_context__


def test_no_log_status_or_dead_letter_of_a_failing_flush_holds_the_token(settings, redis_client, sandbox, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    bad = settings.model_copy(update={"cloudflare_api_token": SecretStr(TOKEN), "max_attempts": 1})
    for n, transport in enumerate((ExplodingTransport(httpx.ConnectError), None)):  # None: a 401
        runtime = Runtime(bad, redis_client=redis_client, transport=transport, send=RecordingSender())
        Producer(runtime).enqueue({"zone": ZONE, "tags": [f"t-{time.time_ns()}"]})
        later = 3600 + n * 600  # past the debounce, and past the first failure's backoff
        Flusher(runtime, clock=lambda: time.time() + later).flush(f"{ZONE}:@production:tags:purge")
    records = json.dumps([json.loads(d.to_json()) for d in runtime.store.dead_letters()])
    assert records != "[]"  # the ConnectError one gave up after its one attempt
    from zonepurge.status import collect, render_table

    report = collect(runtime)
    assert report["paused_zones"]  # the 401 paused the zone, saying why
    texts = [caplog.text, records, json.dumps(report), render_table(report), capsys.readouterr().err,
             repr(redis_client.hgetall(f"zp:paused:{ZONE}"))]
    assert all(TOKEN not in text for text in texts)
    assert "HTTP 401" in caplog.text  # the logs did run, and say what went wrong


def test_a_worker_logging_at_debug_never_prints_the_token(service_env, sandbox):
    env = {**service_env, "CLOUDFLARE_API_TOKEN": TOKEN}
    worker = start_worker(env, concurrency=2, loglevel="DEBUG")
    try:
        subprocess.run([sys.executable, "-m", "zonepurge", "enqueue", "-z", ZONE, "--tag", "x"],
                       env=env, check=True, capture_output=True, timeout=60)
        wait_for(lambda: any("HTTP 401" in line for line in worker.output.lines), 30,
                 "the worker to log the refused call")
    finally:
        worker.stop()
    assert TOKEN not in "\n".join(worker.output.lines)
