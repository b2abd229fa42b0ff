"""Starting zonepurge's parts as local processes: a throwaway redis-server, the sandbox, a worker.

Used by ``zonepurge up`` (the README's one command to run the system) and by the test suite, so
that both start things the same way. Every start waits on a condition (a PING answered, a line
printed) with a deadline, never on a fixed sleep.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

import redis


class ServiceError(RuntimeError):
    """A local service would not start."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    """Poll ``condition`` until it holds; ServiceError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return
        except Exception:
            pass
        if time.monotonic() >= deadline:
            raise ServiceError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def _stop(process: subprocess.Popen[bytes] | subprocess.Popen[str], timeout_s: float = 10) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout_s)


class RedisServer:
    """A redis-server of our own on a free port, in a temporary directory.

    ``appendonly`` turns on AOF persistence (the setting docker-compose ships); tests of restarts
    use it so that a restarted server comes back with its data.
    """

    def __init__(self, port: int | None = None, *, appendonly: bool = False,
                 executable: str | None = None) -> None:
        self.executable = executable or shutil.which("redis-server")
        if self.executable is None:
            raise ServiceError("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)")
        self.port = port or free_port()
        self.appendonly = appendonly
        self.dir = Path(tempfile.mkdtemp(prefix="zonepurge-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 20) -> RedisServer:
        args = [
            self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.dir), "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always" if self.appendonly else "everysec",
            "--logfile", str(self.dir / "redis.log"),
        ]
        # A session of its own: a Ctrl-C at the terminal reaches whoever started it, which stops
        # it last, after the workers that use it have settled.
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        start_new_session=True)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        try:
            wait_for(lambda: self._alive() and client.ping(), timeout_s, f"redis-server on port {self.port}")
        finally:
            client.close()
        return self

    def _alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
            raise ServiceError(f"redis-server exited with {self.process.returncode}:\n{log}")
        return True

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None

    def kill(self) -> None:
        """Stop at once, as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self, timeout_s: float = 20) -> RedisServer:
        """Crash (SIGKILL) and start again on the same port and directory: what it comes back
        with is what its persistence kept."""
        self.kill()
        return self.start(timeout_s)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class LineWatcher:
    """Reads a child's output on a thread, keeps it, and lets a caller wait for a line."""

    def __init__(self, stream: IO[str], echo: IO[str] | None = None, keep: int = 2000) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._keep = keep
        self._echo = echo
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            del self.lines[: -self._keep]
            if self._echo is not None:
                self._echo.write(line)
                self._echo.flush()
            self._queue.put(line)
        self._queue.put(None)

    def wait_for_line(self, predicate: Callable[[str], bool], timeout_s: float, what: str) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServiceError(f"timed out after {timeout_s:.0f}s waiting for {what}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                tail = "\n".join(self.lines[-30:])
                raise ServiceError(f"the process ended before {what}:\n{tail}")
            if predicate(line):
                return line

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])


class ChildProcess:
    """A zonepurge command run as a child process, its output merged and watched."""

    def __init__(self, args: list[str], env: Mapping[str, str], echo: IO[str] | None = None) -> None:
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", *args], env=full_env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        self.output = LineWatcher(self.process.stdout, echo)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout_s: float = 20) -> None:
        _stop(self.process, timeout_s)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


SANDBOX_READY = "zonepurge sandbox listening on "
from zonepurge.sandbox.config import DEFAULT_TOKEN as SANDBOX_TOKEN  # noqa: E402


def start_sandbox(env: Mapping[str, str] | None = None, extra_args: list[str] | None = None,
                  echo: IO[str] | None = None, timeout_s: float = 30) -> tuple[ChildProcess, str]:
    """Start the Cloudflare API emulator on a free port; returns it and its base URL."""
    child = ChildProcess(["zonepurge.sandbox", "--port", "0", *(extra_args or [])], env or {}, echo)
    line = child.output.wait_for_line(lambda l: l.startswith(SANDBOX_READY), timeout_s, "the sandbox to listen")
    return child, line[len(SANDBOX_READY):].strip()


def start_worker(env: Mapping[str, str], concurrency: int = 4, pool: str = "threads",
                 echo: IO[str] | None = None, timeout_s: float = 60,
                 loglevel: str = "INFO") -> ChildProcess:
    """Start a real Celery worker (``zonepurge worker``) and wait until it is ready."""
    child = ChildProcess(
        ["zonepurge", "worker", "--concurrency", str(concurrency), "--pool", pool,
         "--loglevel", loglevel], env, echo
    )
    child.output.wait_for_line(lambda l: "ready." in l, timeout_s, "the Celery worker to be ready")
    return child


def start_ingest(env: Mapping[str, str], host: str = "127.0.0.1", port: int = 0,
                 echo: IO[str] | None = None, timeout_s: float = 30) -> tuple[ChildProcess, str]:
    """Start the HTTP ingest (``zonepurge serve``) and wait until it listens; returns it and its
    root URL, ``http://host:port`` (Cloudflare's API is under ``/client/v4``)."""
    from ingest.server import READY

    child = ChildProcess(["zonepurge", "serve", "--host", host, "--port", str(port)], env, echo)
    line = child.output.wait_for_line(lambda l: l.startswith(READY), timeout_s, "the ingest to listen")
    return child, line[len(READY):].strip()
