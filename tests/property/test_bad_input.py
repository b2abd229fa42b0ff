"""Bad input at the door: whatever arrives is accepted whole or refused whole, with words.

Hypothesis throws arbitrary strings, odd unicode, wrong types and huge values at the request
model, the line validator of bulk files, and the CLI.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer.bulk import member_chunks
from tests.conftest import ZONE
from zonepurge.items import ItemError, Kind, member_for_line, normalize_tag, normalize_url
from zonepurge.model import MAX_ITEMS_PER_REQUEST, PurgeRequest, RequestError

anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
url_like = st.builds(
    lambda scheme, host, port, path, frag: f"{scheme}://{host}{port}/{path}{frag}",
    st.sampled_from(["http", "https", "HTTPS", "ftp", "", "javascript"]),
    st.text(max_size=20) | st.from_regex(r"[A-Za-z0-9.-]{1,20}", fullmatch=True),
    st.sampled_from(["", ":443", ":80", ":", ":99999", ":abc"]),
    st.text(max_size=30),
    st.sampled_from(["", "#x", "#"]),
)
items = st.lists(st.text() | url_like | anything, min_size=0, max_size=6)
kinds = st.sampled_from(["files", "tags", "hosts", "prefixes"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(zone=st.text(max_size=40) | st.just(ZONE) | anything, environment=st.none() | st.text(max_size=40) | anything,
       kind=kinds, values=items, everything=st.sampled_from([False, True, "yes", 1, None]),
       extra=st.dictionaries(st.text(max_size=6), anything, max_size=2))
def test_a_request_is_accepted_whole_or_refused_with_each_problem_named(zone, environment, kind, values, everything, extra):
    data = {**extra, "zone": zone, "environment": environment, kind: values, "purge_everything": everything}
    try:
        request = PurgeRequest.parse(data)
    except RequestError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        assert "nothing was enqueued" in str(exc)
        return
    # Accepted: every member is already in its one spelling.
    for member in request.members:
        if request.kind.value == "files" and not member.startswith("{"):
            assert normalize_url(member) == member
        if request.kind.value == "tags":
            assert normalize_tag(member) == member


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | url_like)
def test_url_normalization_is_idempotent_or_refuses(url):
    try:
        once = normalize_url(url)
    except ItemError as exc:
        assert str(exc)
        return
    assert normalize_url(once) == once


def test_huge_inputs_are_refused_with_a_bound_named():
    with pytest.raises(RequestError, match="100000|100,000"):
        PurgeRequest.parse({"zone": ZONE, "tags": ["t"] * (MAX_ITEMS_PER_REQUEST + 1)})
    with pytest.raises(RequestError, match="longer than"):
        PurgeRequest.parse({"zone": ZONE, "files": ["https://a.com/" + "x" * 10_000_000]})
    with pytest.raises(RequestError, match="longer than 1024"):
        PurgeRequest.parse({"zone": ZONE, "tags": ["t" * 5000]})


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from([Kind.FILES, Kind.TAGS, Kind.HOSTS, Kind.PREFIXES]),
       lines=st.lists(st.text(max_size=60) | url_like, max_size=30))
def test_a_file_is_validated_whole_before_anything_is_kept(kind, lines):
    expected_bad = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if text and not text.startswith("#") and "\n" not in line and "\r" not in line:
            try:
                member_for_line(kind, text)
            except ItemError:
                expected_bad.append(number)
    chunks = member_chunks(kind, (line.replace("\n", " ").replace("\r", " ") + "\n" for line in lines), 7)
    yielded = []
    try:
        for chunk in chunks:
            yielded.append(chunk)
    except RequestError as exc:
        assert exc.problems
        # Chunks seen before the refusal held only good lines, and the caller drops them.
        assert all(member_for_line(kind, m) == m for chunk in yielded for m in chunk)
        return
    assert expected_bad == []
    assert sum(map(len, yielded)) > 0


@pytest.mark.integration
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(st.sampled_from(["--url", "--tag", "--host", "--prefix", "--env", "--everything",
                                      "--invalidate", "--kind", "--json", "-z"]) | st.text(max_size=30),
                     max_size=8))
def test_the_cli_never_shows_a_traceback_and_enqueues_nothing_it_refuses(args, service_env, redis_client):
    redis_client.flushdb()
    args = [a.replace("\x00", "") for a in args]
    result = subprocess.run([sys.executable, "-m", "zonepurge", "enqueue", "-z", ZONE, *args], env=service_env,
                            capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (0, 1, 2), result.stderr
    if result.returncode != 0:
        assert result.stderr.strip()
        pending = sum(redis_client.zcard(k) for k in redis_client.scan_iter("zp:pending:*"))
        assert pending == 0, "a refused request left items behind"
