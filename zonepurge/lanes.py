"""The job format: a lane is where purge items wait, and what a Celery flush task names.

A lane is one (zone, environment, kind, mode): exactly the set of items that can share one
Cloudflare request. Its id is a string, safe to use inside Redis keys and task arguments:

    {zone}:{environment}:{kind}:{mode}

where environment is ``@production`` for the zone endpoint, the percent-encoded ref for another
environment, or ``@name=<percent-encoded name>`` for an environment the producer could not resolve
(the worker resolves it, or dead-letters the items with the reason). Percent-encoding never yields
``@`` or ``:``, so the three forms cannot be confused.

Items in a lane are *members* (see ``zonepurge.items``) in a sorted set scored by the time, in
milliseconds since the epoch, they were first enqueued.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from zonepurge.items import Kind, Mode

PRODUCTION = "@production"
_NAME_PREFIX = "@name="


@dataclass(frozen=True, slots=True)
class EnvTarget:
    """Which environment's cache: production, a known ref, or a name still to resolve."""

    ref: str | None = None
    name: str | None = None
    # The environment's name when known, for people to read; not part of the lane's identity.
    label: str | None = field(default=None, compare=False)

    @property
    def is_production(self) -> bool:
        return self.ref is None and self.name is None

    def encode(self) -> str:
        if self.ref is not None:
            return quote(self.ref, safe="")
        if self.name is not None:
            return _NAME_PREFIX + quote(self.name, safe="")
        return PRODUCTION

    @classmethod
    def decode(cls, text: str) -> EnvTarget:
        if text == PRODUCTION:
            return cls()
        if text.startswith(_NAME_PREFIX):
            return cls(name=unquote(text[len(_NAME_PREFIX) :]))
        return cls(ref=unquote(text))

    def __str__(self) -> str:
        if self.ref is not None:
            return self.ref
        if self.name is not None:
            return f"{self.name} (unresolved)"
        return "production"

    def describe(self) -> str:
        """For messages: the name and the ref when both are known."""
        if self.ref is not None and self.label:
            return f"{self.label} (ref {self.ref})"
        return str(self)


PRODUCTION_TARGET = EnvTarget()


@dataclass(frozen=True, slots=True)
class Lane:
    zone: str
    env: EnvTarget
    kind: Kind
    mode: Mode

    @property
    def id(self) -> str:
        return f"{self.zone}:{self.env.encode()}:{self.kind.value}:{self.mode.value}"

    @classmethod
    def parse(cls, lane_id: str) -> Lane:
        zone, env, kind, mode = lane_id.split(":")
        return cls(zone, EnvTarget.decode(env), Kind(kind), Mode(mode))

    def with_(self, *, kind: Kind | None = None, mode: Mode | None = None,
              env: EnvTarget | None = None) -> Lane:
        return Lane(self.zone, env or self.env, kind or self.kind, mode or self.mode)

    def covering_everything_lanes(self) -> list[Lane]:
        """The purge-everything lanes whose purge would purge this lane's items too.

        A hard purge-everything covers hard and soft items, a soft one only soft items; one in
        this environment covers it, and one in production covers every environment of the zone.
        """
        modes = [Mode.PURGE] if self.mode is Mode.PURGE else [Mode.PURGE, Mode.INVALIDATE]
        envs = [self.env] if self.env.is_production else [self.env, PRODUCTION_TARGET]
        lanes = [Lane(self.zone, e, Kind.EVERYTHING, m) for e in envs for m in modes]
        return [lane for lane in lanes if lane != self]

    def __str__(self) -> str:
        return f"zone {self.zone} env {self.env} {self.kind.value} ({self.mode.value})"
