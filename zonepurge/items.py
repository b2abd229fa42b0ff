"""What can be purged, and the one spelling of each item that deduplication relies on.

Every purge item is reduced to a *member*: the string stored in a pending set and sent to
Cloudflare. Two inputs that Cloudflare's cache treats as the same object reduce to the same
member, so the pending set deduplicates them:

- files: scheme and host lower-cased, the scheme's default port dropped, the fragment dropped,
  an empty path written "/", path and query kept verbatim (they are case-sensitive in the cache
  key). A URL with headers becomes a compact JSON object; header names are case-insensitive in
  HTTP, so they are spelled one way (Cloudflare's documented spelling, else lower case).
- tags: lower-cased (Cloudflare matches cache tags case-insensitively).
- hosts: lower-cased, internationalised names in their ASCII (punycode) form.
- prefixes: host lower-cased as for hosts, the path kept verbatim.

The rules on what is valid follow the API facts in shared/cloudflare/README.md ("Request bodies").
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from enum import StrEnum
from urllib.parse import urlsplit


class Kind(StrEnum):
    """What a purge request names. Kinds never share a Cloudflare request."""

    FILES = "files"
    TAGS = "tags"
    HOSTS = "hosts"
    PREFIXES = "prefixes"
    EVERYTHING = "everything"


class Mode(StrEnum):
    """Hard purge (evict) or soft purge (mark stale: Cloudflare's invalidate_cache)."""

    PURGE = "purge"
    INVALIDATE = "invalidate"


class ItemError(ValueError):
    """An item Cloudflare would refuse, with the reason in words."""


EVERYTHING_MEMBER = "*"

MAX_URL_LENGTH = 4096
MAX_TAG_LENGTH = 1024  # Cloudflare: "at most 1,024 characters"
MAX_HOST_LENGTH = 253
MAX_PREFIX_SLASHES = 31  # Cloudflare: "at most 31 /"
MAX_HEADERS = 32
MAX_HEADER_LENGTH = 1024

_DEFAULT_PORTS = {"http": 80, "https": 443}
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x20\x7f]")
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # tab and space allowed
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token
# Cloudflare's docs spell the cache-key headers this way; others are sent lower-cased.
_HEADER_SPELLING = {
    name.lower(): name for name in ("CF-IPCountry", "CF-Device-Type", "Accept-Language", "Origin")
}


