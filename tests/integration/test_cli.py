"""The zonepurge command as a user runs it, against a real Redis and the sandbox."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.conftest import ZONE
from worker.flush import Flusher
from zonepurge import keys
from zonepurge.items import Kind, Mode
from zonepurge.lanes import Lane
from zonepurge.services import free_port

pytestmark = pytest.mark.integration


def cli(args, env, stdin=None):
    return subprocess.run([sys.executable, "-m", "zonepurge", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=60)


def status(env):
    result = cli(["status", "--json"], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_enqueue_prints_a_receipt_and_status_shows_it(service_env):
    result = cli(["enqueue", "-z", ZONE, "--url", "https://www.example.com/a", "--url",
                  "https://WWW.example.com:443/a#x", "--url", "https://www.example.com/b"], service_env)
    assert result.returncode == 0, result.stderr
    assert "accepted 2 new item(s), 1 already pending" in result.stdout
    report = status(service_env)
    assert (report["pending"], report["in_flight"], report["dead_letters"]) == (2, 0, 0)
    [lane] = report["lanes"]
    assert lane["zone"] == ZONE and lane["environment"] == "production" and lane["kind"] == "files"
    assert lane["oldest_pending_age_s"] >= 0
    table = cli(["status"], service_env).stdout
    assert "pending 2" in table and "production" in table


def test_json_receipt(service_env, sandbox):
    result = cli(["enqueue", "-z", ZONE, "-e", "staging", "--tag", "A", "--tag", "a", "--json"], service_env)
    receipt = json.loads(result.stdout)
    assert receipt["accepted"] == 1 and receipt["already_pending"] == 1
    assert receipt["environment"] == sandbox.environments(ZONE)["Staging"]


def test_a_request_with_a_bad_item_is_refused_whole(service_env):
    result = cli(["enqueue", "-z", ZONE, "--url", "https://ok.example.com/", "--url", "ftp://nope/",
                  "--url", "https://bad host/"], service_env)
    assert result.returncode == 1
    assert "files[1]" in result.stderr and "files[2]" in result.stderr and "nothing was enqueued" in result.stderr
    assert status(service_env)["pending"] == 0


def test_a_file_with_a_bad_line_is_refused_whole_and_each_bad_line_named(service_env, tmp_path):
    lines = [f"https://www.example.com/{i}" for i in range(20_000)]
    lines[7] = "not a url"
    lines[15_000] = "https://www.example.com/*"
    path = tmp_path / "urls.txt"
    path.write_text("\n".join(lines) + "\n")
    result = cli(["enqueue", "-z", ZONE, "--from-file", str(path)], service_env)
    assert result.returncode == 1
    assert "line 8:" in result.stderr and "line 15001:" in result.stderr
    assert status(service_env)["pending"] == 0


def test_items_from_stdin_skip_blank_and_comment_lines(service_env):
    result = cli(["enqueue", "-z", ZONE, "--kind", "prefixes", "--from-file", "-", "--json"], service_env,
                 stdin="# changed sections\nwww.example.com/news\n\nWWW.example.com/news\nwww.example.com/blog\n")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["accepted"] == 2


def test_unknown_environment_is_a_clear_refusal(service_env, sandbox):
    result = cli(["enqueue", "-z", ZONE, "-e", "Previw", "--tag", "a"], service_env)
    assert result.returncode == 1
    assert "no environment named or with ref 'Previw'" in result.stderr
    assert "Production, Staging, Development" in result.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["--url", "https://a.com/", "--tag", "x"], "give one of"),
        ([], "give one of"),
        (["--kind", "tags", "--tag", "x"], "--kind goes with --from-file"),
    ],
)
def test_usage_errors(service_env, args, words):
    result = cli(["enqueue", "-z", ZONE, *args], service_env)
    assert result.returncode == 2 and words in result.stderr


def test_redis_down_fails_fast_with_exit_3(service_env):
    env = {**service_env, "REDIS_URL": f"redis://:hunter2@127.0.0.1:{free_port()}/0"}
    result = cli(["enqueue", "-z", ZONE, "--url", "https://www.example.com/"], env)
    assert result.returncode == 3
    assert "cannot reach Redis" in result.stderr and "0 item(s)" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert cli(["status"], env).returncode == 3


def test_help_explains_each_command():
    for command in ([], ["enqueue"], ["status"], ["worker"], ["sandbox"], ["up"]):
        result = cli([*command, "--help"], {})
        assert result.returncode == 0 and "Usage:" in result.stdout


def _flush_all(runtime, sender):
    """Run the flushes the producer queued, an hour ahead so that debounces are over."""
    flusher = Flusher(runtime, clock=lambda: time.time() + 3600)
    while sender.sent:
        flusher.flush(sender.sent.pop(0)[0])


def test_dead_letters_list_replay_and_drop(service_env, runtime, sender, sandbox):
    from producer import Producer

    sandbox.faults(reject_items=[{"match": "bad", "code": 1099, "message": "refused here"}])
    Producer(runtime).enqueue({"zone": ZONE, "tags": ["bad-1"]})
    Producer(runtime).enqueue({"zone": ZONE, "environment": "Development", "tags": ["bad-2"]})
    _flush_all(runtime, sender)
    listed = json.loads(cli(["dead-letters", "list", "--json"], service_env).stdout)
    assert sorted(r["item"] for r in listed) == ["bad-1", "bad-2"]
    assert {(r["reason"], r["code"], r["message"].endswith("refused here)")) for r in listed} == {("rejected", 1099, True)}
    text = cli(["dead-letters", "list", "-z", ZONE, "-e", "development"], service_env).stdout
    assert "bad-2" in text and "bad-1" not in text and "1 dead letter(s)" in text
    assert status(service_env)["dead_letters"] == 2

    refused = cli(["dead-letters", "drop"], service_env)
    assert refused.returncode == 2 and "--all" in refused.stderr

    sandbox.faults(reject_items=[])
    replay = cli(["dead-letters", "replay", "-z", ZONE, "-e", "Development", "--json"], service_env)
    assert json.loads(replay.stdout) == {"replayed": 1}
    assert status(service_env)["pending"] == 1
    sender.sent.extend((lane.id, 0) for lane in runtime.store.lanes())  # what the CLI's nudge queued
    _flush_all(runtime, sender)
    assert ["bad-2"] in [p["items"] for p in sandbox.purges()]

    assert json.loads(cli(["dead-letters", "drop", "--reason", "rejected", "--json"], service_env).stdout) == {"dropped": 1}
    assert status(service_env)["dead_letters"] == 0


def test_dead_letter_filters_refuse_what_they_cannot_mean_and_find_unresolved_names(service_env, runtime):
    from zonepurge.lanes import EnvTarget
    from zonepurge.store import DeadLetter

    lane = Lane(ZONE, EnvTarget(name="Nope"), Kind.TAGS, Mode.PURGE)  # enqueued while unlisted
    record = DeadLetter(item="t", zone=ZONE, environment=str(lane.env), kind="tags", mode="purge",
                        reason="unknown-environment", code=None, message="no such environment",
                        attempts=1, first_enqueued_at=0.0, dead_at=0.0, lane=lane.id)
    runtime.store.redis.rpush(keys.DEAD_LETTERS, record.to_json())
    found = json.loads(cli(["dead-letters", "list", "--env", "nope", "--json"], service_env).stdout)
    assert [r["item"] for r in found] == ["t"]
    for bad in (["--reason", "rejectd"], ["--zone", "xyz"]):
        for command in ("list", "replay", "drop"):
            result = cli(["dead-letters", command, *bad], service_env)
            assert result.returncode == 2 and "Invalid value" in result.stderr, result.stderr
    assert runtime.store.redis.llen(keys.DEAD_LETTERS) == 1


def test_a_receipt_for_an_environment_still_to_be_resolved_names_it_once(service_env):
    offline = {k: v for k, v in service_env.items() if k != "CLOUDFLARE_API_TOKEN"}  # cannot list
    made = cli(["enqueue", "-z", ZONE, "--env", "Nope", "--tag", "a", "--json"], offline)
    assert made.returncode == 0 and "could not be checked now" in made.stderr
    shown = cli(["receipt", json.loads(made.stdout)["id"]], offline).stdout
    assert "environment Nope (unresolved)," in shown and "(ref" not in shown


def test_status_says_loudly_that_a_zone_is_paused(service_env, runtime):
    runtime.store.pause(ZONE, "HTTP 403, the API token is invalid or lacks permission", probe_at=0)
    runtime.store.enqueue(Lane.parse(f"{ZONE}:@production:tags:purge"), ["a"])
    report = status(service_env)
    assert [p["zone"] for p in report["paused_zones"]] == [ZONE]
    assert "PAUSED zone" in cli(["status"], service_env).stdout
    assert report["budget"]["default"]["flex"]["burst"] == 500 - 50 * 0.1  # Enterprise, less the margin


def test_a_broker_that_is_down_does_not_lose_or_refuse_what_redis_stored(service_env):
    env = {**service_env, "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = cli(["enqueue", "-z", ZONE, "--tag", "kept", "--json"], env)
    assert result.returncode == 0, result.stderr
    assert "the broker could not be told" in result.stderr
    assert json.loads(result.stdout)["accepted"] == 1
    assert status(service_env)["pending"] == 1  # a worker's sweep will send it


def test_an_environment_that_cannot_be_checked_now_is_accepted_with_a_warning(service_env):
    env = {k: v for k, v in service_env.items() if not k.startswith("CLOUDFLARE_")}
    result = cli(["enqueue", "-z", ZONE, "-e", "Staging", "--tag", "a"], env)
    assert result.returncode == 0
    assert "could not be checked now" in result.stderr and "dead-letter" in result.stderr


def test_an_empty_environment_is_refused_not_taken_for_production(service_env):
    result = cli(["enqueue", "-z", ZONE, "-e", " ", "--tag", "a"], service_env)
    assert result.returncode == 1 and "environment is empty" in result.stderr


def test_files_that_are_not_utf8_are_refused_and_a_bom_is_fine(service_env, tmp_path):
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"https://www.example.com/a\n\xff\xfe\x00garbage\n")
    result = cli(["enqueue", "-z", ZONE, "--from-file", str(binary)], service_env)
    assert result.returncode == 1 and "not UTF-8" in result.stderr
    assert "Traceback" not in result.stderr
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeffhttps://www.example.com/a\n".encode())
    result = cli(["enqueue", "-z", ZONE, "--from-file", str(bom), "--quiet"], service_env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert status(service_env)["pending"] == 1


def test_bad_settings_are_named_without_a_traceback_or_their_values(service_env):
    env = {**service_env, "ZONEPURGE_PLAN": "gold", "REDIS_URL": "localhost:6379",
           "ZONEPURGE_ACCOUNTS": "{not json"}
    result = cli(["status"], env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "ZONEPURGE_ACCOUNTS" in result.stderr or "ZONEPURGE_PLAN" in result.stderr
    result = cli(["status"], {**service_env, "ZONEPURGE_PLAN": "gold", "REDIS_URL": "localhost:6379"})
    assert "ZONEPURGE_PLAN:" in result.stderr and "REDIS_URL:" in result.stderr


def test_top_shows_rates_and_the_queue(service_env, runtime):
    runtime.store.redis.hset(keys.STATS, mapping={"purged": 40, "calls": 2})
    runtime.store.enqueue(Lane.parse(f"{ZONE}:@production:tags:purge"), ["a", "b"])
    result = cli(["top", "--once", "--interval", "0.2"], service_env)
    assert result.returncode == 0, result.stderr
    assert "purged 0/s (40 in all)" in result.stdout
    assert "pending 2" in result.stdout and "tags" in result.stdout
