"""`zonepurge up`, the README's command that runs the system, as a user runs it."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import ZONE
from zonepurge.services import LineWatcher, wait_for

pytestmark = pytest.mark.integration


def test_up_starts_redis_sandbox_worker_and_ingest_purges_and_stops_them_all():
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "CELERY_BROKER_URL", "CLOUDFLARE_API_TOKEN", "CLOUDFLARE_BASE_URL")}
    process = subprocess.Popen([sys.executable, "-m", "zonepurge", "up", "--concurrency", "2",
                                "--ingest-port", "0"],
                               env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    output = LineWatcher(process.stdout)
    try:
        line = output.wait_for_line(lambda l: l.strip().startswith("export "), 90, "the export line")
        exported = dict(pair.split("=", 1) for pair in shlex.split(line.strip())[1:])
        assert set(exported) == {"REDIS_URL", "CLOUDFLARE_BASE_URL", "CLOUDFLARE_API_TOKEN",
                                 "INGEST", "ZONE", "TOKEN"}  # what the README's examples use
        user_env = {**env, **exported}
        result = subprocess.run([sys.executable, "-m", "zonepurge", "enqueue", "-z", ZONE,
                                 "--url", "https://www.example.com/up"], env=user_env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        ingest, token = exported["INGEST"], exported["TOKEN"]
        admin = exported["CLOUDFLARE_BASE_URL"].removesuffix("/client/v4") + "/__sandbox/purges"
        wait_for(lambda: httpx.get(admin).json() != [], 30, "the purge to reach the sandbox")
        assert httpx.get(admin).json()[0]["items"] == ["https://www.example.com/up"]
        # The ingest answers Cloudflare's purge call with the token `up` printed, and the purge
        # goes out through the same worker.
        assert ingest.endswith("/client/v4")
        answer = httpx.post(f"{ingest}/zones/{ZONE}/purge_cache", json={"tags": ["from-ingest"]},
                            headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200 and answer.json()["success"] is True, answer.text
        wait_for(lambda: any(p["items"] == ["from-ingest"] for p in httpx.get(admin).json()), 30,
                 "the ingest's purge to reach the sandbox")
        assert httpx.post(f"{ingest}/zones/{ZONE}/purge_cache", json={"tags": ["x"]}).status_code == 401
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    assert process.returncode == 0
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(exported["REDIS_URL"], socket_connect_timeout=2).ping()
    with pytest.raises(httpx.ConnectError):
        httpx.get(admin)
    with pytest.raises(httpx.ConnectError):
        httpx.get(ingest.removesuffix("/client/v4") + "/health")
    assert sum(token in line for line in output.lines) == 1  # printed once, never logged


def _up(*args: str) -> tuple[subprocess.Popen[str], LineWatcher]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "CELERY_BROKER_URL", "CLOUDFLARE_API_TOKEN", "CLOUDFLARE_BASE_URL")}
    process = subprocess.Popen([sys.executable, "-m", "zonepurge", "up", "--concurrency", "1", *args],
                               env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    return process, LineWatcher(process.stdout)


def _children(pid: int) -> dict[int, str]:
    """pid -> command line of the processes whose parent is ``pid``."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


def test_up_stops_everything_and_says_so_when_a_part_of_it_dies():
    process, output = _up("--ingest-port", "0")
    try:
        output.wait_for_line(lambda l: "zonepurge is running" in l, 90, "up to be running")
        parts = _children(process.pid)
        assert len(parts) == 4, parts  # redis-server, the sandbox, the worker, the ingest
        [sandbox] = [pid for pid, cmd in parts.items() if "zonepurge.sandbox" in cmd]
        os.kill(sandbox, signal.SIGKILL)
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1
    assert any("error: the sandbox exited" in line for line in output.lines), output.tail()
    assert [pid for pid in parts if Path(f"/proc/{pid}").exists()] == [], "a part was left running"


def test_up_with_its_ingest_port_taken_says_so_in_one_line_and_stops_what_it_started():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process, output = _up("--ingest-port", str(port))
        process.wait(120)
    assert process.returncode == 1
    text = "\n".join(output.lines)
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in text
    assert "Traceback" not in text
