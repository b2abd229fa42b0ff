"""The sandbox's configuration: tokens, plan and limits, zones with their environments, faults.

Every field has a default, so ``SandboxConfig()`` is a working Cloudflare stand-in: one token
(``sandbox-token``), Enterprise limits, and zones created on first use with the three
environments of Cloudflare's documentation example. A JSON file with the same fields can be
loaded with :meth:`SandboxConfig.from_file`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from zonepurge.plans import PLAN_LIMITS, Plan, PlanLimits

DEFAULT_TOKEN = "sandbox-token"
DEFAULT_ACCOUNT = "sandbox-account"

ZONE_ID_RE = re.compile(r"[0-9a-f]{32}")


def is_zone_id(value: str) -> bool:
    """Cloudflare zone ids are 32 lowercase hex characters."""
    return ZONE_ID_RE.fullmatch(value) is not None


def environment_ref(zone_id: str, name: str) -> str:
    """A stable, opaque ref for an environment that was given none.

    Derived from (zone, name) so that restarts and re-created zones keep the same refs, and
    deliberately not the name itself: clients must use the ref they read from the listing.
    """
    return hashlib.sha256(f"{zone_id}/{name}".encode()).hexdigest()[:16]


class _Model(BaseModel):
    # Typos in a config file or an admin call should fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid")


class TokenSpec(_Model):
    """An API token the sandbox accepts; ``zones=None`` means every zone."""

    token: SecretStr
    zones: list[str] | None = None

    def allows(self, zone_id: str) -> bool:
        return self.zones is None or zone_id in self.zones


class EnvironmentSpec(_Model):
    """One environment of a zone (Cloudflare Version Management)."""

    name: str = Field(min_length=1)
    # None: derived from (zone, name) by the zone that holds it.
    ref: str | None = Field(default=None, min_length=1)
    expression: str = "true"
    # None: decided by the zone (see ZoneSpec.production).
    production: bool | None = None
    version: int = 1
    locked_on_deployment: bool = False


def default_environments() -> list[EnvironmentSpec]:
    """The docs' example: Production, Staging (filtered by edge IP), Development (by host).

    Staging selects its traffic by ``cf.edge.server_ip``, so Cloudflare refuses URL purges
    there (error 1136); Development selects by hostname, so every purge type works.
    """
    return [
        EnvironmentSpec(
            name="Production",
            expression='(cf.zone.name eq "example.com")',
            production=True,
            locked_on_deployment=True,
        ),
        EnvironmentSpec(
            name="Staging",
            expression='(cf.zone.name eq "example.com" and cf.edge.server_ip in {203.0.113.10})',
        ),
        EnvironmentSpec(
            name="Development",
            expression='(cf.zone.name eq "example.com" and http.host eq "dev.example.com")',
        ),
    ]


class ZoneBody(_Model):
    """A zone as an admin call or a config file describes it (without its id)."""

    account: str = Field(default=DEFAULT_ACCOUNT, min_length=1)
    environments: list[EnvironmentSpec] = Field(default_factory=default_environments)


class ZoneSpec(ZoneBody):
    """A zone with its id; refs and the production flag are filled in on validation.

    Production is the environment marked ``production: true``; if none is marked, the one
    named "Production" (any case); failing that, the first of the chain.
    """

    id: str

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not is_zone_id(value):
            raise ValueError("a zone id is 32 lowercase hex characters")
        return value

    @model_validator(mode="after")
    def _resolve_environments(self) -> ZoneSpec:
        # Copies: the same EnvironmentSpec objects may be handed to several zones.
        envs = [e.model_copy() for e in self.environments]
        marked = [i for i, e in enumerate(envs) if e.production]
        if len(marked) > 1:
            raise ValueError("at most one environment can be production")
        if envs and not marked:
            by_name = [i for i, e in enumerate(envs) if e.name.lower() == "production"]
            marked = by_name[:1] or [0]
        for i, env in enumerate(envs):
            env.production = i in marked
            if env.ref is None:
                env.ref = environment_ref(self.id, env.name)
        self.environments = envs
        refs = [e.ref for e in envs]
        if len(set(refs)) != len(refs):
            raise ValueError("environment refs must be unique within a zone")
        return self


class LimitOverrides(_Model):
    """Per-field overrides of the plan's :class:`~zonepurge.plans.PlanLimits`."""

    flex_rate_per_s: float | None = Field(default=None, gt=0)
    flex_burst: int | None = Field(default=None, ge=1)
    flex_items_per_request: int | None = Field(default=None, ge=1)
    url_rate_per_s: float | None = Field(default=None, gt=0)
    url_burst: int | None = Field(default=None, ge=1)
    url_items_per_request: int | None = Field(default=None, ge=1)

    def apply(self, limits: PlanLimits) -> PlanLimits:
        return dataclasses.replace(limits, **self.model_dump(exclude_none=True))


