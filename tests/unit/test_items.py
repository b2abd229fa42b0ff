import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zonepurge.items import (
    ItemError,
    Kind,
    body_for,
    file_member,
    member_for_line,
    normalize_hostname_item,
    normalize_prefix,
    normalize_tag,
    normalize_url,
)


@pytest.mark.parametrize(
    "spelling",
    [
        "https://www.example.com/a/B?x=1&y=2",
        "HTTPS://WWW.EXAMPLE.COM/a/B?x=1&y=2",
        "https://www.example.com:443/a/B?x=1&y=2",
        "https://www.example.com/a/B?x=1&y=2#section",
        "  https://Www.Example.com:443/a/B?x=1&y=2#  ",
    ],
)
def test_spellings_of_one_url_share_one_member(spelling):
    assert normalize_url(spelling) == "https://www.example.com/a/B?x=1&y=2"


def test_path_and_query_stay_case_sensitive_and_verbatim():
    assert normalize_url("https://a.com/Path%2Fx?Q=A") == "https://a.com/Path%2Fx?Q=A"
    assert normalize_url("https://a.com/a") != normalize_url("https://a.com/A")


def test_default_ports_dropped_only_for_their_scheme():
    assert normalize_url("http://a.com:80/") == "http://a.com/"
    assert normalize_url("http://a.com:443/") == "http://a.com:443/"
    assert normalize_url("https://a.com:8443/x") == "https://a.com:8443/x"


def test_an_empty_port_is_the_default_port_and_a_trailing_dot_is_kept():
    assert normalize_url("https://www.example.com:/a") == "https://www.example.com/a"
    assert normalize_url("https://www.example.com./a") == "https://www.example.com./a"
    assert normalize_url("https://[::1]:8443/a") == "https://[::1]:8443/a"


def test_empty_path_is_root_and_idn_hosts_are_ascii():
    assert normalize_url("https://a.com") == "https://a.com/"
    assert normalize_url("https://bücher.example/x") == "https://xn--bcher-kva.example/x"


@pytest.mark.parametrize(
    "bad, words",
    [
        ("ftp://a.com/x", "http:// or https://"),
        ("www.example.com/x", "http:// or https://"),
        ("https://a.com/*.css", "wildcard"),
        ("https://a b.com/", "whitespace"),
        ("https://user:pw@a.com/", "user information"),
        ("https://a.com:99999/", "malformed"),
        ("https:///path", "empty host"),
        ("https://-bad-.com/", "not a valid hostname"),
        ("", "empty URL"),
        ("https://a.com/" + "x" * 5000, "longer than"),
    ],
)
def test_bad_urls_say_what_is_wrong(bad, words):
    with pytest.raises(ItemError, match=words.replace("*", r"\*").replace("/", "/")):
        normalize_url(bad)


def test_headers_join_the_key_with_one_spelling():
    one = file_member("https://a.com/x", {"cf-ipcountry": "US", "CF-DEVICE-TYPE": "mobile"})
    two = file_member("HTTPS://A.com/x#f", {"CF-Device-Type": "mobile", "CF-IPCountry": "US"})
    assert one == two
    assert json.loads(one) == {"url": "https://a.com/x",
                               "headers": {"CF-Device-Type": "mobile", "CF-IPCountry": "US"}}
    assert file_member("https://a.com/x", {}) == "https://a.com/x"
    assert file_member("https://a.com/x", {"CF-IPCountry": "DE"}) != one


def test_headers_given_twice_in_two_cases_are_refused():
    with pytest.raises(ItemError, match="given twice"):
        file_member("https://a.com/", {"Origin": "https://a.com", "origin": "https://b.com"})


def test_tags_hosts_prefixes():
    assert normalize_tag("Blog-Post") == normalize_tag("blog-post") == "blog-post"
    with pytest.raises(ItemError, match="whitespace"):
        normalize_tag("two words")
    with pytest.raises(ItemError, match="1024"):
        normalize_tag("t" * 1025)
    assert normalize_tag("t" * 1024)
    assert normalize_hostname_item("WWW.Example.COM") == "www.example.com"
    with pytest.raises(ItemError, match="bare hostname"):
        normalize_hostname_item("https://www.example.com")
    assert normalize_prefix("WWW.Example.com/Foo/bar") == "www.example.com/Foo/bar"
    with pytest.raises(ItemError, match="scheme"):
        normalize_prefix("https://www.example.com/foo")
    with pytest.raises(ItemError, match="query or fragment"):
        normalize_prefix("www.example.com/foo?x=1")
    assert normalize_prefix("a.com" + "/x" * 31)
    with pytest.raises(ItemError, match="31"):
        normalize_prefix("a.com" + "/x" * 32)


