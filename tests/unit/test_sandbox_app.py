"""The sandbox app through Starlette's TestClient, with a fake clock and a fake sleep."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from pydantic import ValidationError

with warnings.catch_warnings():
    # Starlette 1.x nudges TestClient users towards httpx2; httpx is what the project uses.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

from zonepurge.plans import PLAN_LIMITS, Plan, PlanLimits
from zonepurge.sandbox import SandboxConfig, create_app
from zonepurge.sandbox.app import ConnectionDropped
from zonepurge.sandbox.config import LimitOverrides, environment_ref
from zonepurge.sandbox.validation import filters_by_client_ip

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

SPEC_PATH = Path(__file__).parent.parent / "data" / "cloudflare-purge-openapi.strict.json"
TOKEN = "sandbox-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ZONE = "0123456789abcdef0123456789abcdef"
ZONE_B = "fedcba9876543210fedcba9876543210"
ZONE_OTHER_ACCOUNT = "11111111111111111111111111111111"


class FakeClock:
    def __init__(self, now: float = 500.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


class Sandbox:
    """A TestClient plus the fakes it runs on, with short helpers for the usual calls."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.clock = FakeClock()
        self.sleep = FakeSleep()
        app = create_app(config or SandboxConfig(), self.clock, sleep=self.sleep)
        self.client = TestClient(app)

    def purge(
        self,
        body: Any,
        zone: str = ZONE,
        env: str | None = None,
        action: str = "purge_cache",
        headers: dict[str, str] | None = None,
    ) -> Any:
        path = f"/client/v4/zones/{zone}/"
        path += f"environments/{env}/{action}" if env else action
        kwargs: dict[str, Any] = {"headers": AUTH if headers is None else headers}
        if isinstance(body, bytes):
            kwargs["content"] = body
        else:
            kwargs["json"] = body
        return self.client.post(path, **kwargs)

    def environments(self, zone: str = ZONE, headers: dict[str, str] | None = None) -> Any:
        return self.client.get(
            f"/client/v4/zones/{zone}/environments", headers=AUTH if headers is None else headers
        )

    def env_ref(self, name: str, zone: str = ZONE) -> str:
        envs = self.environments(zone).json()["result"]["environments"]
        return next(e["ref"] for e in envs if e["name"] == name)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        return self.client.request(method, f"/__sandbox/{path}", json=body)

    def purges(self) -> list[dict[str, Any]]:
        return self.admin("GET", "purges").json()

    def calls(self) -> list[dict[str, Any]]:
        return self.admin("GET", "calls").json()


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox()


def error_code(response: Any) -> int:
    body = response.json()
    assert body["success"] is False
    assert body["result"] is None
    assert body["messages"] == []
    return body["errors"][0]["code"]


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    return OpenAPI.from_dict(json.loads(SPEC_PATH.read_text()))


def check_against_spec(
    openapi: OpenAPI, method: str, path: str, response: Any, body: Any = None
) -> None:
    """Validate a response against the strict OpenAPI extract (raises if it does not fit)."""
    request = MockRequest(
        "https://api.cloudflare.com",
        method,
        path,
        content_type="application/json",
        data=json.dumps(body).encode() if body is not None else None,
    )
    openapi.validate_response(
        request,
        MockResponse(
            response.content,
            status_code=response.status_code,
            headers=dict(response.headers),
            content_type="application/json",
        ),
    )


# --- auth ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {TOKEN}"},
     {"Authorization": "Bearer "}],
)
def test_missing_or_unknown_token_is_401(sandbox: Sandbox, headers: dict[str, str]) -> None:
    for response in (
        sandbox.purge({"tags": ["a"]}, headers=headers),
        sandbox.environments(headers=headers),
    ):
        assert response.status_code == 401
        assert error_code(response) == 10000
        assert response.json()["errors"][0]["message"] == "Authentication error"
        assert "wrong-token" not in response.text
    assert sandbox.purges() == []


def test_token_scoped_to_zones_gets_403_elsewhere() -> None:
    config = SandboxConfig(tokens=["open-token", {"token": "scoped", "zones": [ZONE]}])
    sb = Sandbox(config)
    scoped = {"Authorization": "Bearer scoped"}
    assert sb.purge({"tags": ["a"]}, headers=scoped).status_code == 200
    refused = sb.purge({"tags": ["a"]}, zone=ZONE_B, headers=scoped)
    assert refused.status_code == 403
    assert error_code(refused) == 10000
    assert sb.environments(ZONE_B, headers=scoped).status_code == 403
    opened = sb.purge({"tags": ["a"]}, zone=ZONE_B, headers={"Authorization": "Bearer open-token"})
    assert opened.status_code == 200


