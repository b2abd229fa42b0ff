"""The sandbox as users run it: a real uvicorn process, spoken to with httpx over real HTTP.

Readiness is the one line the server prints on stdout once it accepts connections; nothing
here sleeps to wait for it.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

TOKEN = "sandbox-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ZONE = "0123456789abcdef0123456789abcdef"
BANNER = re.compile(r"zonepurge sandbox listening on (http://127\.0\.0\.1:(\d+))/client/v4\n")
STARTUP_TIMEOUT_S = 30


@dataclass
class Server:
    process: subprocess.Popen[str]
    base_url: str
    stderr_path: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10)

    def stop(self) -> str:
        """Stop the server; returns what it printed on stdout after the banner."""
        self.process.terminate()
        try:
            rest, _ = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            rest, _ = self.process.communicate()
        return rest


def start_server(tmp_dir: Path, *args: str) -> Server:
    stderr_path = tmp_dir / "sandbox.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "zonepurge.sandbox", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=STARTUP_TIMEOUT_S)
    except queue.Empty:
        process.kill()
        raise AssertionError(f"no banner; stderr: {stderr_path.read_text()}") from None
    match = BANNER.fullmatch(line)
    if match is None:
        process.kill()
        raise AssertionError(f"unexpected first line {line!r}; stderr: {stderr_path.read_text()}")
    return Server(process, match.group(1), stderr_path)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("sandbox"))
    yield srv
    srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        assert c.post("/__sandbox/reset").status_code == 200
        yield c


def test_banner_port_serves_health(server: Server) -> None:
    port = int(server.base_url.rsplit(":", 1)[1])
    assert port > 0
    assert httpx.get(f"{server.base_url}/__sandbox/health").status_code == 200


def test_purge_over_http(client: httpx.Client) -> None:
    envs = client.get(f"/client/v4/zones/{ZONE}/environments", headers=AUTH).json()
    assert [e["name"] for e in envs["result"]["environments"]] == [
        "Production", "Staging", "Development"
    ]
    staging = envs["result"]["environments"][1]["ref"]
    response = client.post(
        f"/client/v4/zones/{ZONE}/environments/{staging}/invalidate_cache",
        headers=AUTH,
        json={"tags": ["product-42"]},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and re.fullmatch(r"[0-9a-f]{32}", body["result"]["id"])
    refused = client.post(
        f"/client/v4/zones/{ZONE}/environments/{staging}/purge_cache",
        headers=AUTH,
        json={"files": ["https://www.example.com/a"]},
    )
    assert refused.status_code == 400 and refused.json()["errors"][0]["code"] == 1136
    no_token = client.post(f"/client/v4/zones/{ZONE}/purge_cache", json={"tags": ["a"]})
    assert no_token.status_code == 401

    purges = client.get("/__sandbox/purges").json()
    assert [(p["environment"], p["action"], p["items"]) for p in purges] == [
        (staging, "invalidate_cache", ["product-42"])
    ]
    assert [c["status"] for c in client.get("/__sandbox/calls").json()] == [200, 200, 400, 401]


def test_dropped_connection_is_a_transport_error(client: httpx.Client) -> None:
    client.post("/__sandbox/faults", json={"drop_probability": 1.0})
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post(f"/client/v4/zones/{ZONE}/purge_cache", headers=AUTH, json={"tags": ["a"]})
    # Streaming shows the same: not even a status line arrives.
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        with client.stream("GET", f"/client/v4/zones/{ZONE}/environments", headers=AUTH):
            pass
    client.post("/__sandbox/faults", json={"drop_probability": 0.0})
    ok = client.post(f"/client/v4/zones/{ZONE}/purge_cache", headers=AUTH, json={"tags": ["a"]})
    assert ok.status_code == 200
    calls = client.get("/__sandbox/calls").json()
    assert [(c["fault"], c["status"]) for c in calls] == [
        ("drop", None), ("drop", None), (None, 200)
    ]
    assert len(client.get("/__sandbox/purges").json()) == 1


def test_server_errors_and_throttling_over_http(client: httpx.Client) -> None:
    client.post("/__sandbox/faults", json={"error_probability": 1.0})
    response = client.post(
        f"/client/v4/zones/{ZONE}/purge_cache", headers=AUTH, json={"tags": ["a"]}
    )
    assert response.status_code in (500, 502, 503)
    assert response.json()["success"] is False

    client.post("/__sandbox/faults", json={"error_probability": 0.0})
    client.post("/__sandbox/reset", json={"limits": {"flex_burst": 1, "flex_rate_per_s": 0.1}})
    first = client.post(f"/client/v4/zones/{ZONE}/purge_cache", headers=AUTH, json={"tags": ["a"]})
    assert first.status_code == 200
    second = client.post(f"/client/v4/zones/{ZONE}/purge_cache", headers=AUTH, json={"tags": ["b"]})
    assert second.status_code == 429
    # The real clock has moved a little since the first call, so 9 or 10 seconds.
    assert int(second.headers["Retry-After"]) in (9, 10)
    assert second.json()["errors"][0]["code"] == 1015


def test_tokens_stay_out_of_logs_and_stdout_holds_only_the_banner(tmp_path: Path) -> None:
    config = tmp_path / "sandbox.json"
    config.write_text(
        json.dumps(
            {
                "tokens": ["first-secret", {"token": "scoped-secret", "zones": [ZONE]}],
                "plan": "business",
                "limits": {"url_items_per_request": 30},
            }
        )
    )
    srv = start_server(tmp_path, "--config", str(config), "--plan", "free")
    try:
        with srv.client() as c:
            limits = c.get("/__sandbox/limits").json()
            assert limits["plan"] == "free"  # --plan wins over the file
            assert limits["limits"]["url_items_per_request"] == 30
            other_zone = "f" * 32
            scoped = {"Authorization": "Bearer scoped-secret"}
            for zone, status in ((ZONE, 200), (other_zone, 403)):
                response = c.post(
                    f"/client/v4/zones/{zone}/purge_cache", headers=scoped, json={"tags": ["a"]}
                )
                assert response.status_code == status
            assert c.post(
                f"/client/v4/zones/{ZONE}/purge_cache",
                headers={"Authorization": "Bearer first-secret"},
                json={"files": ["https://www.example.com/x"] * 31},
            ).status_code == 400
            wrong = {"Authorization": "Bearer wrong-secret"}
            assert c.get(f"/client/v4/zones/{ZONE}/environments", headers=wrong).status_code == 401
    finally:
        rest = srv.stop()
    assert rest == ""
    log = srv.stderr_path.read_text()
    assert f"POST /client/v4/zones/{ZONE}/purge_cache" in log  # the access log is on
    for secret in ("first-secret", "scoped-secret", "wrong-secret"):
        assert secret not in log