def _short(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def normalize_host(host: str) -> str:
    """A hostname (or IP literal) in lower case and ASCII, or ItemError."""
    if not host:
        raise ItemError("empty host")
    if len(host) > MAX_HOST_LENGTH:
        raise ItemError(f"host longer than {MAX_HOST_LENGTH} characters")
    if host.startswith("[") and host.endswith("]"):
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            raise ItemError(f"invalid IPv6 address {_short(host)!r}") from None
    if _FORBIDDEN_CHARS.search(host):
        raise ItemError("host contains whitespace or control characters")
    lowered = host.lower()
    # "example.com." is another Host header than "example.com", and may be another cache key:
    # kept apart (purging both is safe; merging them could leave one stale).
    dot = "." if lowered.endswith(".") else ""
    core = lowered.removesuffix(".")
    if not core.isascii():
        try:
            core = core.encode("idna").decode("ascii")
        except UnicodeError:
            raise ItemError(f"host {_short(host)!r} is not a valid internationalised name") from None
    if not all(_LABEL.match(label) for label in core.split(".")):
        raise ItemError(f"host {_short(host)!r} is not a valid hostname")
    return core + dot


# A URL already in its member's spelling: scheme and host in lower case, no port, user
# information, fragment or wildcard, a path. Most URLs a CMS sends are, and checking that is
# some twenty times cheaper than taking them apart (bench/: a million-line file).
_CANONICAL_URL = re.compile(r"https?://([a-z0-9_.-]{1,%d})/[^\x00-\x20\x7f#*]*" % MAX_HOST_LENGTH)


def _canonical(url: str) -> bool:
    """True if ``url`` is its own member: what the full normalization would return unchanged
    (tests/unit/test_items.py checks the two agree)."""
    match = _CANONICAL_URL.fullmatch(url)
    if match is None or url.endswith("?"):  # a bare "?" (empty query) is dropped
        return False
    host = match.group(1)
    core = host[:-1] if host.endswith(".") else host
    # Labels of 1 to 63 characters, none starting or ending with "-" (as _LABEL says).
    return bool(core) and not core.startswith((".", "-")) and not core.endswith((".", "-")) \
        and ".." not in core and "-." not in core and ".-" not in core \
        and (len(core) <= 63 or max(map(len, core.split("."))) <= 63)


def normalize_url(url: str) -> str:
    """The URL as Cloudflare's cache key sees it, or ItemError saying what is wrong."""
    if not isinstance(url, str):
        raise ItemError("a URL must be a string")
    url = url.strip()
    if not url:
        raise ItemError("empty URL")
    if len(url) > MAX_URL_LENGTH:
        raise ItemError(f"URL longer than {MAX_URL_LENGTH} characters")
    if _canonical(url):
        return url
    return _normalize_url_parts(url)


def _normalize_url_parts(url: str) -> str:
    """normalize_url the long way: split the URL, check and respell each part."""
    if _FORBIDDEN_CHARS.search(url):
        raise ItemError(f"URL {_short(url)!r} contains whitespace or control characters")
    if "*" in url:
        raise ItemError(f"URL {_short(url)!r} contains a wildcard; Cloudflare purges exact URLs")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ItemError(f"URL {_short(url)!r} is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ItemError(f"URL {_short(url)!r} must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise ItemError(f"URL {_short(url)!r} must not contain user information")
    hostname = parts.hostname or ""
    host = normalize_host(f"[{hostname}]" if ":" in hostname else hostname)
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = parts.path or "/"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{path}{query}"


def normalize_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names spelled one way, sorted; values kept verbatim."""
    if not isinstance(headers, Mapping):
        raise ItemError("headers must be an object of names to values")
    if len(headers) > MAX_HEADERS:
        raise ItemError(f"more than {MAX_HEADERS} headers")
    result: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ItemError(f"invalid header name {_short(str(name))!r}")
        if not isinstance(value, str):
            raise ItemError(f"header {name!r} must have a string value")
        if len(value) > MAX_HEADER_LENGTH or _HEADER_VALUE_FORBIDDEN.search(value):
            raise ItemError(f"header {name!r} has an invalid value")
        spelled = _HEADER_SPELLING.get(name.lower(), name.lower())
        if spelled in result:
            raise ItemError(f"header {name!r} is given twice")
        result[spelled] = value
    return dict(sorted(result.items()))


def file_member(url: str, headers: Mapping[str, str] | None = None) -> str:
    """The member for a URL, with the headers of its cache key when it has any."""
    normalized = normalize_url(url)
    if not headers:
        return normalized
    return json.dumps(
        {"url": normalized, "headers": normalize_headers(headers)},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def file_object_member(value: Mapping[str, object]) -> str:
    """The member for a file given in the object form ``{"url": ..., "headers": {...}}``."""
    extra = set(value) - {"url", "headers"}
    if extra:
        raise ItemError(f"unexpected field(s) {sorted(extra)} in a file object (url, headers)")
    url = value.get("url")
    if not isinstance(url, str):
        raise ItemError("a file object needs a string 'url'")
    headers = value.get("headers") or {}
    if not isinstance(headers, Mapping):
        raise ItemError("headers must be an object of names to values")
    return file_member(url, headers)  # type: ignore[arg-type]


def file_line_member(line: str) -> str:
    """The member for a line of a file of URLs: a URL, or a file object in JSON (for a cache key
    with headers: ``{"url": "https://...", "headers": {"CF-IPCountry": "US"}}``)."""
    if not line.startswith("{"):
        return normalize_url(line)
    try:
        value = json.loads(line)
    except ValueError:
        raise ItemError('a line starting with "{" must be a JSON object {"url": ..., "headers": {...}}') from None
    if not isinstance(value, dict):
        raise ItemError('a line starting with "{" must be a JSON object {"url": ..., "headers": {...}}')
    return file_object_member(value)


def normalize_tag(tag: str) -> str:
    if not isinstance(tag, str):
        raise ItemError("a tag must be a string")
    if not tag:
        raise ItemError("empty tag")
    if len(tag) > MAX_TAG_LENGTH:
        raise ItemError(f"tag longer than {MAX_TAG_LENGTH} characters")
    if _FORBIDDEN_CHARS.search(tag) or any(ch.isspace() for ch in tag):
        raise ItemError(f"tag {_short(tag)!r} contains whitespace or control characters")
    return tag.lower()


def normalize_prefix(prefix: str) -> str:
    if not isinstance(prefix, str):
        raise ItemError("a prefix must be a string")
    if not prefix:
        raise ItemError("empty prefix")
    if len(prefix) > MAX_URL_LENGTH:
        raise ItemError(f"prefix longer than {MAX_URL_LENGTH} characters")
    if "://" in prefix:
        raise ItemError(f"prefix {_short(prefix)!r} must not have a scheme (write host/path)")
    if "?" in prefix or "#" in prefix:
        raise ItemError(f"prefix {_short(prefix)!r} must not have a query or fragment")
    if "*" in prefix:
        raise ItemError(f"prefix {_short(prefix)!r} contains a wildcard")
    if _FORBIDDEN_CHARS.search(prefix):
        raise ItemError(f"prefix {_short(prefix)!r} contains whitespace or control characters")
    if prefix.count("/") > MAX_PREFIX_SLASHES:
        raise ItemError(f"prefix {_short(prefix)!r} has more than {MAX_PREFIX_SLASHES} '/'")
    host, slash, path = prefix.partition("/")
    return normalize_host(host) + slash + path


def normalize_hostname_item(host: str) -> str:
    if not isinstance(host, str):
        raise ItemError("a host must be a string")
    if "/" in host or ":" in host.strip("[]"):
        raise ItemError(f"host {_short(host)!r} must be a bare hostname (no scheme, port or path)")
    return normalize_host(host.strip())


def member_function(kind: Kind) -> Callable[[str], str]:
    """What turns one item of a kind, given as text (a CLI argument, a line of a file), into
    its member; ItemError for purge-everything, which takes no items."""
    if kind is Kind.EVERYTHING:
        raise ItemError("purge everything takes no items")
    return {Kind.FILES: file_line_member, Kind.TAGS: normalize_tag,
            Kind.HOSTS: normalize_hostname_item, Kind.PREFIXES: normalize_prefix}[kind]


def member_for_line(kind: Kind, line: str) -> str:
    """The member for one item given as text (a CLI argument or a line of a file)."""
    return member_function(kind)(line)


def body_for(kind: Kind, members: list[str]) -> dict[str, object]:
    """The Cloudflare request body for a batch of members of one kind.

    A URL purge whose batch holds any URL with headers is sent in the object form for all of
    its URLs, since the API takes one form per request.
    """
    if kind is Kind.EVERYTHING:
        return {"purge_everything": True}
    if kind is Kind.FILES and any(m.startswith("{") for m in members):
        return {"files": [json.loads(m) if m.startswith("{") else {"url": m} for m in members]}
    return {kind.value: list(members)}


def display_member(member: str) -> str:
    """A member as a person would write it (the URL of a URL-with-headers member first)."""
    if member.startswith("{"):
        obj = json.loads(member)
        headers = " ".join(f"{k}={v}" for k, v in obj["headers"].items())
        return f"{obj['url']} [{headers}]"
    return member


def prefix_for_url(member: str) -> str:
    """The prefix purge that covers a URL member (its host and path, query and headers dropped).

    For environments that refuse purge by URL (Cloudflare error 1136): purging a little more is
    safe, purging nothing is not. The path is cut after the 31st '/' that prefixes allow.
    """
    url = json.loads(member)["url"] if member.startswith("{") else member
    parts = urlsplit(url)
    prefix = (parts.hostname or "") + (parts.path or "/")
    if prefix.count("/") > MAX_PREFIX_SLASHES:
        prefix = "/".join(prefix.split("/")[: MAX_PREFIX_SLASHES + 1])
    return normalize_prefix(prefix)