def test_tokens_never_appear_in_records_or_config_dumps(sandbox: Sandbox) -> None:
    sandbox.purge({"tags": ["a"]})
    sandbox.purge({"tags": ["a"]}, headers={"Authorization": "Bearer leaked-secret"})
    everything = json.dumps([sandbox.calls(), sandbox.purges()])
    assert TOKEN not in everything and "leaked-secret" not in everything
    config = SandboxConfig()
    assert TOKEN not in repr(config) and TOKEN not in config.model_dump_json()


# --- zones and environments ----------------------------------------------------------------


def test_environment_listing_shape(sandbox: Sandbox, openapi: OpenAPI) -> None:
    response = sandbox.environments()
    assert response.status_code == 200
    check_against_spec(openapi, "get", f"/client/v4/zones/{ZONE}/environments", response)
    body = response.json()
    assert body["success"] is True and body["errors"] == [] and body["messages"] == []
    envs = body["result"]["environments"]
    assert [e["name"] for e in envs] == ["Production", "Staging", "Development"]
    for env in envs:
        assert set(env) == {
            "name", "ref", "version", "expression", "locked_on_deployment", "position"
        }
        assert env["ref"] != env["name"]
        assert env["ref"] == environment_ref(ZONE, env["name"])
    production, staging, development = envs
    assert production["position"] == {"before": staging["ref"]}
    assert staging["position"] == {"after": production["ref"], "before": development["ref"]}
    assert development["position"] == {"after": staging["ref"]}
    assert "cf.edge.server_ip" in staging["expression"]
    # Deterministic: another sandbox gives the same refs; another zone other refs.
    assert Sandbox().environments().json() == body
    assert sandbox.env_ref("Staging", ZONE_B) != staging["ref"]


@pytest.mark.parametrize("zone", ["not-a-zone", "0123456789ABCDEF0123456789ABCDEF", "abc"])
def test_malformed_zone_id_is_400(sandbox: Sandbox, zone: str) -> None:
    for response in (sandbox.purge({"tags": ["a"]}, zone=zone), sandbox.environments(zone)):
        assert response.status_code == 400
        assert error_code(response) == 7003


def test_auto_zones_off_gives_404_for_unknown_zones() -> None:
    sb = Sandbox(SandboxConfig(auto_zones=False, zones=[{"id": ZONE, "account": "acme"}]))
    assert sb.environments().status_code == 200
    response = sb.purge({"tags": ["a"]}, zone=ZONE_B)
    assert response.status_code == 404
    assert error_code(response) == 1907


def test_unknown_environment_is_404_and_production_ref_is_400(sandbox: Sandbox) -> None:
    response = sandbox.purge({"tags": ["a"]}, env="no-such-ref")
    assert response.status_code == 404
    assert error_code(response) == 1908
    response = sandbox.purge({"tags": ["a"]}, env=sandbox.env_ref("Production"))
    assert response.status_code == 400
    assert error_code(response) == 1909
    assert sandbox.purges() == []


