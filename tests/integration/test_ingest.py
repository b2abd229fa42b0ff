"""The HTTP ingest (`zonepurge serve`) as Cloudflare's clients use it: a real ingest process, a
real Redis, the sandbox, and a real Celery worker where purges must go out."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import cloudflare
import httpx
import pytest

from tests.conftest import INGEST_MAX_BODY_BYTES, INGEST_TOKENS, OTHER_ZONE, ZONE
from zonepurge.services import free_port, start_ingest, wait_for

pytestmark = pytest.mark.integration


def purge(ingest, body, token="all", zone=ZONE, env=None, action="purge_cache"):
    path = f"/client/v4/zones/{zone}/" + (f"environments/{env}/" if env else "") + action
    return ingest.call("POST", path, token, json=body)


def receipt_of(ingest, receipt_id, token="all"):
    response = ingest.call("GET", f"/v1/receipts/{receipt_id}", token)
    assert response.status_code == 200, response.text
    return response.json()["result"]


def wait_until_done(ingest, receipt_id):
    wait_for(lambda: receipt_of(ingest, receipt_id)["state"] != "pending", 60,
             f"receipt {receipt_id} to be done")
    return receipt_of(ingest, receipt_id)


def sdk(ingest, token="all"):
    # max_retries=0: the SDK's own retries would hide what the ingest answered.
    return cloudflare.Cloudflare(api_token=INGEST_TOKENS[token], base_url=ingest.api, max_retries=0)


def test_cloudflares_sdk_purges_a_zone_and_an_environment_through_the_worker(ingest, sandbox, worker):
    staging = sandbox.environments(ZONE)["Staging"]
    development = sandbox.environments(ZONE)["Development"]
    client = sdk(ingest)
    zone_purge = client.cache.purge(zone_id=ZONE, files=["https://www.example.com/sdk",
                                                         "https://WWW.example.com:443/sdk#top"])
    env_purge = client.cache.purge_environment(staging, zone_id=ZONE, tags=["SDK-Tag"])
    soft = client.cache.invalidate_environment(development, zone_id=ZONE,
                                               prefixes=["dev.example.com/docs"])
    for result in (zone_purge, env_purge, soft):
        assert result is not None and len(result.id) == 32
    for result in (zone_purge, env_purge, soft):
        assert wait_until_done(ingest, result.id)["state"] == "done"
    seen = {(p["environment"], p["action"], p["kind"], tuple(p["items"])) for p in sandbox.purges()}
    assert seen == {
        (None, "purge_cache", "files", ("https://www.example.com/sdk",)),
        (staging, "purge_cache", "tags", ("sdk-tag",)),
        (development, "invalidate_cache", "prefixes", ("dev.example.com/docs",)),
    }


def test_a_token_scoped_to_staging_is_refused_for_production(ingest, sandbox):
    client = sdk(ingest, "staging")
    with pytest.raises(cloudflare.PermissionDeniedError) as refused:
        client.cache.purge(zone_id=ZONE, files=["https://www.example.com/"])
    assert refused.value.status_code == 403
    with pytest.raises(cloudflare.PermissionDeniedError):
        client.cache.purge_environment(sandbox.environments(ZONE)["Production"], zone_id=ZONE, tags=["a"])
    with pytest.raises(cloudflare.PermissionDeniedError):
        client.cache.purge_environment("Development", zone_id=ZONE, tags=["a"])
    # By ref, as the SDK sends it, though the token names it by name.
    ok = client.cache.purge_environment(sandbox.environments(ZONE)["Staging"], zone_id=ZONE, tags=["a"])
    assert ok is not None and ok.id
    assert sandbox.purges() == []  # no worker: nothing went out, refused or not


def test_scopes_by_name_by_ref_production_and_zone(ingest, sandbox):
    staging = sandbox.environments(ZONE)["Staging"]
    tags = {"tags": ["a"]}
    assert purge(ingest, tags, "staging", env="STAGING").status_code == 200
    assert purge(ingest, tags, "staging-ref", env="staging").status_code == 200  # name -> its ref
    assert purge(ingest, tags, "staging-ref", env=staging).status_code == 200
    assert purge(ingest, tags, "staging-ref", env="Development").status_code == 403
    assert purge(ingest, tags, "production").status_code == 200
    assert purge(ingest, tags, "production", env="Production").status_code == 200
    assert purge(ingest, tags, "production", env=staging).status_code == 403
    assert purge(ingest, tags, "other-zone").status_code == 403
    assert purge(ingest, tags, "other-zone", zone=OTHER_ZONE).status_code == 200
    refused = purge(ingest, tags, "staging")
    assert refused.json() == {"success": False, "result": None, "messages": [], "errors": [
        {"code": 10000, "message": f"this token may not purge environment production of zone {ZONE}"}]}


def test_a_missing_or_unknown_token_is_401(ingest):
    for token in (None, "not-a-token-of-the-ingest", INGEST_TOKENS["all"] + "x"):
        response = purge(ingest, {"tags": ["a"]}, token)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["errors"][0]["code"] == 10000
    assert ingest.call("POST", f"/client/v4/zones/{ZONE}/purge_cache", None, json={"tags": ["a"]},
                       headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401


def test_an_invalid_body_is_400_with_each_bad_item_named_and_nothing_enqueued(ingest, redis_client):
    response = purge(ingest, {"files": ["https://ok.example.com/", "ftp://nope/", "https://bad host/",
                                        {"url": "https://a.example.com/", "headers": {"bad name": "x"}}]})
    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False and body["result"] is None
    assert [e["message"].split(":")[0] for e in body["errors"]] == ["files[1]", "files[2]", "files[3]"]
    assert {e["code"] for e in body["errors"]} == {2001}
    assert "ftp://nope/" in body["errors"][0]["message"]
    assert redis_client.keys("zp:pending:*") == []
    two_kinds = purge(ingest, {"tags": ["a"], "hosts": ["www.example.com"], "zone": OTHER_ZONE})
    assert two_kinds.status_code == 400
    messages = [e["message"] for e in two_kinds.json()["errors"]]
    assert messages[0].startswith("zone: unknown field")  # the path names the zone, not the body
    assert any("exactly one of" in m for m in messages)
    not_json = ingest.call("POST", f"/client/v4/zones/{ZONE}/purge_cache", content=b"{nope")
    assert (not_json.status_code, not_json.json()["errors"][0]["code"]) == (400, 2002)
    bad_zone = purge(ingest, {"tags": ["a"]}, zone="not-a-zone")
    assert bad_zone.status_code == 400
    assert bad_zone.json()["errors"][0]["message"].startswith("zone: zone id must be 32 hexadecimal characters")


def test_an_unknown_environment_is_404_naming_the_zones_environments(ingest, sandbox):
    response = purge(ingest, {"tags": ["a"]}, env="Preview")
    assert response.status_code == 404
    [error] = response.json()["errors"]
    assert error["code"] == 2003 and "Production, Staging, Development" in error["message"]


def test_a_body_over_the_limit_is_413(ingest, redis_client):
    urls = [f"https://www.example.com/{i:06d}" for i in range(INGEST_MAX_BODY_BYTES // 20)]
    response = purge(ingest, {"files": urls})
    assert response.status_code == 413
    assert response.json()["errors"][0]["code"] == 2005

    def chunks():  # no Content-Length: the limit holds while the body is read
        yield b'{"files": ['
        for url in urls:
            yield json.dumps(url).encode() + b","
        yield b'"https://www.example.com/"]}'

    chunked = ingest.call("POST", f"/client/v4/zones/{ZONE}/purge_cache", content=chunks())
    assert chunked.status_code == 413
    assert redis_client.keys("zp:pending:*") == []


def test_the_environment_list_comes_from_the_cache_and_is_fetched_on_a_miss(ingest, sandbox, redis_client):
    response = ingest.call("GET", f"/client/v4/zones/{ZONE}/environments")
    assert response.status_code == 200, response.text
    listed = {e["name"]: e["ref"] for e in response.json()["result"]["environments"]}
    assert listed == sandbox.environments(ZONE)
    assert redis_client.exists(f"zp:envs:{ZONE}")
    calls = len(sandbox.calls())
    assert ingest.call("GET", f"/client/v4/zones/{ZONE}/environments").status_code == 200
    assert len(sandbox.calls()) == calls  # answered from the cache
    assert ingest.call("GET", f"/client/v4/zones/{ZONE}/environments", "other-zone").status_code == 403


def test_receipts_follow_purges_to_done_and_to_done_with_dead_letters(ingest, sandbox, worker):
    sandbox.faults(reject_items=[{"match": "refused", "code": 1099, "message": "no such tag"}])
    good = purge(ingest, {"tags": ["fine-1", "fine-2"]}).json()["result"]["id"]
    mixed = purge(ingest, {"tags": ["fine-3", "refused"]}, env="Development").json()["result"]["id"]
    done = wait_until_done(ingest, good)
    assert (done["state"], done["purged"], done["dead_lettered"], done["outstanding"]) == ("done", 2, 0, 0)
    assert done["completed_at"] >= done["created_at"] - 1
    partial = wait_until_done(ingest, mixed)
    assert (partial["state"], partial["purged"], partial["dead_lettered"]) == ("done-with-dead-letters", 1, 1)
    assert ingest.call("GET", f"/v1/receipts/{good}", "other-zone").status_code == 403
    assert ingest.call("GET", f"/v1/receipts/{'0' * 32}").status_code == 404
    assert ingest.call("GET", f"/v1/receipts/{good}", None).status_code == 401


def cli(args, env):
    return subprocess.run([sys.executable, "-m", "zonepurge", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_zonepurge_wait_exit_status_tells_the_outcome(ingest, sandbox, service_env):
    sandbox.faults(reject_items=[{"match": "refused", "code": 1099, "message": "no such tag"}])
    good = purge(ingest, {"tags": ["fine"]}).json()["result"]["id"]
    mixed = purge(ingest, {"tags": ["fine", "refused"]}, env="Staging").json()["result"]["id"]

    # No worker yet: nothing can be purged, whatever the clock says.
    timed_out = cli(["wait", good, "--timeout", "0.3"], service_env)
    assert timed_out.returncode == 4, timed_out.stderr
    assert "timed out" in timed_out.stderr
    assert cli(["wait", "0" * 32, "--timeout", "5"], service_env).returncode == 2
    dead_redis = {**service_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    assert cli(["wait", good, "--timeout", "5"], dead_redis).returncode == 3
    shown = cli(["receipt", good, "--json"], service_env)
    assert shown.returncode == 0 and json.loads(shown.stdout)["state"] == "pending"

    from zonepurge.services import start_worker

    worker = start_worker(service_env, concurrency=2)
    try:
        done = cli(["wait", good, "--timeout", "60", "--json"], service_env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["state"] == "done"
        partial = cli(["wait", mixed, "--timeout", "60"], service_env)
        assert partial.returncode == 1, partial.stdout + partial.stderr
        assert "done-with-dead-letters" in partial.stdout and "1 dead-lettered" in partial.stdout
    finally:
        worker.stop()


def test_redis_unreachable_is_503_and_not_ready_while_health_says_up(redis_urls, sandbox, tmp_path):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    env = {"REDIS_URL": dead, "CELERY_BROKER_URL": dead, "CLOUDFLARE_BASE_URL": sandbox.base_url,
           "CLOUDFLARE_API_TOKEN": "sandbox-token",
           "ZONEPURGE_INGEST_TOKENS": json.dumps([{"token": INGEST_TOKENS["all"], "zones": ["*"],
                                                   "environments": ["*"]}])}
    child, root = start_ingest(env)
    try:
        headers = {"Authorization": f"Bearer {INGEST_TOKENS['all']}"}
        response = httpx.post(f"{root}/client/v4/zones/{ZONE}/purge_cache", json={"tags": ["a"]},
                              headers=headers, timeout=60)
        assert response.status_code == 503
        assert response.json()["errors"][0]["code"] == 2007
        assert httpx.get(f"{root}/v1/receipts/{'0' * 32}", headers=headers).status_code == 503
        assert httpx.get(f"{root}/ready").status_code == 503
        assert httpx.get(f"{root}/health").status_code == 200
    finally:
        child.stop()


def test_no_token_appears_in_the_ingest_log(ingest, sandbox):
    secret_unknown = "never-configured-but-secret-0123456789"
    purge(ingest, {"tags": ["a"]})
    purge(ingest, {"tags": ["a"]}, "staging")
    purge(ingest, {"files": ["ftp://x"]}, "production")
    purge(ingest, {"tags": ["a"]}, secret_unknown)
    ingest.call("GET", f"/client/v4/zones/{ZONE}/environments?token={secret_unknown}")
    ingest.call("GET", "/v1/receipts/" + "f" * 32, "other-zone")
    marker = "/v1/receipts/" + "e" * 32
    ingest.call("GET", marker)
    ingest.child.output.wait_for_line(lambda line: marker in line, 10, "the last access log line")
    log = "\n".join(ingest.child.output.lines)
    assert f'"POST /client/v4/zones/{ZONE}/purge_cache" 403' in log  # the log does log requests
    for token in [*INGEST_TOKENS.values(), secret_unknown]:
        assert token not in log
    # Tokens are named by their label.
    assert re.search(rf'"POST /client/v4/zones/{ZONE}/purge_cache" 403 [0-9.]+ms staging$', log, re.M)


def test_serve_refuses_to_start_without_tokens(service_env):
    result = cli(["serve", "--port", "0"], service_env)
    assert result.returncode == 2
    assert "ZONEPURGE_INGEST_TOKENS is not set" in result.stderr
