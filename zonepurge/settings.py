"""Every setting zonepurge reads, in one class, from the environment.

The README's configuration table mirrors this file. Four variables keep the names other tools
use (``REDIS_URL``, ``CELERY_BROKER_URL``, ``CLOUDFLARE_API_TOKEN``, ``CLOUDFLARE_BASE_URL``);
every other one carries the ``ZONEPURGE_`` prefix.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from zonepurge.plans import PLAN_LIMITS, Plan, PlanLimits


_GENERAL_LIMIT = re.compile(r"^\d+/\d+(\.\d+)?$")
_ZONE_ID = re.compile(r"^[0-9a-f]{32}$")

ANY = "*"
MIN_INGEST_TOKEN_LENGTH = 16


class IngestToken(BaseModel):
    """A token of the HTTP ingest and what it may purge: zones by id, environments by name
    (any case), ref, or "production"; "*" for all. SecretStr keeps the token out of repr()
    and str(), ``hide_input_in_errors`` out of validation errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    token: SecretStr
    zones: list[str] = Field(min_length=1)
    environments: list[str] = Field(min_length=1)
    # Who holds it, for the access log (which never shows a token); "token #N" when not given.
    name: str | None = Field(None, max_length=100)

    @field_validator("token")
    @classmethod
    def _long_enough(cls, token: SecretStr) -> SecretStr:
        if len(token.get_secret_value().strip()) < MIN_INGEST_TOKEN_LENGTH:
            raise ValueError(f"a token must have at least {MIN_INGEST_TOKEN_LENGTH} characters "
                             "(python3 -c 'import secrets; print(secrets.token_urlsafe())' makes one)")
        return token

    @field_validator("zones")
    @classmethod
    def _zone_ids(cls, zones: list[str]) -> list[str]:
        lowered = [z.strip().lower() for z in zones]
        bad = [z for z in lowered if z != ANY and not _ZONE_ID.match(z)]
        if bad:
            raise ValueError(f'zones must be 32-hex zone ids or "*" (got {len(bad)} other)')
        return lowered

    @field_validator("environments")
    @classmethod
    def _environment_names(cls, environments: list[str]) -> list[str]:
        stripped = [e.strip() for e in environments]
        if not all(stripped):
            raise ValueError('environments must be names, refs, "production" or "*"')
        return stripped


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ZONEPURGE_",
        populate_by_name=True,
        extra="ignore",
        # A validation error must never quote a value: it might be a token.
        hide_input_in_errors=True,
    )

    redis_url: str = Field("redis://localhost:6379/0", validation_alias=_env("REDIS_URL"))
    celery_broker_url: str | None = Field(None, validation_alias=_env("CELERY_BROKER_URL"))
    # SecretStr keeps the token out of repr(), str() and validation errors.
    cloudflare_api_token: SecretStr | None = Field(
        None, validation_alias=_env("CLOUDFLARE_API_TOKEN")
    )
    cloudflare_base_url: str = Field(
        "https://api.cloudflare.com/client/v4", validation_alias=_env("CLOUDFLARE_BASE_URL")
    )
    # Where to purge when no CLOUDFLARE_API_TOKEN is set: the sandbox (zonepurge sandbox), with
    # its token. docker-compose sets it, so that a real token, once given, wins.
    sandbox_url: str | None = None
    plan: Plan = Plan.ENTERPRISE

    # Per-plan overrides; None takes the plan's figure from zonepurge.plans.
    url_items_per_request: int | None = Field(None, ge=1)
    flex_items_per_request: int | None = Field(None, ge=1)
    url_rate_per_s: float | None = Field(None, gt=0)
    url_burst: int | None = Field(None, ge=1)
    flex_rate_per_s: float | None = Field(None, gt=0)
    flex_burst: int | None = Field(None, ge=1)

    # Cloudflare's limits are per account. Zones map to accounts here, {"<account>": ["<zone>",
    # ...]}; a zone not listed belongs to the account "default", so by default all zones share
    # one budget (the safe assumption when they do belong to one account).
    accounts: dict[str, list[str]] = Field(default_factory=dict)
    # Cloudflare's general API limit as "<requests>/<seconds>", e.g. "1200/300", to budget for
    # it too; empty (the default) leaves it out. docs/budget.md explains the choice.
    general_limit: str = ""
    # A send that must wait for budget this long or less waits in its worker slot; a longer
    # wait gives the batch back and queues the lane's flush for when the budget allows.
    budget_wait_in_slot_s: float = Field(0.5, ge=0, le=10)
    # zonepurge's buckets are this many seconds' worth of tokens smaller than Cloudflare's.
    # Cloudflare's bucket starts refilling when the first request *arrives*; if that request was
    # slower on the wire than the ones after it, a bucket of exactly Cloudflare's size runs a
    # few tokens ahead of Cloudflare's and earns a 429 (seen on the sandbox at Free limits).
    budget_margin_s: float = Field(0.1, ge=0, le=10)

    # How long a lone item waits for company before it is sent in a partial batch. Long enough
    # for a CMS's burst of publish hooks to share a request, short enough to feel immediate.
    debounce_s: float = Field(0.25, ge=0, le=60)
    # The name that means "production" when a zone's environments are listed; per-zone
    # overrides as a JSON object {"<zone id>": "<name>"}.
    production_environment: str = "Production"
    production_environment_by_zone: dict[str, str] = Field(default_factory=dict)
    environments_ttl_s: float = Field(300, gt=0)

    http_timeout_s: float = Field(30, gt=0)
    # A batch handed to a worker and not settled within this many seconds goes back to pending.
    lease_s: float = Field(120, gt=0)
    # How often each worker looks for lanes nobody is flushing and for expired leases.
    sweep_interval_s: float = Field(5, gt=0)
    # Transient failures (5xx, timeouts, dropped connections): back off and try again, up to
    # max_attempts sends of an item or until it has waited max_age_s; then it is dead-lettered.
    retry_base_s: float = Field(1, gt=0)
    retry_max_s: float = Field(60, gt=0)
    max_attempts: int = Field(12, ge=1)
    max_age_s: float = Field(6 * 3600, gt=0)
    # With no Retry-After or rate-limit header on a 429, wait this long, doubling per 429 in a
    # row, up to retry_max_s.
    throttle_guess_s: float = Field(1, gt=0)
    # Error 1136 (URL purge in an environment filtered by IP, country, ASN or threat score):
    # "prefix" purges the URL's host and path as a prefix instead (more is purged, which is
    # safe); "dead-letter" records it as refused.
    on_1136: Literal["prefix", "dead-letter"] = "prefix"
    # While a zone is paused by a 401/403, one send is tried this often to see if it works again.
    pause_probe_s: float = Field(30, gt=0)

    # Producer side: items per Redis round trip when staging a file (and per slice when a busy
    # lane takes a staged file slice by slice).
    enqueue_chunk: int = Field(5000, ge=1, le=100_000)
    receipt_ttl_s: int = Field(7 * 24 * 3600, gt=0)

    # The HTTP ingest (zonepurge serve): its tokens, as JSON [{"token", "zones",
    # "environments"}], and the largest request body it reads (1 MiB: some 10,000 URLs).
    ingest_tokens: list[IngestToken] = Field(default_factory=list)
    ingest_max_body_bytes: int = Field(1024 * 1024, ge=1024)

    queue: str = "zonepurge"

    # Workers serve Prometheus metrics on this port when set (zonepurge/metrics.py).
    metrics_port: int | None = Field(None, ge=1, le=65535)
    # "text" for people, "json" for a log pipeline: one object per line (zonepurge/logs.py).
    log_format: Literal["text", "json"] = "text"

    @field_validator("plan", mode="before")
    @classmethod
    def _plan_lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("cloudflare_api_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("ingest_tokens")
    @classmethod
    def _tokens_unique(cls, tokens: list[IngestToken]) -> list[IngestToken]:
        secrets = [t.token.get_secret_value() for t in tokens]
        if len(set(secrets)) != len(secrets):
            raise ValueError("a token is listed twice; give each its zones and environments once")
        return tokens

    @field_validator("redis_url", "celery_broker_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL, e.g. redis://localhost:6379/0")
        return value

    @model_validator(mode="after")
    def _lease_outlives_a_call(self) -> Settings:
        # A lease that expires while its call is still running sends the batch twice.
        if self.lease_s <= self.http_timeout_s * 2:
            raise ValueError(
                f"ZONEPURGE_LEASE_S ({self.lease_s:g}) must be more than twice "
                f"ZONEPURGE_HTTP_TIMEOUT_S ({self.http_timeout_s:g})"
            )
        return self

    @property
    def api_target(self) -> tuple[str, SecretStr] | None:
        """Base URL and token to purge with: Cloudflare's with a token, else the sandbox's if
        ZONEPURGE_SANDBOX_URL is set, else None."""
        if self.cloudflare_api_token is not None:
            return self.cloudflare_base_url, self.cloudflare_api_token
        if self.sandbox_url:
            from zonepurge.sandbox.config import DEFAULT_TOKEN

            return self.sandbox_url, SecretStr(DEFAULT_TOKEN)
        return None

    @field_validator("general_limit")
    @classmethod
    def _general_limit_form(cls, value: str) -> str:
        if value.strip() and not _GENERAL_LIMIT.match(value.strip()):
            raise ValueError('must be "<requests>/<seconds>", e.g. "1200/300", or empty')
        return value.strip()

    @property
    def general_limit_spec(self) -> tuple[int, float] | None:
        if not self.general_limit:
            return None
        requests, seconds = self.general_limit.split("/")
        return int(requests), float(seconds)

    def account_of(self, zone: str) -> str:
        for account, zones in self.accounts.items():
            if zone in zones:
                return account
        return "default"

    @property
    def broker_url(self) -> str:
        return self.celery_broker_url or self.redis_url

    @property
    def limits(self) -> PlanLimits:
        """The plan's limits with any overrides applied."""
        base = PLAN_LIMITS[self.plan]
        return PlanLimits(
            flex_rate_per_s=self.flex_rate_per_s or base.flex_rate_per_s,
            flex_burst=self.flex_burst or base.flex_burst,
            flex_items_per_request=self.flex_items_per_request or base.flex_items_per_request,
            url_rate_per_s=self.url_rate_per_s or base.url_rate_per_s,
            url_burst=self.url_burst or base.url_burst,
            url_items_per_request=self.url_items_per_request or base.url_items_per_request,
        )

    def production_name(self, zone: str) -> str:
        return self.production_environment_by_zone.get(zone, self.production_environment)


def variable_name(field: str) -> str:
    """The environment variable that sets a field (given by name or by alias)."""
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        choices = [str(c) for c in alias.choices] if isinstance(alias, AliasChoices) else []
        if field == name or field in choices:
            return choices[0] if choices else "ZONEPURGE_" + name.upper()
    return field


def describe_settings_error(exc: ValidationError | SettingsError) -> list[str]:
    """One line per bad setting, named as the variable the user set. Never echoes a value: the
    value might be the token."""
    if isinstance(exc, SettingsError):
        match = re.search(r'field "(\w+)"', str(exc))
        where = variable_name(match.group(1)) if match else "a setting"
        return [f"{where}: cannot be parsed (JSON expected)"]
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = error["loc"]
        where = variable_name(str(loc[0])) if loc else "settings"
        # Inside a JSON setting: ZONEPURGE_INGEST_TOKENS[0].zones
        where += "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc[1:])
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return lines


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