def test_put_zone_creates_environments_at_runtime(sandbox: Sandbox) -> None:
    response = sandbox.admin(
        "PUT",
        f"zones/{ZONE}",
        {
            "account": "acme",
            "environments": [
                {"name": "Live"},
                {
                    "name": "Preview",
                    "ref": "preview-1",
                    "expression": 'http.host eq "p.example.com"',
                },
                {"name": "Geo", "expression": 'ip.src.country eq "FR"'},
            ],
        },
    )
    assert response.status_code == 200
    envs = sandbox.environments().json()["result"]["environments"]
    assert [e["name"] for e in envs] == ["Live", "Preview", "Geo"]
    assert envs[1]["ref"] == "preview-1"
    assert envs[0]["ref"] == environment_ref(ZONE, "Live")
    # With no "Production" by name, the first of the chain is production.
    assert error_code(sandbox.purge({"tags": ["a"]}, env=envs[0]["ref"])) == 1909
    assert sandbox.purge({"files": ["https://p.example.com/a"]}, env="preview-1").status_code == 200
    geo = sandbox.purge({"files": ["https://p.example.com/a"]}, env=envs[2]["ref"])
    assert error_code(geo) == 1136
    assert sandbox.purges()[0]["account"] == "acme"
    # Replacing the zone drops the old environments.
    sandbox.admin("PUT", f"zones/{ZONE}", {"account": "acme", "environments": []})
    assert sandbox.environments().json()["result"]["environments"] == []
    assert sandbox.purge({"files": ["https://p.example.com/a"]}).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"account": 5},
        {"account": "a", "environments": [{"name": "x", "colour": "red"}]},
        {"account": "a", "environments": [{"name": "x", "ref": "r"}, {"name": "y", "ref": "r"}]},
        {"account": "a", "id": ZONE},
        ["not", "an", "object"],
    ],
)
def test_put_zone_rejects_bad_bodies(sandbox: Sandbox, body: Any) -> None:
    response = sandbox.admin("PUT", f"zones/{ZONE}", body)
    assert response.status_code == 400
    assert error_code(response) == 1900


def test_put_zone_rejects_bad_zone_id(sandbox: Sandbox) -> None:
    assert sandbox.admin("PUT", "zones/nope", {"account": "a"}).status_code == 400


# --- body rules ----------------------------------------------------------------------------

URL = "https://www.example.com/a.css"


@pytest.mark.parametrize(
    "body",
    [
        {"files": [URL, "http://www.example.com/b.js"]},
        {"files": [{"url": URL, "headers": {"CF-IPCountry": "US", "CF-Device-Type": "mobile"}}]},
        {"files": [{"url": URL}, URL]},
        {"files": ["https://www.example.com:8443/a?b=c"]},
        {"tags": ["a-cache-tag", "T" * 1024]},
        {"hosts": ["www.example.com", "images.example.com"]},
        {"prefixes": ["www.example.com/foo", "images.example.com/bar/baz", "www.example.com"]},
        {"prefixes": ["www.example.com" + "/a" * 31]},
        {"purge_everything": True},
    ],
)
def test_valid_bodies_are_accepted(
    sandbox: Sandbox, body: dict[str, Any], openapi: OpenAPI
) -> None:
    response = sandbox.purge(body)
    assert response.status_code == 200, response.text
    check_against_spec(openapi, "post", f"/client/v4/zones/{ZONE}/purge_cache", response, body)
    result = response.json()["result"]
    assert len(result["id"]) == 32 and int(result["id"], 16) >= 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, 1012),
        ({"urls": [URL]}, 1012),
        ({"files": URL}, 1014),
        ({"tags": "a"}, 1014),
        ({"hosts": {"a": 1}}, 1014),
        ({"prefixes": None}, 1014),
        ({"files": []}, 1903),
        ({"tags": []}, 1903),
        ({"files": [URL], "tags": ["a"]}, 1902),
        ({"purge_everything": True, "files": [URL]}, 1902),
        ({"tags": ["a"], "comment": "x"}, 1902),
        ({"purge_everything": False}, 1906),
        ({"purge_everything": "true"}, 1906),
        ({"purge_everything": 1}, 1906),
        ({"files": ["/relative/path"]}, 1904),
        ({"files": ["www.example.com/a"]}, 1904),
        ({"files": ["ftp://www.example.com/a"]}, 1904),
        ({"files": ["https://www.example.com/*.css"]}, 1904),
        ({"files": ["https://www.example.com/a b"]}, 1904),
        ({"files": ["https://www.example.com:99999/a"]}, 1904),
        ({"files": [""]}, 1904),
        ({"files": [42]}, 1904),
        ({"files": [{"headers": {"a": "b"}}]}, 1904),
        ({"files": [{"url": URL, "headers": {"a": 1}}]}, 1904),
        ({"files": [{"url": URL, "method": "GET"}]}, 1904),
        ({"tags": ["two words"]}, 1904),
        ({"tags": ["tab\there"]}, 1904),
        ({"tags": ["T" * 1025]}, 1904),
        ({"tags": [""]}, 1904),
        ({"tags": [7]}, 1904),
        ({"hosts": ["https://www.example.com"]}, 1904),
        ({"hosts": ["www.example.com/path"]}, 1904),
        ({"hosts": ["bad host"]}, 1904),
        ({"prefixes": ["https://www.example.com/foo"]}, 1904),
        ({"prefixes": ["www.example.com/foo?x=1"]}, 1904),
        ({"prefixes": ["www.example.com/foo#top"]}, 1904),
        ({"prefixes": ["www.example.com" + "/a" * 32]}, 1904),
        ({"prefixes": ["/foo"]}, 1904),
    ],
)
def test_invalid_bodies_are_400_with_a_code(
    sandbox: Sandbox, body: dict[str, Any], code: int, openapi: OpenAPI
) -> None:
    response = sandbox.purge(body)
    assert response.status_code == 400
    assert error_code(response) == code
    assert response.json()["errors"][0]["message"]
    check_against_spec(openapi, "post", f"/client/v4/zones/{ZONE}/purge_cache", response)
    assert sandbox.purges() == []
    assert sandbox.calls()[-1]["code"] == code


