"""Checks requests against the strict OpenAPI extract of Cloudflare's purge API (tests/data).

The extract is a copy of shared/cloudflare/cloudflare-purge-openapi.strict.json, kept in the
repository because a user's clone has no ../shared. invalidate_cache is not in the extract; the
API facts say it takes the same bodies as purge_cache, so it is checked as purge_cache.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import httpx
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest

SPEC = Path(__file__).parent / "data" / "cloudflare-purge-openapi.strict.json"
HOST = "https://api.cloudflare.com"
BASE_PATH = "/client/v4"  # the extract's server URL is HOST + BASE_PATH


@lru_cache(maxsize=1)
def _openapi() -> OpenAPI:
    return OpenAPI.from_dict(json.loads(SPEC.read_text()))


def validate_request(request: httpx.Request) -> None:
    """Raise if the request's path, auth or body does not fit the strict extract."""
    raw_path = request.url.raw_path.decode().split("?", 1)[0]
    assert "/zones/" in raw_path, f"not a zone endpoint: {raw_path}"
    path = BASE_PATH + "/zones/" + raw_path.split("/zones/", 1)[1]
    path = path.replace("/invalidate_cache", "/purge_cache")
    mock = MockRequest(
        HOST, request.method.lower(), path,
        headers={k: v for k, v in request.headers.items()},
        data=request.content or None,
        content_type=request.headers.get("content-type", "application/json").split(";")[0],
    )
    _openapi().validate_request(mock)
