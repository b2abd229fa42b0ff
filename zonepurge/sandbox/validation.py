"""Purge body validation, answering the way Cloudflare does: an HTTP status and an error code.

Error codes the sandbox sends. Codes marked *Cloudflare* are Cloudflare's own (from its docs and
API responses); the 19xx block is the **sandbox's own choice**, used where Cloudflare's code is
not known. Clients should branch on the HTTP status and treat the 19xx codes as opaque.

====== ====== =============================================================================
status code   meaning
====== ====== =============================================================================
400    1012   no purge key in the body (*Cloudflare*)
400    1014   a purge field that is not an array (*Cloudflare*)
400    1136   purge by URL in an environment that selects traffic by IP address, country,
              ASN or threat score (*Cloudflare*)
429    1015   rate limited: purge bucket, general API limit, or an injected 429
              (1015 is Cloudflare's "you are being rate limited"; its use here is a choice)
401    10000  missing or unknown API token (*Cloudflare*, "Authentication error")
403    10000  the token is not valid for this zone (*Cloudflare*)
404    7000   no route for that URI (*Cloudflare*)
400    7003   malformed zone id (*Cloudflare*, "could not route ... object identifier")
400    1901   body is not JSON, or not a JSON object
400    1902   more than one purge key, or keys other than the purge key
400    1903   empty purge array
400    1904   an item of the purge array is invalid (type or format)
400    1905   more items than the plan allows per request
400    1906   ``purge_everything`` is not ``true``
404    1907   unknown zone (only when ``auto_zones`` is off)
404    1908   unknown environment ref
400    1909   the production environment's ref used on the environment endpoint
5xx    1910   injected server error (fault)
400    1900   invalid request to an ``/__sandbox`` admin endpoint
====== ====== =============================================================================

``reject_items`` faults answer 400 with whatever code the test chose.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from zonepurge.plans import PlanLimits

# Cloudflare's codes.
NO_PURGE_KEY: Final = 1012
NOT_AN_ARRAY: Final = 1014
RATE_LIMITED: Final = 1015
URL_PURGE_IN_IP_ENVIRONMENT: Final = 1136
AUTHENTICATION_ERROR: Final = 10000
NO_ROUTE: Final = 7000
INVALID_OBJECT_ID: Final = 7003
# The sandbox's own.
BAD_ADMIN_REQUEST: Final = 1900
BAD_JSON: Final = 1901
SEVERAL_KEYS: Final = 1902
EMPTY_ARRAY: Final = 1903
INVALID_ITEM: Final = 1904
TOO_MANY_ITEMS: Final = 1905
BAD_PURGE_EVERYTHING: Final = 1906
UNKNOWN_ZONE: Final = 1907
UNKNOWN_ENVIRONMENT: Final = 1908
PRODUCTION_ON_ENVIRONMENT_ENDPOINT: Final = 1909
INJECTED_SERVER_ERROR: Final = 1910

PurgeKind = Literal["files", "tags", "hosts", "prefixes", "purge_everything"]
Bucket = Literal["urls", "flex"]

LIST_KINDS: Final = ("files", "tags", "hosts", "prefixes")
PURGE_KEYS: Final = (*LIST_KINDS, "purge_everything")

MAX_TAG_LENGTH: Final = 1024
MAX_PREFIX_SLASHES: Final = 31


class ApiError(Exception):
    """A refusal, as Cloudflare would send it: HTTP status, error code, message."""

    def __init__(
        self, status: int, code: int, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def __repr__(self) -> str:
        return f"ApiError(status={self.status}, code={self.code}, message={self.message!r})"


@dataclass(frozen=True, slots=True)
class PurgeRequest:
    """A valid purge body: its kind and its items as sent (``[]`` for purge_everything)."""

    kind: PurgeKind
    items: list[Any]

    @property
    def bucket(self) -> Bucket:
        return "urls" if self.kind == "files" else "flex"

    @property
    def cost(self) -> int:
        """Tokens the request takes: one per URL for ``files``, one per request otherwise."""
        return len(self.items) if self.kind == "files" else 1


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, BAD_JSON, "Request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, BAD_JSON, "Request body must be a JSON object")
    return body


def describe(body: Any) -> tuple[PurgeKind | None, int]:
    """Best-effort kind and item count of any body, valid or not (for the call log)."""
    if not isinstance(body, dict):
        return None, 0
    keys = [k for k in PURGE_KEYS if k in body]
    if len(keys) != 1:
        return None, 0
    kind: PurgeKind = keys[0]
    value = body[kind]
    return kind, len(value) if isinstance(value, list) else 0


def validate_purge(body: dict[str, Any], limits: PlanLimits) -> PurgeRequest:
    """Check a decoded purge body against Cloudflare's rules and the plan's per-request caps."""
    keys = [k for k in PURGE_KEYS if k in body]
    if not keys:
        raise ApiError(
            400,
            NO_PURGE_KEY,
            "Purge request needs one of: files, tags, hosts, prefixes, purge_everything",
        )
    if len(keys) > 1:
        raise ApiError(
            400, SEVERAL_KEYS, f"Only one purge key per request; got {', '.join(keys)}"
        )
    extra = sorted(set(body) - set(keys))
    if extra:
        raise ApiError(
            400, SEVERAL_KEYS, f"Unexpected key(s) beside {keys[0]}: {', '.join(extra)}"
        )
    kind: PurgeKind = keys[0]
    value = body[kind]

    if kind == "purge_everything":
        # Strictly the JSON literal true: 1 or "true" are a client bug worth surfacing.
        if value is not True:
            raise ApiError(400, BAD_PURGE_EVERYTHING, "purge_everything must be true")
        return PurgeRequest(kind, [])

    if not isinstance(value, list):
        raise ApiError(400, NOT_AN_ARRAY, f"{kind} must be an array")
    if not value:
        raise ApiError(400, EMPTY_ARRAY, f"{kind} must not be empty")
    cap, setting = (
        (limits.url_items_per_request, "url_items_per_request")
        if kind == "files"
        else (limits.flex_items_per_request, "flex_items_per_request")
    )
    if len(value) > cap:
        raise ApiError(
            400,
            TOO_MANY_ITEMS,
            f"Too many {kind} in one request: {len(value)} given, at most {cap} ({setting})",
        )
    check = _ITEM_CHECKS[kind]
    for index, item in enumerate(value):
        problem = check(item)
        if problem:
            raise ApiError(400, INVALID_ITEM, f"{kind}[{index}]: {problem}")
    return PurgeRequest(kind, list(value))


def item_text(item: Any) -> str:
    """The text of an item that ``reject_items`` rules match against (a file object's URL)."""
    if isinstance(item, dict):
        return str(item.get("url", ""))
    return str(item)


# Fields of Cloudflare's rules language that select traffic by client or edge IP, geography
# (country, ASN, ...) or threat score: an environment filtered on them cannot be purged by URL.
# ``ip.src`` also covers ``ip.src.country``, ``ip.src.asnum`` and friends.
_IP_FILTER_FIELD = re.compile(
    r"(?<![\w.])(ip\.src|ip\.geoip\.\w+|cf\.edge\.server_ip|cf\.threat_score)(?![\w])"
)


def filters_by_client_ip(expression: str) -> bool:
    """Whether an environment's expression selects traffic by IP, country, ASN or threat score."""
    return _IP_FILTER_FIELD.search(expression) is not None


def check_environment(purge: PurgeRequest, expression: str) -> None:
    """Refuse a URL purge in an environment filtered by IP and the like (Cloudflare's 1136)."""
    if purge.kind == "files" and filters_by_client_ip(expression):
        raise ApiError(
            400,
            URL_PURGE_IN_IP_ENVIRONMENT,
            "Purge by URL is not supported in an environment whose traffic filter uses IP "
            "address, country, ASN or threat score; purge by tag, host or prefix instead",
        )


# --- item checks: each returns a problem description, or None when the item is fine ---

_HOST_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*")


def _is_hostname(value: str) -> bool:
    return len(value) <= 253 and _HOSTNAME.fullmatch(value) is not None


def _has_space(value: str) -> bool:
    return any(ch.isspace() for ch in value)


def _check_url(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return "a URL must be a non-empty string"
    if _has_space(value):
        return "a URL must not contain whitespace"
    if "*" in value:
        return "wildcards are not supported in purge by URL"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an absolute http:// or https:// URL"
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return "the URL has an invalid port"
    if not _is_hostname(parts.hostname):
        return "the URL has an invalid host"
    return None


def _check_file(item: Any) -> str | None:
    if isinstance(item, dict):
        unknown = set(item) - {"url", "headers"}
        if unknown:
            return f"unexpected key(s) {', '.join(sorted(unknown))}; expected url, headers"
        if "url" not in item:
            return "a file object needs a url"
        headers = item.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            return "headers must be an object of strings"
        return _check_url(item["url"])
    return _check_url(item)


def _check_tag(item: Any) -> str | None:
    if not isinstance(item, str) or not item:
        return "a tag must be a non-empty string"
    if _has_space(item):
        return "a tag must not contain whitespace"
    if len(item) > MAX_TAG_LENGTH:
        return f"a tag is at most {MAX_TAG_LENGTH} characters"
    return None


def _check_host(item: Any) -> str | None:
    if not isinstance(item, str) or not _is_hostname(item):
        return "must be a hostname such as www.example.com"
    return None


def _check_prefix(item: Any) -> str | None:
    if not isinstance(item, str) or not item:
        return "a prefix must be a non-empty string"
    if _has_space(item):
        return "a prefix must not contain whitespace"
    if "://" in item:
        return "a prefix has no scheme (www.example.com/path, not https://...)"
    if "?" in item or "#" in item:
        return "a prefix has no query string or fragment"
    if item.count("/") > MAX_PREFIX_SLASHES:
        return f"a prefix has at most {MAX_PREFIX_SLASHES} '/'"
    if not _is_hostname(item.split("/", 1)[0]):
        return "a prefix starts with a hostname (www.example.com/path)"
    return None


_ITEM_CHECKS = {
    "files": _check_file,
    "tags": _check_tag,
    "hosts": _check_host,
    "prefixes": _check_prefix,
}
