"""The purge request every producer (Python API, CLI, HTTP ingest) validates before enqueueing.

A request names one zone, one environment (production when omitted) and exactly one kind of
purge. Validation reduces each item to its member (``zonepurge.items``); a request with any bad
item is refused whole, with every bad item named, and nothing of it is enqueued.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from zonepurge.items import (
    EVERYTHING_MEMBER,
    ItemError,
    Kind,
    Mode,
    file_member,
    file_object_member,
    normalize_hostname_item,
    normalize_prefix,
    normalize_tag,
)

# Items one request may carry; larger sets go through `enqueue --from-file` (streamed).
MAX_ITEMS_PER_REQUEST = 100_000
_ITEM_FIELDS = ("files", "tags", "hosts", "prefixes")
MAX_ENVIRONMENT_LENGTH = 256

_ZONE_ID = re.compile(r"^[0-9a-f]{32}$")


class RequestError(ValueError):
    """A purge request was refused; ``problems`` names each thing wrong with it."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:20]
        more = f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__("purge request refused, nothing was enqueued:\n  " + "\n  ".join(shown) + more)


def check_zone(value: str) -> str:
    lowered = value.strip().lower()
    if not _ZONE_ID.match(lowered):
        raise ValueError(f"zone id must be 32 hexadecimal characters (Cloudflare's zone identifier), got {value[:80]!r}")
    return lowered


def check_environment(value: str | None) -> str | None:
    if value is None:
        return None
    stripped = value.strip()
    if not stripped:
        # An empty $ENV must not quietly mean production.
        raise ValueError("environment is empty; leave it out for production, or name one")
    if len(stripped) > MAX_ENVIRONMENT_LENGTH or any(ord(c) < 32 or c == "\x7f" for c in stripped):
        raise ValueError("environment must be a name or ref of at most 256 printable characters")
    return stripped


def _item(normalize: Any) -> Any:
    def check(value: Any) -> str:
        try:
            return normalize(value)
        except ItemError as exc:
            raise ValueError(str(exc)) from None

    return AfterValidator(check)


def _file(value: Any) -> str:
    if isinstance(value, str):
        return file_member(value)
    if isinstance(value, dict):
        return file_object_member(value)
    raise ItemError("a file must be a URL string or an object {url, headers}")


def _strict_list(value: Any) -> Any:
    # A bare string is a list of characters to pydantic's eyes; nobody means that.
    if isinstance(value, (str, bytes, dict)):
        raise ValueError("must be a list")
    return value


FileItem = Annotated[Any, _item(_file)]
TagItem = Annotated[str, _item(normalize_tag)]
HostItem = Annotated[str, _item(normalize_hostname_item)]
PrefixItem = Annotated[str, _item(normalize_prefix)]


def _items_field() -> Any:
    return Field(None, min_length=1, max_length=MAX_ITEMS_PER_REQUEST)


class PurgeRequest(BaseModel):
    """One purge request. After validation, the item fields hold normalized members."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    zone: Annotated[str, AfterValidator(check_zone)]
    environment: Annotated[str | None, AfterValidator(check_environment)] = None
    files: Annotated[list[FileItem] | None, BeforeValidator(_strict_list)] = _items_field()
    tags: Annotated[list[TagItem] | None, BeforeValidator(_strict_list)] = _items_field()
    hosts: Annotated[list[HostItem] | None, BeforeValidator(_strict_list)] = _items_field()
    prefixes: Annotated[list[PrefixItem] | None, BeforeValidator(_strict_list)] = _items_field()
    purge_everything: bool = False
    invalidate: bool = False

    @model_validator(mode="before")
    @classmethod
    def _exactly_one_kind(cls, data: Any) -> Any:
        # Checked before the fields, so that it is reported along with any bad item.
        if not isinstance(data, dict):
            raise ValueError("a purge request must be an object")
        given = [k for k in ("files", "tags", "hosts", "prefixes") if data.get(k) is not None]
        if data.get("purge_everything") not in (None, False):
            given.append("purge_everything")
        if not given and data.get("purge_everything") is False:
            raise ValueError("purge_everything must be true to purge everything; or give one of "
                             "files, tags, hosts or prefixes")
        if len(given) != 1:
            raise ValueError(
                "give exactly one of files, tags, hosts, prefixes or purge_everything"
                + (f" (got {', '.join(given)})" if given else " (got none)")
            )
        return data

    @property
    def kind(self) -> Kind:
        for kind in (Kind.FILES, Kind.TAGS, Kind.HOSTS, Kind.PREFIXES):
            if getattr(self, kind.value) is not None:
                return kind
        return Kind.EVERYTHING

    @property
    def mode(self) -> Mode:
        return Mode.INVALIDATE if self.invalidate else Mode.PURGE

    @property
    def members(self) -> list[str]:
        if self.kind is Kind.EVERYTHING:
            return [EVERYTHING_MEMBER]
        return list(getattr(self, self.kind.value))

    @classmethod
    def parse(cls, data: dict[str, Any]) -> PurgeRequest:
        """Validate, turning pydantic's error list into a RequestError that names each problem."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise RequestError(describe_errors(exc, data)) from None


def describe_errors(exc: ValidationError, data: dict[str, Any] | None = None) -> list[str]:
    """One line per problem: where it is, the offending value, and what is wrong."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = error["loc"]
        where = str(loc[0]) if loc else "request"
        if len(loc) >= 2 and isinstance(loc[1], int):
            where += f"[{loc[1]}]"
        message = error["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "too_short" and where in _ITEM_FIELDS:
            message = "must list at least one item"
        elif error["type"] == "too_long" and where in _ITEM_FIELDS:
            message = (f"more than {MAX_ITEMS_PER_REQUEST:,} items in one request; send a larger set "
                       "as a file (zonepurge enqueue --from-file, producer.enqueue_file)")
        problems.append(f"{where}: {message}")
    return problems
