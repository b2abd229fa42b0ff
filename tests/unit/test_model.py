import pytest

from zonepurge.items import Kind, Mode
from zonepurge.model import MAX_ITEMS_PER_REQUEST, PurgeRequest, RequestError

ZONE = "023e105f4ecef8ad9ca31a8372d0c353"


def test_a_valid_request_holds_normalized_members():
    request = PurgeRequest.parse({"zone": ZONE.upper(), "environment": " Staging ",
                                  "files": ["HTTPS://A.com:443/x#f", {"url": "https://a.com/y"}],
                                  "invalidate": True})
    assert request.zone == ZONE
    assert request.environment == "Staging"
    assert request.kind is Kind.FILES
    assert request.mode is Mode.INVALIDATE
    assert request.members == ["https://a.com/x", "https://a.com/y"]


def test_everything_has_one_member_and_no_items():
    request = PurgeRequest.parse({"zone": ZONE, "purge_everything": True})
    assert request.kind is Kind.EVERYTHING
    assert request.members == ["*"]


@pytest.mark.parametrize(
    "data, words",
    [
        ({"zone": ZONE}, "got none"),
        ({"zone": ZONE, "tags": ["a"], "hosts": ["a.com"]}, "got tags, hosts"),
        ({"zone": ZONE, "tags": ["a"], "purge_everything": True}, "got tags, purge_everything"),
        ({"zone": ZONE, "tags": []}, "tags: must list at least one item"),
        ({"zone": ZONE, "purge_everything": False}, "purge_everything must be true"),
        ({"zone": ZONE, "tags": "a"}, "must be a list"),
        ({"zone": "example.com", "tags": ["a"]}, "32 hexadecimal"),
        ({"zone": ZONE, "tags": ["a"], "colour": "red"}, "colour: unknown field"),
        ({"zone": ZONE, "files": [42]}, r"files\[0\]"),
        ({"zone": ZONE, "files": [{"url": "https://a.com", "header": {}}]}, "unexpected field"),
        ({"zone": ZONE, "environment": "x\x00y", "tags": ["a"]}, "printable"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(data, words):
    with pytest.raises(RequestError, match=words):
        PurgeRequest.parse(data)


def test_every_bad_item_is_named_with_its_position():
    with pytest.raises(RequestError) as caught:
        PurgeRequest.parse({"zone": ZONE, "files": ["https://ok.com/", "ftp://x", "https://ok.com/2",
                                                    "https://a b/"]})
    problems = caught.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("files[1]: URL 'ftp://x'")
    assert problems[1].startswith("files[3]:")
    assert "nothing was enqueued" in str(caught.value)


def test_item_count_is_bounded():
    with pytest.raises(RequestError, match=f"more than {MAX_ITEMS_PER_REQUEST:,} items in one request; send a larger set as a file"):
        PurgeRequest.parse({"zone": ZONE, "tags": ["t"] * (MAX_ITEMS_PER_REQUEST + 1)})


def test_many_problems_are_summarised_not_dumped():
    with pytest.raises(RequestError) as caught:
        PurgeRequest.parse({"zone": ZONE, "tags": ["bad tag"] * 100})
    assert len(caught.value.problems) == 100
    assert "and 80 more" in str(caught.value)


def test_settings_purge_at_cloudflare_with_a_token_else_at_the_sandbox_if_named():
    from zonepurge.settings import Settings

    assert Settings().api_target is None
    sandbox = Settings(sandbox_url="http://sandbox:8787/client/v4", cloudflare_api_token="")
    assert sandbox.api_target[0] == "http://sandbox:8787/client/v4"
    real = Settings(sandbox_url="http://sandbox:8787/client/v4", cloudflare_api_token="s3cr3t-v4lue")
    assert real.api_target[0] == "https://api.cloudflare.com/client/v4"
    assert "s3cr3t-v4lue" not in repr(real)


def test_redact_url_hides_user_and_password():
    from zonepurge.runtime import redact_url

    assert redact_url("redis://user:secret@host:6379/0") == "redis://***@host:6379/0"
    assert redact_url("redis://:secret@host/0") == "redis://***@host/0"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"
