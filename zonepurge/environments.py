"""Environment names and refs of a zone, from ``GET /zones/{zone}/environments``, cached in Redis.

People name environments ("Staging"); Cloudflare's purge endpoint takes a ref. The list is cached
for ``ZONEPURGE_ENVIRONMENTS_TTL_S`` and fetched again whenever a name or ref is not in it, since
environments can be created at any time. Production is the environment named
``ZONEPURGE_PRODUCTION_ENVIRONMENT`` (per zone: ``ZONEPURGE_PRODUCTION_ENVIRONMENT_BY_ZONE``) and
is purged through the zone endpoint, so it resolves to the production target, never to a ref.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

from zonepurge.cloudflare import CloudflareClient, CloudflareError, Environment
from zonepurge.lanes import PRODUCTION_TARGET, EnvTarget
from zonepurge.settings import Settings
from zonepurge.store import Store


class UnknownEnvironmentError(LookupError):
    """The zone has no environment of that name or ref."""

    def __init__(self, zone: str, wanted: str, known: list[Environment]) -> None:
        names = ", ".join(e.name for e in known) or "none"
        super().__init__(f"zone {zone} has no environment named or with ref {wanted!r} "
                         f"(it has: {names})")
        self.zone = zone
        self.wanted = wanted


class EnvironmentDirectory:
    """Resolves environment names and refs to purge targets."""

    def __init__(self, store: Store, settings: Settings,
                 client_factory: Callable[[], CloudflareClient | None]) -> None:
        self._store = store
        self._settings = settings
        self._client_factory = client_factory

    def resolve(self, zone: str, wanted: str | None) -> EnvTarget:
        """The target for an environment given by name (any case) or ref; production if None.

        Raises UnknownEnvironmentError when Cloudflare's list does not have it, and
        CloudflareError when the list cannot be had (no token, network, permission).
        """
        if wanted is None:
            return PRODUCTION_TARGET
        production = self._settings.production_name(zone)
        if wanted.casefold() == production.casefold():
            return PRODUCTION_TARGET
        cached = self._cached(zone)
        found = self._find(zone, wanted, cached) if cached is not None else None
        if found is None:
            fresh = self.refresh(zone)
            found = self._find(zone, wanted, fresh)
            if found is None:
                raise UnknownEnvironmentError(zone, wanted, fresh)
        return found

    def resolve_or_defer(self, zone: str, wanted: str | None) -> tuple[EnvTarget, str | None]:
        """Like ``resolve``, but when the list cannot be fetched, a target that names the
        environment for the worker to resolve later (or dead-letter with the reason), and why
        it could not be checked now."""
        try:
            return self.resolve(zone, wanted), None
        except CloudflareError as exc:
            return EnvTarget(name=wanted), str(exc)

    def listing(self, zone: str) -> list[Environment]:
        """The zone's environments: the cached list, else fetched (and cached) now.

        Raises CloudflareError when the list is not cached and cannot be had.
        """
        cached = self._cached(zone)
        return cached if cached is not None else self.refresh(zone)

    def refresh(self, zone: str) -> list[Environment]:
        client = self._client_factory()
        if client is None:
            raise CloudflareError("no Cloudflare API token is set, so environments cannot be listed")
        environments = client.list_environments(zone)
        self._store.cache_environments(zone, [asdict(e) for e in environments],
                                       self._settings.environments_ttl_s)
        return environments

    def _cached(self, zone: str) -> list[Environment] | None:
        raw = self._store.cached_environments(zone)
        return [Environment(**e) for e in raw] if raw is not None else None

    def _find(self, zone: str, wanted: str, environments: list[Environment]) -> EnvTarget | None:
        production = self._settings.production_name(zone).casefold()
        for env in environments:
            if env.ref == wanted or env.name.casefold() == wanted.casefold():
                return PRODUCTION_TARGET if env.name.casefold() == production else EnvTarget(ref=env.ref, label=env.name)
        return None
