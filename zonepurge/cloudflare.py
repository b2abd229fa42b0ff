"""A small client for the three Cloudflare endpoints zonepurge uses, and what their failures mean.

Exceptions form a tree, so that "try again, wait, or give up" is one ``isinstance`` away:

    CloudflareError
    ├── TransientError     5xx, timeouts, dropped connections: try again with backoff
    ├── ThrottledError     429: wait ``retry_after`` seconds (None when Cloudflare gave no hint)
    ├── ForbiddenError     401/403: the token is wrong or lacks a permission; not the items' fault
    └── RejectedError      another 4xx, with Cloudflare's error ``code`` and ``message``

No message, repr or attribute of these exceptions holds the API token, and none keeps the httpx
request (whose headers carry it). The client retries nothing itself: throttling and retries
belong to the queue, which sees every worker (shared/cloudflare/README.md, "The official SDK's
retry").
"""

from __future__ import annotations

import email.utils
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from zonepurge.items import Mode


class CloudflareError(Exception):
    """Any failure of a Cloudflare call."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientError(CloudflareError):
    """The call may succeed if tried again: a 5xx, a timeout, a dropped connection."""


class ThrottledError(CloudflareError):
    """429. ``retry_after`` is the wait in seconds Cloudflare asked for, if it said."""

    def __init__(self, message: str, *, retry_after: float | None) -> None:
        super().__init__(message, status=429)
        self.retry_after = retry_after


class ForbiddenError(CloudflareError):
    """401 or 403: fix the token or its permissions; the items themselves are fine."""


class RejectedError(CloudflareError):
    """A 4xx refusal of the request, with Cloudflare's first error code and message."""

    def __init__(self, message: str, *, status: int, code: int | None, errors: list[dict[str, Any]]) -> None:
        super().__init__(message, status=status)
        self.code = code
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Environment:
    name: str
    ref: str
    expression: str | None = None


_RATELIMIT_RESET = re.compile(r"(?:^|[;,\s])t=(\d+(?:\.\d+)?)")


def parse_retry_after(headers: httpx.Headers, now: float | None = None) -> float | None:
    """The wait a 429 asks for, in seconds: Retry-After (seconds or an HTTP date), else the
    reset time of a ``Ratelimit`` header (``t=``), else ``X-RateLimit-Reset``; None if absent."""
    value = headers.get("retry-after")
    if value:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - (now if now is not None else time.time()))
    ratelimit = headers.get("ratelimit")
    if ratelimit:
        match = _RATELIMIT_RESET.search(ratelimit)
        if match:
            return float(match.group(1))
    reset = headers.get("x-ratelimit-reset")
    if reset and reset.strip().isdigit():
        seconds = int(reset)
        # Either a delta or an epoch timestamp, depending on the API; tell them apart by size.
        if seconds > 10**9:
            return max(0.0, seconds - (now if now is not None else time.time()))
        return float(seconds)
    return None


def _errors_of(response: httpx.Response) -> list[dict[str, Any]]:
    try:
        body = response.json()
    except ValueError:
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _describe(errors: list[dict[str, Any]]) -> str:
    return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or "no error detail"


class CloudflareClient:
    """Calls Cloudflare (or the sandbox) with a bearer token. Thread-safe."""

    def __init__(
        self,
        base_url: str,
        token: SecretStr | str | None,
        *,
        timeout_s: float = 30,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        secret = token.get_secret_value() if isinstance(token, SecretStr) else token
        headers = {"User-Agent": "zonepurge"}
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=timeout_s,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CloudflareClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def purge_path(zone: str, env_ref: str | None, mode: Mode) -> str:
        action = "invalidate_cache" if mode is Mode.INVALIDATE else "purge_cache"
        if env_ref is None:
            return f"/zones/{quote(zone, safe='')}/{action}"
        return f"/zones/{quote(zone, safe='')}/environments/{quote(env_ref, safe='')}/{action}"

    def purge(self, zone: str, env_ref: str | None, mode: Mode, body: dict[str, Any]) -> str:
        """Send one purge request; Cloudflare's purge id on success, else a CloudflareError."""
        response = self._call("POST", self.purge_path(zone, env_ref, mode), json=body)
        result = response.json().get("result") or {}
        return str(result.get("id", ""))

    def list_environments(self, zone: str) -> list[Environment]:
        response = self._call("GET", f"/zones/{quote(zone, safe='')}/environments")
        result = response.json().get("result") or {}
        return [
            Environment(name=str(e["name"]), ref=str(e["ref"]), expression=e.get("expression"))
            for e in result.get("environments", [])
            if isinstance(e, dict) and "name" in e and "ref" in e
        ]

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        where = f"{method} {path}"
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise TransientError(f"{where}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            # `from None`: the httpx exception holds the request, and the request the token.
            raise TransientError(f"{where}: connection failed ({type(exc).__name__})") from None
        status = response.status_code
        if status == 429:
            retry_after = parse_retry_after(response.headers)
            raise ThrottledError(f"{where}: 429 throttled ({_describe(_errors_of(response))})",
                                 retry_after=retry_after)
        if status >= 500:
            raise TransientError(f"{where}: HTTP {status}", status=status)
        if status in (401, 403):
            raise ForbiddenError(
                f"{where}: HTTP {status}, the API token is invalid or lacks permission "
                f"({_describe(_errors_of(response))})",
                status=status,
            )
        if status >= 400:
            errors = _errors_of(response)
            code = errors[0].get("code") if errors else None
            raise RejectedError(
                f"{where}: HTTP {status} ({_describe(errors)})",
                status=status,
                code=code if isinstance(code, int) else None,
                errors=errors,
            )
        try:
            body = response.json()
        except ValueError:
            raise TransientError(f"{where}: HTTP {status} with a body that is not JSON", status=status) from None
        if not isinstance(body, dict) or body.get("success") is not True:
            errors = _errors_of(response)
            raise RejectedError(f"{where}: success was not true ({_describe(errors)})", status=status,
                                code=errors[0].get("code") if errors else None, errors=errors)
        return response