@pytest.mark.parametrize(("raw", "code"), [(b"{not json", 1901), (b"[1, 2]", 1901), (b"", 1901)])
def test_non_json_bodies(sandbox: Sandbox, raw: bytes, code: int) -> None:
    response = sandbox.purge(raw)
    assert response.status_code == 400
    assert error_code(response) == code


# --- caps per plan -------------------------------------------------------------------------


def urls(n: int) -> list[str]:
    return [f"https://www.example.com/{i}" for i in range(n)]


def test_caps_follow_the_plan(sandbox: Sandbox) -> None:
    enterprise = PLAN_LIMITS[Plan.ENTERPRISE]
    assert sandbox.purge({"files": urls(enterprise.url_items_per_request)}).status_code == 200
    response = sandbox.purge({"files": urls(enterprise.url_items_per_request + 1)})
    assert response.status_code == 400
    assert error_code(response) == 1905
    message = response.json()["errors"][0]["message"]
    assert str(enterprise.url_items_per_request) in message and "url_items_per_request" in message

    free = PLAN_LIMITS[Plan.FREE]
    assert sandbox.admin("POST", "reset", {"plan": "free"}).json()["plan"] == "free"
    assert error_code(sandbox.purge({"files": urls(free.url_items_per_request + 1)})) == 1905
    assert sandbox.purge({"files": urls(free.url_items_per_request)}).status_code == 200
    tags = [f"t{i}" for i in range(free.flex_items_per_request + 1)]
    response = sandbox.purge({"tags": tags})
    assert error_code(response) == 1905
    assert "flex_items_per_request" in response.json()["errors"][0]["message"]
    assert sandbox.purge({"tags": tags[:-1]}).status_code == 200


def test_limit_overrides_change_the_caps(sandbox: Sandbox) -> None:
    sandbox.admin("POST", "reset", {"plan": "pro", "limits": {"url_items_per_request": 30}})
    assert error_code(sandbox.purge({"files": urls(31)})) == 1905
    assert sandbox.purge({"files": urls(30)}).status_code == 200
    limits = sandbox.admin("GET", "limits").json()
    assert limits["plan"] == "pro"
    assert limits["limits"]["url_items_per_request"] == 30
    assert limits["limits"]["url_rate_per_s"] == PLAN_LIMITS[Plan.PRO].url_rate_per_s


# --- error 1136 ----------------------------------------------------------------------------


def test_url_purge_in_ip_filtered_environment_is_1136(sandbox: Sandbox) -> None:
    staging = sandbox.env_ref("Staging")
    for action in ("purge_cache", "invalidate_cache"):
        response = sandbox.purge({"files": [URL]}, env=staging, action=action)
        assert response.status_code == 400
        assert error_code(response) == 1136
    for body in (
        {"tags": ["a"]},
        {"hosts": ["www.example.com"]},
        {"prefixes": ["www.example.com/a"]},
        {"purge_everything": True},
    ):
        assert sandbox.purge(body, env=staging).status_code == 200, body
    assert sandbox.purge({"files": [URL]}, env=sandbox.env_ref("Development")).status_code == 200
    assert [p["kind"] for p in sandbox.purges()] == [
        "tags", "hosts", "prefixes", "purge_everything", "files"
    ]


