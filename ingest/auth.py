"""Who may purge what through the ingest: its bearer tokens and their scopes.

A presented token is compared with every configured one, each time all of them, as SHA-256
digests through ``hmac.compare_digest``: the time an answer takes says neither which token
matched nor how much of one did. A match yields a ``Grant``, which holds the token's scope and a
label for logs, never the token itself.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from zonepurge.lanes import EnvTarget
from zonepurge.settings import ANY, IngestToken

PRODUCTION = "production"


@dataclass(frozen=True, slots=True)
class Grant:
    """What one token may purge: zones by id, environments by name (any case) or ref."""

    label: str
    zones: tuple[str, ...]
    environments: tuple[str, ...]

    def allows_zone(self, zone: str) -> bool:
        return ANY in self.zones or zone.strip().lower() in self.zones

    def allows_environment(self, env: EnvTarget, production_name: str) -> bool:
        """Whether the token may purge ``env``, as the producer resolved it.

        Production answers to "production" and to the zone's production name. A resolved
        environment answers to its ref and its name. A name the ingest could not resolve (no
        Cloudflare access) answers only to that same name: a token scoped by ref or by another
        name is refused, since nothing says it is the same environment.
        """
        if ANY in self.environments:
            return True
        names = {e.casefold() for e in self.environments}
        if env.is_production:
            return PRODUCTION in names or production_name.casefold() in names
        if env.ref is not None:
            return env.ref in self.environments or (
                env.label is not None and env.label.casefold() in names)
        return env.name is not None and env.name.casefold() in names


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenRing:
    """The configured ingest tokens."""

    def __init__(self, tokens: list[IngestToken]) -> None:
        self._entries = [
            (_digest(t.token.get_secret_value()),
             Grant(t.name or f"token #{n}", tuple(t.zones), tuple(t.environments)))
            for n, t in enumerate(tokens, start=1)
        ]

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, presented: str | None) -> Grant | None:
        """The grant of the token presented, or None if it is none of ours."""
        if not presented:
            return None
        digest = _digest(presented)
        found = None
        for stored, grant in self._entries:  # no early exit: every token costs the same
            if hmac.compare_digest(digest, stored):
                found = grant
        return found
