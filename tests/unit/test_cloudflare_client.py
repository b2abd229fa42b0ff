"""The Cloudflare client against httpx.MockTransport: paths, bodies, and the error tree."""

import json

import httpx
import pytest

from tests.contract import validate_request
from zonepurge.cloudflare import (
    CloudflareClient,
    ForbiddenError,
    RejectedError,
    ThrottledError,
    TransientError,
    parse_retry_after,
)
from zonepurge.items import Kind, Mode, body_for, file_member

ZONE = "023e105f4ecef8ad9ca31a8372d0c353"
TOKEN = "s3cret-token-value-0123456789"
OK = {"success": True, "errors": [], "messages": [], "result": {"id": "abc"}}


def client_with(handler):
    return CloudflareClient("https://api.example.test/client/v4", TOKEN,
                            transport=httpx.MockTransport(handler))


def recording():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=OK)

    return seen, handler


@pytest.mark.parametrize(
    "ref, mode, path",
    [
        (None, Mode.PURGE, f"/client/v4/zones/{ZONE}/purge_cache"),
        (None, Mode.INVALIDATE, f"/client/v4/zones/{ZONE}/invalidate_cache"),
        ("ref1", Mode.PURGE, f"/client/v4/zones/{ZONE}/environments/ref1/purge_cache"),
        ("a/b c", Mode.INVALIDATE, f"/client/v4/zones/{ZONE}/environments/a%2Fb%20c/invalidate_cache"),
    ],
)
def test_each_environment_and_mode_has_its_endpoint(ref, mode, path):
    seen, handler = recording()
    assert client_with(handler).purge(ZONE, ref, mode, {"tags": ["a"]}) == "abc"
    assert seen[0].method == "POST"
    assert seen[0].url.raw_path.decode() == path
    assert seen[0].headers["authorization"] == f"Bearer {TOKEN}"


BATCHES = [
    (Kind.FILES, ["https://www.example.com/a", "https://www.example.com/b?x=1"]),
    (Kind.FILES, ["https://www.example.com/a", file_member("https://www.example.com/c", {"CF-IPCountry": "US"})]),
    (Kind.TAGS, ["blog", "home"]),
    (Kind.HOSTS, ["www.example.com"]),
    (Kind.PREFIXES, ["www.example.com/news"]),
    (Kind.EVERYTHING, ["*"]),
]


@pytest.mark.parametrize("ref", [None, "f2b5e3a1c0d94e7f"])
@pytest.mark.parametrize("kind, members", BATCHES)
def test_bodies_sent_validate_against_the_strict_openapi_extract(kind, members, ref):
    seen, handler = recording()
    client = client_with(handler)
    for mode in Mode:
        client.purge(ZONE, ref, mode, body_for(kind, members))
    for request in seen:
        validate_request(request)


def test_the_contract_check_can_fail():
    seen, handler = recording()
    client_with(handler).purge(ZONE, None, Mode.PURGE, {"files": ["a"], "tags": ["b"]})
    with pytest.raises(Exception):
        validate_request(seen[0])


def respond(status, body=None, headers=None):
    return lambda request: httpx.Response(status, json=body, headers=headers)


def test_errors_form_a_tree_by_what_to_do_next():
    with pytest.raises(ThrottledError) as throttled:
        client_with(respond(429, {"success": False, "errors": [{"code": 1015, "message": "slow"}]},
                            {"Retry-After": "120"})).purge(ZONE, None, Mode.PURGE, {"tags": ["a"]})
    assert throttled.value.retry_after == 120
    for status in (500, 502, 503):
        with pytest.raises(TransientError):
            client_with(respond(status, {})).purge(ZONE, None, Mode.PURGE, {"tags": ["a"]})
    for status in (401, 403):
        with pytest.raises(ForbiddenError):
            client_with(respond(status, {"success": False, "errors": [{"code": 10000, "message": "Authentication error"}]})).purge(
                ZONE, None, Mode.PURGE, {"tags": ["a"]})
    with pytest.raises(RejectedError) as rejected:
        client_with(respond(400, {"success": False, "errors": [{"code": 1136, "message": "not here"}]})).purge(
            ZONE, "stg", Mode.PURGE, {"files": ["https://a.com/"]})
    assert rejected.value.code == 1136
    assert "1136: not here" in str(rejected.value)


def test_connection_failures_are_transient_and_carry_no_request():
    def drop(request):
        raise httpx.RemoteProtocolError("peer closed", request=request)

    with pytest.raises(TransientError) as caught:
        client_with(drop).purge(ZONE, None, Mode.PURGE, {"tags": ["a"]})
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert TOKEN not in repr(caught.value) and TOKEN not in str(caught.value)


def test_a_200_without_success_is_not_taken_for_a_purge():
    with pytest.raises(RejectedError):
        client_with(respond(200, {"success": False, "errors": [{"code": 1012, "message": "x"}]})).purge(
            ZONE, None, Mode.PURGE, {"tags": ["a"]})
    with pytest.raises(TransientError):
        client_with(lambda r: httpx.Response(200, content=b"<html>")).purge(ZONE, None, Mode.PURGE, {"tags": ["a"]})


def test_environments_are_listed():
    body = {"success": True, "errors": [], "messages": [], "result": {"environments": [
        {"name": "Production", "ref": "p1", "version": 1, "expression": "true",
         "locked_on_deployment": False, "position": {"before": "s1"}},
        {"name": "Staging", "ref": "s1", "version": 1, "expression": "ip.src in {1.2.3.4}",
         "locked_on_deployment": False, "position": {"after": "p1"}},
    ]}}
    envs = client_with(respond(200, body)).list_environments(ZONE)
    assert [(e.name, e.ref) for e in envs] == [("Production", "p1"), ("Staging", "s1")]


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "Thu, 03 Dec 2026 18:00:30 GMT"}, 30.0),
        ({"Ratelimit": '"default";r=0;t=42'}, 42.0),
        ({"X-RateLimit-Reset": "9"}, 9.0),
        ({"X-RateLimit-Reset": str(1796320800 + 15)}, 15.0),
        ({}, None),
    ],
)
def test_retry_after_is_read_from_whichever_header_is_there(headers, expected):
    now = 1796320800.0  # 2026-12-03 18:00:00 UTC
    assert parse_retry_after(httpx.Headers(headers), now=now) == pytest.approx(expected)


def test_the_token_is_not_in_the_client_repr_or_errors():
    client = client_with(respond(403, {"success": False, "errors": [{"code": 10000, "message": "no"}]}))
    with pytest.raises(ForbiddenError) as caught:
        client.purge(ZONE, None, Mode.PURGE, {"tags": ["a"]})
    assert TOKEN not in str(caught.value) and TOKEN not in repr(client.__dict__.keys())
    assert TOKEN not in json.dumps(caught.value.args)
