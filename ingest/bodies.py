"""Cloudflare's purge body, as its clients send it, turned into zonepurge's ``PurgeRequest``.

The body is Cloudflare's (exactly one of ``files``, ``tags``, ``hosts``, ``prefixes``,
``purge_everything``); the zone, the environment and the mode come from the path. Validation is
``PurgeRequest``'s, the same as for every producer: any bad item refuses the whole request, and
each one is named.
"""

from __future__ import annotations

import json
from typing import Any

from zonepurge.items import Mode
from zonepurge.model import PurgeRequest, RequestError

PURGE_KEYS = ("files", "tags", "hosts", "prefixes", "purge_everything")


class NotAnObjectError(ValueError):
    """The body is not a JSON object."""


def purge_request(zone: str, environment: str | None, mode: Mode, raw: bytes) -> PurgeRequest:
    """The request a Cloudflare purge body makes; RequestError naming each problem, or
    NotAnObjectError."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        raise NotAnObjectError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise NotAnObjectError("the body must be a JSON object, e.g. {\"files\": [\"https://...\"]}")
    # Only Cloudflare's keys: "zone" or "environment" in a body must not override the path.
    problems = [f"{key}: unknown field (the body takes one of {', '.join(PURGE_KEYS)})"
                for key in body if key not in PURGE_KEYS]
    data: dict[str, Any] = {k: v for k, v in body.items() if k in PURGE_KEYS}
    data.update(zone=zone, environment=environment, invalidate=mode is Mode.INVALIDATE)
    try:
        request = PurgeRequest.parse(data)
    except RequestError as exc:
        raise RequestError(problems + exc.problems) from None
    if problems:
        raise RequestError(problems)
    return request


# Documentation only (the body is validated by PurgeRequest, above): Cloudflare's purge body.
PURGE_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Cloudflare's purge body: exactly one of its keys.",
    "properties": {
        "files": {
            "type": "array",
            "minItems": 1,
            "items": {"anyOf": [
                {"type": "string", "description": "a URL, http:// or https://"},
                {"type": "object", "required": ["url"], "additionalProperties": False,
                 "properties": {"url": {"type": "string"},
                                "headers": {"type": "object",
                                            "additionalProperties": {"type": "string"}}}},
            ]},
        },
        "tags": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        "hosts": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        "prefixes": {"type": "array", "minItems": 1,
                     "items": {"type": "string", "description": "host/path, no scheme"}},
        "purge_everything": {"type": "boolean", "enum": [True]},
    },
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 1,
    "example": {"files": ["https://www.example.com/news/"]},
}