@pytest.mark.parametrize(
    ("expression", "filtered"),
    [
        ('(http.host eq "dev.example.com")', False),
        ('(cf.zone.name eq "example.com")', False),
        ("true", False),
        ("ip.src in {192.0.2.0/24}", True),
        ('(cf.zone.name eq "example.com" and cf.edge.server_ip in {203.0.113.10})', True),
        ('ip.geoip.country eq "GB"', True),
        ('ip.src.country eq "GB"', True),
        ("ip.geoip.asnum eq 13335", True),
        ("ip.src.asnum eq 13335", True),
        ("cf.threat_score gt 10", True),
        ("http.request.uri.path eq \"/zip.src\"", False),
    ],
)
def test_ip_filter_detection(expression: str, filtered: bool) -> None:
    assert filters_by_client_ip(expression) is filtered


# --- buckets -------------------------------------------------------------------------------


def test_flex_bucket_throttles_with_retry_after(sandbox: Sandbox, openapi: OpenAPI) -> None:
    sandbox.admin("POST", "reset", {"plan": "free"})
    free = PLAN_LIMITS[Plan.FREE]
    for _ in range(free.flex_burst):
        assert sandbox.purge({"tags": ["a"]}).status_code == 200
    response = sandbox.purge({"hosts": ["www.example.com"]})
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "12"
    assert error_code(response) == 1015
    check_against_spec(openapi, "post", f"/client/v4/zones/{ZONE}/purge_cache", response)
    last = sandbox.calls()[-1]
    assert (last["status"], last["code"], last["retry_after"], last["bucket"]) == (
        429, 1015, 12, "flex"
    )

    sandbox.clock.advance(11.5)
    assert sandbox.purge({"purge_everything": True}).headers["Retry-After"] == "1"
    sandbox.clock.advance(0.5)
    # Exactly the advertised wait is enough: the refusals in between took nothing.
    assert sandbox.purge({"prefixes": ["www.example.com/x"]}).status_code == 200


def test_url_bucket_counts_urls_and_is_shared_with_invalidate(sandbox: Sandbox) -> None:
    sandbox.admin("POST", "reset", {"limits": {"url_rate_per_s": 2, "url_burst": 10}})
    assert sandbox.purge({"files": urls(6)}).status_code == 200
    response = sandbox.purge({"files": urls(6)}, action="invalidate_cache")
    assert response.status_code == 429
    # 4 left, 6 wanted: 2 URLs missing at 2 per second.
    assert response.headers["Retry-After"] == "1"
    assert sandbox.calls()[-1]["bucket"] == "urls"
    assert sandbox.purge({"files": urls(4)}, action="invalidate_cache").status_code == 200
    # Tags use the other bucket, still full.
    assert sandbox.purge({"tags": ["a"]}).status_code == 200
    sandbox.clock.advance(3)
    assert sandbox.purge({"files": urls(6)}).status_code == 200


def test_buckets_are_per_account(sandbox: Sandbox) -> None:
    sandbox.admin("POST", "reset", {"limits": {"flex_burst": 3, "flex_rate_per_s": 1}})
    for zone, account in ((ZONE, "acme"), (ZONE_B, "acme"), (ZONE_OTHER_ACCOUNT, "other")):
        sandbox.admin("PUT", f"zones/{zone}", {"account": account})
    for zone in (ZONE, ZONE_B, ZONE):
        assert sandbox.purge({"tags": ["a"]}, zone=zone).status_code == 200
    # Staging of a zone of the same account shares the same bucket.
    staging_b = sandbox.env_ref("Staging", ZONE_B)
    assert sandbox.purge({"tags": ["a"]}, zone=ZONE_B, env=staging_b).status_code == 429
    assert sandbox.purge({"tags": ["a"]}, zone=ZONE_B).status_code == 429
    assert sandbox.purge({"tags": ["a"]}, zone=ZONE_OTHER_ACCOUNT).status_code == 200
    assert [c["account"] for c in sandbox.calls() if c["action"] == "purge_cache"] == [
        "acme", "acme", "acme", "acme", "acme", "other"
    ]


def test_refused_calls_consume_no_tokens(sandbox: Sandbox) -> None:
    sandbox.admin("POST", "reset", {"limits": {"url_rate_per_s": 1, "url_burst": 5}})
    rule = {"match": "blocked", "code": 1234, "message": "no"}
    sandbox.admin("POST", "faults", {"reject_items": [rule]})
    staging = sandbox.env_ref("Staging")
    refusals = [
        sandbox.purge({"files": urls(5)}, headers={}),  # 401
        sandbox.purge({"files": urls(5) + ["bad url"]}),  # 400
        sandbox.purge({"files": urls(5)}, env=staging),  # 1136
        sandbox.purge({"files": urls(4) + ["https://www.example.com/blocked"]}),  # reject
    ]
    assert [r.status_code for r in refusals] == [401, 400, 400, 400]
    assert all(c["bucket"] is None for c in sandbox.calls())
    # The whole burst is still there.
    assert sandbox.purge({"files": urls(5)}).status_code == 200
    assert sandbox.purge({"files": urls(1)}).status_code == 429