class GlobalLimit(_Model):
    """Cloudflare's general API limit: past ``requests`` in a window, every call of the token
    is refused for ``window_s`` seconds."""

    requests: int = Field(default=1200, ge=1)
    window_s: float = Field(default=300, gt=0)


class RejectRule(_Model):
    """Refuse (400) any purge holding an item that contains ``match``."""

    match: str = Field(min_length=1)
    code: int = Field(ge=1000)
    message: str


class FaultSettings(_Model):
    """Faults injected into the Cloudflare endpoints. Probabilities are per call, in [0, 1]."""

    error_probability: float = Field(default=0.0, ge=0, le=1)
    error_statuses: list[int] = Field(default_factory=lambda: [500, 502, 503], min_length=1)
    drop_probability: float = Field(default=0.0, ge=0, le=1)
    throttle_probability: float = Field(default=0.0, ge=0, le=1)
    throttle_retry_after_s: int = Field(default=1, ge=0)
    latency_ms: float = Field(default=0.0, ge=0)
    reject_items: list[RejectRule] = Field(default_factory=list)

    @field_validator("error_statuses")
    @classmethod
    def _check_statuses(cls, value: list[int]) -> list[int]:
        if any(not 500 <= s <= 599 for s in value):
            raise ValueError("error_statuses must be 5xx")
        return value

    @model_validator(mode="after")
    def _check_total(self) -> FaultSettings:
        # One draw per call picks at most one fault, so the three must fit in [0, 1].
        if self.error_probability + self.drop_probability + self.throttle_probability > 1:
            raise ValueError("error, drop and throttle probabilities add up to more than 1")
        return self


class ResetRequest(_Model):
    """Body of ``POST /__sandbox/reset``.

    A reset goes back to the config's plan, limits, global limit and seed; each key present
    here replaces that starting value (``"global_limit": null`` turns the general limit off).
    """

    plan: Plan | None = None
    limits: LimitOverrides | None = None
    global_limit: GlobalLimit | None = None
    seed: int | None = None


class SandboxConfig(_Model):
    """Everything the sandbox starts from. ``SandboxConfig()`` is ready to use."""

    tokens: list[TokenSpec] = Field(
        default_factory=lambda: [TokenSpec(token=SecretStr(DEFAULT_TOKEN))]
    )
    plan: Plan = Plan.ENTERPRISE
    limits: LimitOverrides = Field(default_factory=LimitOverrides)
    global_limit: GlobalLimit | None = None
    zones: list[ZoneSpec] = Field(default_factory=list)
    # An unknown (well-formed) zone id is created on first use, in default_account, with
    # default_environments().
    auto_zones: bool = True
    default_account: str = DEFAULT_ACCOUNT
    # Seeds the fault RNG, so a run with faults is reproducible.
    seed: int = 0
    # Faults active at start; POST /__sandbox/reset clears them.
    faults: FaultSettings = Field(default_factory=FaultSettings)

    @field_validator("tokens", mode="before")
    @classmethod
    def _tokens_from_strings(cls, value: Any) -> Any:
        # A bare string is a token valid for every zone.
        if isinstance(value, list):
            return [{"token": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _unique_zones(self) -> SandboxConfig:
        ids = [z.id for z in self.zones]
        if len(set(ids)) != len(ids):
            raise ValueError("zone ids must be unique")
        return self

    def effective_limits(self) -> PlanLimits:
        return self.limits.apply(PLAN_LIMITS[self.plan])

    @classmethod
    def from_file(cls, path: str | Path) -> SandboxConfig:
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))