def test_member_for_line_dispatches_by_kind():
    assert member_for_line(Kind.TAGS, "ABC") == "abc"
    assert member_for_line(Kind.FILES, "https://A.com") == "https://a.com/"
    with pytest.raises(ItemError):
        member_for_line(Kind.EVERYTHING, "x")


def test_bodies_use_one_form_per_request():
    assert body_for(Kind.EVERYTHING, ["*"]) == {"purge_everything": True}
    assert body_for(Kind.TAGS, ["a", "b"]) == {"tags": ["a", "b"]}
    with_headers = file_member("https://a.com/x", {"CF-IPCountry": "US"})
    assert body_for(Kind.FILES, ["https://a.com/y", with_headers]) == {
        "files": [{"url": "https://a.com/y"},
                  {"url": "https://a.com/x", "headers": {"CF-IPCountry": "US"}}]
    }


# The shortcut for URLs already in their member's spelling must agree with the long way on
# every URL it takes. URL-shaped text, with the parts where the two could part ways: case,
# ports, dots and dashes at label edges, long labels, empty queries, fragments, odd characters.
_good_label = st.from_regex(r"[a-z0-9_][a-z0-9_-]{0,5}[a-z0-9_]|[a-z0-9]", fullmatch=True)
_label = st.one_of(_good_label, _good_label, _good_label, st.text(alphabet="aZ09_-.", max_size=4),
                   st.sampled_from(["a" * 63, "b" * 64, "", "-a", "a-", "xn--bcher-kva"]))
_url_like = st.builds(
    lambda scheme, labels, port, slash, path: f"{scheme}://{'.'.join(labels)}{port}{slash}{path}",
    st.sampled_from(["http", "https", "https", "HTTPS", "ftp"]),
    st.lists(_label, min_size=1, max_size=4),
    st.sampled_from(["", "", "", ":443", ":80", ":8443", ":"]),
    st.sampled_from(["/", "/", "/", ""]),
    st.text(alphabet="/aB?=&%@:.-_~\u00e9", max_size=12) | st.text(alphabet="/aB?#* \t", max_size=6),
)


@settings(max_examples=3000, deadline=None)
@given(_url_like)
def test_the_canonical_shortcut_agrees_with_the_full_normalization(url):
    from zonepurge.items import _canonical, _normalize_url_parts

    if _canonical(url):
        assert _normalize_url_parts(url) == url


def test_those_examples_reach_the_shortcut_and_its_edges():
    from hypothesis import find

    from zonepurge.items import _canonical

    find(_url_like, _canonical)  # raises if no example ever took the shortcut
    find(_url_like, lambda u: _canonical(u) and "?" in u and "-" in u)


def test_the_shortcut_takes_the_urls_a_cms_sends():
    from zonepurge.items import _canonical

    assert _canonical("https://www.example.com/articles/12?page=1")
    assert _canonical("http://127.0.0.1/x")
    assert not _canonical("https://www.example.com")  # no path: the long way adds "/"
    assert not _canonical("https://Www.example.com/")
    assert not _canonical("https://www.example.com/?")
    assert not _canonical("https://-bad.example.com/")


def test_a_line_of_a_url_file_may_give_headers_in_the_object_form():
    from zonepurge.items import file_line_member

    member = file_line_member('{"url": "https://WWW.example.com/a", "headers": {"cf-ipcountry": "US"}}')
    assert member == file_member("https://www.example.com/a", {"CF-IPCountry": "US"})
    assert file_line_member("https://www.example.com/a") == "https://www.example.com/a"
    for bad, words in (('{"url": 1}', "string 'url'"), ("{nope", "JSON object"), ('["x"]', None),
                       ('{"url": "https://a.com/", "x": 1}', "unexpected field")):
        with pytest.raises(ItemError, match=words if words else "."):
            file_line_member(bad) if bad.startswith("{") else member_for_line(Kind.FILES, bad)