def test_general_limit_blocks_every_call_of_the_token() -> None:
    config = SandboxConfig(tokens=[TOKEN, "second-token"])
    sb = Sandbox(config)
    sb.admin("POST", "reset", {"global_limit": {"requests": 3, "window_s": 300}})
    assert sb.environments().status_code == 200
    assert sb.purge({"tags": ["a"]}).status_code == 200
    assert sb.purge({"files": [URL]}).status_code == 200
    for response in (sb.purge({"tags": ["a"]}), sb.environments()):
        assert response.status_code == 429
        assert error_code(response) == 1015
    assert sb.purge({"tags": ["a"]}).headers["Retry-After"] == "300"
    assert sb.calls()[-1]["bucket"] is None
    # Another token has its own count.
    second = sb.purge({"tags": ["a"]}, headers={"Authorization": "Bearer second-token"})
    assert second.status_code == 200
    sb.clock.advance(100)
    assert sb.purge({"tags": ["a"]}).headers["Retry-After"] == "200"
    sb.clock.advance(200)
    assert sb.purge({"tags": ["a"]}).status_code == 200
    # The general limit is off by default and after a reset to the config.
    sb.admin("POST", "reset", {})
    assert sb.admin("GET", "limits").json()["global_limit"] is None


# --- faults --------------------------------------------------------------------------------


def test_injected_server_errors(sandbox: Sandbox) -> None:
    assert sandbox.admin("POST", "faults", {"error_probability": 1.0}).status_code == 200
    statuses = set()
    for _ in range(30):
        response = sandbox.purge({"tags": ["a"]})
        statuses.add(response.status_code)
        assert error_code(response) == 1910
    assert statuses == {500, 502, 503}
    assert sandbox.environments().status_code >= 500
    assert sandbox.purges() == []
    assert {c["fault"] for c in sandbox.calls()} == {"error"}
    assert all(c["bucket"] is None for c in sandbox.calls())
    sandbox.admin("POST", "faults", {"error_statuses": [503]})
    assert sandbox.purge({"tags": ["a"]}).status_code == 503


def test_injected_throttle(sandbox: Sandbox) -> None:
    sandbox.admin("POST", "faults", {"throttle_probability": 1.0, "throttle_retry_after_s": 7})
    response = sandbox.purge({"files": [URL]})
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert error_code(response) == 1015
    call = sandbox.calls()[-1]
    assert (call["fault"], call["retry_after"], call["bucket"]) == ("throttle", 7, None)
    assert sandbox.purges() == []


def test_injected_latency_uses_the_injected_sleep(sandbox: Sandbox) -> None:
    sandbox.admin("POST", "faults", {"latency_ms": 250})
    assert sandbox.purge({"tags": ["a"]}).status_code == 200
    assert sandbox.environments().status_code == 200
    assert sandbox.sleep.calls == [0.25, 0.25]
    # Admin endpoints are not slowed down.
    sandbox.purges()
    assert len(sandbox.sleep.calls) == 2


def test_dropped_connection_without_a_server_hook(sandbox: Sandbox) -> None:
    # Under TestClient there is no socket to close: the app cuts the response short by
    # raising. Over real HTTP the server closes the connection (see the integration test).
    sandbox.admin("POST", "faults", {"drop_probability": 1.0})
    with pytest.raises(ConnectionDropped):
        sandbox.purge({"tags": ["a"]})
    call = sandbox.calls()[-1]
    assert (call["fault"], call["status"], call["kind"], call["items"]) == ("drop", None, "tags", 1)
    assert sandbox.purges() == []


def test_faults_are_reproducible_with_a_seed() -> None:
    def statuses(seed: int) -> list[int]:
        sb = Sandbox(SandboxConfig(seed=seed))
        sb.admin("POST", "faults", {"error_probability": 0.3, "throttle_probability": 0.3})
        return [sb.purge({"tags": ["a"]}).status_code for _ in range(40)]

    first = statuses(7)
    assert first == statuses(7)
    assert {200, 429} <= set(first) and any(s >= 500 for s in first)


