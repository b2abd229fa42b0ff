"""The ingest's pure parts: tokens and scopes, Cloudflare bodies to purge requests, and the
ZONEPURGE_INGEST_TOKENS setting."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from ingest.auth import TokenRing
from ingest.bodies import NotAnObjectError, purge_request
from zonepurge.items import Kind, Mode
from zonepurge.lanes import PRODUCTION_TARGET, EnvTarget
from zonepurge.model import RequestError
from zonepurge.settings import IngestToken, Settings, describe_settings_error

ZONE = "023e105f4ecef8ad9ca31a8372d0c353"
STAGING = EnvTarget(ref="9ca3a88d6210a716", label="Staging")


def token(secret, zones=("*",), environments=("*",), name=None):
    return IngestToken(token=secret, zones=list(zones), environments=list(environments), name=name)


def test_a_token_is_found_only_by_its_exact_value():
    ring = TokenRing([token("a" * 20, name="cms"), token("b" * 20)])
    assert ring.find("a" * 20).label == "cms"
    assert ring.find("b" * 20).label == "token #2"
    for wrong in (None, "", "a" * 19, "a" * 21, "A" * 20, "b" * 20 + " "):
        assert ring.find(wrong) is None


def test_a_grant_holds_no_token():
    grant = TokenRing([token("secret-value-0123456789")]).find("secret-value-0123456789")
    assert "secret-value" not in repr(grant)
    assert "secret-value" not in repr(token("secret-value-0123456789"))


def test_zone_scope():
    grant = TokenRing([token("t" * 16, zones=[ZONE.upper()])]).find("t" * 16)
    assert grant.allows_zone(ZONE) and grant.allows_zone(ZONE.upper())
    assert not grant.allows_zone("0" * 32)


@pytest.mark.parametrize("scope, target, allowed", [
    (["*"], PRODUCTION_TARGET, True),
    (["production"], PRODUCTION_TARGET, True),
    (["PRODUCTION"], PRODUCTION_TARGET, True),
    (["Live"], PRODUCTION_TARGET, True),  # the zone's production name (see below)
    (["staging"], PRODUCTION_TARGET, False),
    (["staging"], STAGING, True),
    (["9ca3a88d6210a716"], STAGING, True),
    (["9CA3A88D6210A716"], STAGING, False),  # refs are compared exactly
    (["production"], STAGING, False),
    (["Development"], STAGING, False),
    # Not resolved (the ingest could not list the zone's environments): only that same name.
    (["staging"], EnvTarget(name="Staging"), True),
    (["9ca3a88d6210a716"], EnvTarget(name="Staging"), False),
    (["staging"], EnvTarget(name="9ca3a88d6210a716"), False),
])
def test_environment_scope(scope, target, allowed):
    grant = TokenRing([token("t" * 16, environments=scope)]).find("t" * 16)
    assert grant.allows_environment(target, production_name="Live") is allowed


def body(data):
    return json.dumps(data).encode()


def test_a_cloudflare_body_becomes_a_purge_request():
    request = purge_request(ZONE.upper(), "Staging", Mode.INVALIDATE, body(
        {"files": ["https://WWW.example.com/a", {"url": "https://www.example.com/b",
                                                 "headers": {"cf-ipcountry": "US"}}]}))
    assert (request.zone, request.environment, request.kind, request.mode) == (
        ZONE, "Staging", Kind.FILES, Mode.INVALIDATE)
    assert request.members == ["https://www.example.com/a",
                               '{"url":"https://www.example.com/b","headers":{"CF-IPCountry":"US"}}']
    everything = purge_request(ZONE, None, Mode.PURGE, body({"purge_everything": True}))
    assert everything.kind is Kind.EVERYTHING and everything.environment is None


def test_every_problem_of_a_body_is_named():
    with pytest.raises(RequestError) as refused:
        purge_request(ZONE, None, Mode.PURGE, body({"tags": ["ok", "has space", ""],
                                                    "environment": "Production", "invalidate": True}))
    assert refused.value.problems[:2] == [
        "environment: unknown field (the body takes one of files, tags, hosts, prefixes, purge_everything)",
        "invalidate: unknown field (the body takes one of files, tags, hosts, prefixes, purge_everything)"]
    assert [p.split(":")[0] for p in refused.value.problems[2:]] == ["tags[1]", "tags[2]"]


@pytest.mark.parametrize("raw", [b"", b"[1]", b'"files"', b"{", b"\xff\xfe", b"[" * 100_000])
def test_a_body_that_is_no_json_object_is_refused(raw):
    with pytest.raises(NotAnObjectError):
        purge_request(ZONE, None, Mode.PURGE, raw)


def test_ingest_tokens_are_read_from_json_and_never_shown(monkeypatch):
    secret = "a-secret-nobody-may-see-123"
    monkeypatch.setenv("ZONEPURGE_INGEST_TOKENS", json.dumps(
        [{"token": secret, "zones": [ZONE.upper()], "environments": [" Staging "], "name": "cms"}]))
    settings = Settings()
    [parsed] = settings.ingest_tokens
    assert (parsed.zones, parsed.environments, parsed.token.get_secret_value()) == ([ZONE], ["Staging"], secret)
    assert secret not in repr(settings) and secret not in str(settings)


@pytest.mark.parametrize("tokens, expected", [
    ([{"token": "short-secret", "zones": ["*"], "environments": ["*"]}], "at least 16 characters"),
    ([{"token": "a-secret-nobody-may-see-123"}], "ZONEPURGE_INGEST_TOKENS[0].zones: Field required"),
    ([{"token": "a-secret-nobody-may-see-123", "zones": ["example.com"], "environments": ["*"]}],
     "32-hex zone ids"),
    ([{"token": "a-secret-nobody-may-see-123", "zones": ["*"], "environments": ["*"]}] * 2,
     "listed twice"),
])
def test_a_bad_ingest_token_setting_is_named_without_its_value(monkeypatch, tokens, expected):
    monkeypatch.setenv("ZONEPURGE_INGEST_TOKENS", json.dumps(tokens))
    with pytest.raises(ValidationError) as refused:
        Settings()
    lines = describe_settings_error(refused.value)
    assert any(expected in line for line in lines), lines
    for shown in (str(refused.value), repr(refused.value), *lines):
        assert "short-secret" not in shown and "nobody-may-see" not in shown


def test_the_openapi_document_is_valid_and_documents_every_refusal():
    from openapi_spec_validator import validate

    from ingest.app import create_app
    from zonepurge.runtime import Runtime

    document = create_app(Runtime(Settings(), send=lambda *_: None)).openapi()
    validate(document)
    purge = document["paths"]["/client/v4/zones/{zone}/environments/{ref}/purge_cache"]["post"]
    assert set(purge["responses"]) == {"200", "400", "401", "403", "404", "413", "503"}
    assert purge["requestBody"]["content"]["application/json"]["schema"]["maxProperties"] == 1
    assert "422" not in json.dumps(document)  # bad parameters are answered 400, as documented