def test_reject_items(sandbox: Sandbox) -> None:
    rule = {"match": "/private/", "code": 1137, "message": "Not allowed to purge this"}
    sandbox.admin("POST", "faults", {"reject_items": [rule]})
    for body in (
        {"files": [URL, "https://www.example.com/private/a"]},
        {"files": [{"url": "https://www.example.com/private/b", "headers": {"x": "y"}}]},
        {"prefixes": ["www.example.com/private/"]},
    ):
        response = sandbox.purge(body)
        assert response.status_code == 400
        assert response.json()["errors"] == [{"code": 1137, "message": "Not allowed to purge this"}]
    assert sandbox.purge({"files": [URL]}).status_code == 200
    assert len(sandbox.purges()) == 1
    assert [c["fault"] for c in sandbox.calls()] == ["reject", "reject", "reject", None]


def test_faults_admin_partial_updates_and_errors(sandbox: Sandbox) -> None:
    defaults = sandbox.admin("GET", "faults").json()
    assert defaults["error_probability"] == 0 and defaults["reject_items"] == []
    sandbox.admin("POST", "faults", {"latency_ms": 10})
    current = sandbox.admin("POST", "faults", {"drop_probability": 0.1}).json()
    assert current["latency_ms"] == 10 and current["drop_probability"] == 0.1
    for bad in (
        {"no_such_fault": 1},
        {"error_probability": 1.5},
        {"error_probability": 0.6, "drop_probability": 0.6},
        {"error_statuses": [404]},
        {"reject_items": [{"match": "x", "code": 12, "message": "too low"}]},
    ):
        response = sandbox.admin("POST", "faults", bad)
        assert response.status_code == 400, bad
        assert error_code(response) == 1900
    assert sandbox.admin("GET", "faults").json() == current


def test_faults_from_the_config_are_active_at_start() -> None:
    sb = Sandbox(SandboxConfig(faults={"throttle_probability": 1.0}))
    assert sb.purge({"tags": ["a"]}).status_code == 429


# --- records, reset ------------------------------------------------------------------------


def test_purge_record_and_call_log(sandbox: Sandbox) -> None:
    dev = sandbox.env_ref("Development")
    ok = sandbox.purge({"files": [URL, {"url": URL, "headers": {"CF-IPCountry": "US"}}]})
    sandbox.clock.advance(1)
    sandbox.purge({"purge_everything": True}, env=dev, action="invalidate_cache")
    sandbox.purge({"tags": []})

    purges = sandbox.purges()
    assert purges == [
        {
            "id": ok.json()["result"]["id"],
            "account": "sandbox-account",
            "zone": ZONE,
            "environment": None,
            "action": "purge_cache",
            "kind": "files",
            "items": [URL, {"url": URL, "headers": {"CF-IPCountry": "US"}}],
            "at": 500.0,
        },
        {
            "id": purges[1]["id"],
            "account": "sandbox-account",
            "zone": ZONE,
            "environment": dev,
            "action": "invalidate_cache",
            "kind": "purge_everything",
            "items": [],
            "at": 501.0,
        },
    ]
    calls = sandbox.calls()
    assert [c["action"] for c in calls] == [
        "list_environments", "purge_cache", "invalidate_cache", "purge_cache"
    ]
    assert calls[1] == {
        "at": 500.0,
        "method": "POST",
        "path": f"/client/v4/zones/{ZONE}/purge_cache",
        "zone": ZONE,
        "environment": None,
        "action": "purge_cache",
        "kind": "files",
        "items": 2,
        "status": 200,
        "code": None,
        "retry_after": None,
        "bucket": "urls",
        "account": "sandbox-account",
        "fault": None,
    }
    assert (calls[2]["environment"], calls[2]["bucket"], calls[2]["items"]) == (dev, "flex", 0)
    assert (calls[3]["status"], calls[3]["code"], calls[3]["kind"], calls[3]["bucket"]) == (
        400, 1903, "tags", None
    )


def test_reset_clears_and_switches_plan(sandbox: Sandbox) -> None:
    sandbox.admin("POST", "faults", {"latency_ms": 5})
    sandbox.admin("PUT", f"zones/{ZONE_B}", {"account": "kept"})
    sandbox.admin("POST", "reset", {"limits": {"flex_burst": 1}})
    assert sandbox.purge({"tags": ["a"]}).status_code == 200
    assert sandbox.purge({"tags": ["a"]}).status_code == 429

    response = sandbox.admin("POST", "reset", {"plan": "business"})
    assert response.status_code == 200
    business = PLAN_LIMITS[Plan.BUSINESS]
    assert response.json()["limits"]["flex_burst"] == business.flex_burst
    assert sandbox.purges() == [] and sandbox.calls() == []
    assert sandbox.admin("GET", "faults").json()["latency_ms"] == 0
    # Buckets are full again, with the new plan's size.
    for _ in range(business.flex_burst):
        assert sandbox.purge({"tags": ["a"]}).status_code == 200
    assert sandbox.purge({"tags": ["a"]}).status_code == 429
    # Zones go back to the config's: ZONE_B is an automatic zone again.
    assert sandbox.purge({"files": ["https://a.example.com/"]}, zone=ZONE_B).status_code == 200
    assert sandbox.purges()[-1]["account"] != "kept"

    # An empty reset goes back to the config's plan.
    assert sandbox.client.post("/__sandbox/reset").json()["plan"] == "enterprise"
    for bad in ({"plan": "platinum"}, {"limits": {"flex_burst": 0}}, {"colour": 1}):
        assert sandbox.admin("POST", "reset", bad).status_code == 400


def test_admin_health_and_unknown_routes(sandbox: Sandbox) -> None:
    assert sandbox.admin("GET", "health").status_code == 200
    response = sandbox.client.get("/client/v4/nowhere")
    assert response.status_code == 404
    assert error_code(response) == 7000
    assert sandbox.client.get(f"/client/v4/zones/{ZONE}/purge_cache").status_code == 405


# --- config --------------------------------------------------------------------------------


def test_config_defaults_are_usable() -> None:
    config = SandboxConfig()
    assert [t.token.get_secret_value() for t in config.tokens] == [TOKEN]
    assert config.plan is Plan.ENTERPRISE
    assert config.global_limit is None and config.zones == [] and config.auto_zones
    assert config.effective_limits() == PLAN_LIMITS[Plan.ENTERPRISE]


def test_limit_overrides_cover_every_plan_limit() -> None:
    assert set(LimitOverrides.model_fields) == set(PlanLimits.__dataclass_fields__)


def test_config_from_file(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.json"
    path.write_text(
        json.dumps(
            {
                "tokens": ["a", {"token": "b", "zones": [ZONE]}],
                "plan": "pro",
                "limits": {"url_items_per_request": 30},
                "global_limit": {"requests": 10, "window_s": 60},
                "zones": [
                    {"id": ZONE, "account": "acme", "environments": [{"name": "Production"}]}
                ],
                "auto_zones": False,
                "seed": 3,
            }
        )
    )
    config = SandboxConfig.from_file(path)
    assert config.effective_limits().url_items_per_request == 30
    assert config.effective_limits().flex_burst == PLAN_LIMITS[Plan.PRO].flex_burst
    assert config.tokens[1].allows(ZONE) and not config.tokens[1].allows(ZONE_B)
    assert config.zones[0].environments[0].production
    with pytest.raises(ValidationError):
        SandboxConfig.model_validate({"plan": "pro", "typo": True})
    with pytest.raises(ValidationError):
        SandboxConfig.model_validate({"zones": [{"id": ZONE}, {"id": ZONE}]})


def test_stats_count_what_the_records_hold(sandbox: Sandbox) -> None:
    sandbox.admin("POST", "reset", {"limits": {"url_rate_per_s": 1, "url_burst": 5}})
    assert sandbox.purge({"files": urls(3)}).status_code == 200
    sandbox.clock.advance(2)
    assert sandbox.purge({"tags": ["a", "b"]}).status_code == 200
    assert sandbox.purge({"files": urls(5)}).status_code == 429
    stats = sandbox.admin("GET", "stats").json()
    assert stats == {"purges": 2, "items_purged": 5, "calls": 3, "throttled": 1,
                     "first_purge_at": 500.0, "last_purge_at": 502.0}
    sandbox.admin("POST", "reset", {})
    assert sandbox.admin("GET", "stats").json()["items_purged"] == 0
