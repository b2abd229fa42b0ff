"""The sandbox: an ASGI app that answers like Cloudflare's purge API, plus admin endpoints.

Cloudflare endpoints (under ``/client/v4``, ``Authorization: Bearer <token>``)::

    GET  /zones/{zone}/environments
    POST /zones/{zone}/purge_cache              POST /zones/{zone}/invalidate_cache
    POST /zones/{zone}/environments/{ref}/purge_cache
    POST /zones/{zone}/environments/{ref}/invalidate_cache

A call to them goes through, in order: injected latency, one fault draw (dropped connection,
5xx, forced 429), authentication, the token's general API limit (if configured), the zone
(id format, token scope, existence), the environment, body validation and per-request caps,
error 1136, ``reject_items``, and last the account's token bucket. Whatever refuses a call
first answers it, so a refused call never reaches the bucket and takes no tokens.

Admin endpoints (no auth) live under ``/__sandbox``: ``health``, ``purges``, ``calls``,
``stats`` (counts only: cheap to poll while a million URLs are purged), ``faults`` (GET/POST),
``limits``, ``reset`` (POST) and ``zones/{zone}`` (PUT). Error codes are
listed in :mod:`zonepurge.sandbox.validation`.

Tokens are compared, never stored in logs, records or responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from zonepurge.plans import PLAN_LIMITS, PlanLimits
from zonepurge.sandbox.buckets import BlockingWindow, Clock, TokenBucket, retry_after_header
from zonepurge.sandbox.config import (
    EnvironmentSpec,
    FaultSettings,
    LimitOverrides,
    ResetRequest,
    SandboxConfig,
    ZoneBody,
    ZoneSpec,
    is_zone_id,
)
from zonepurge.sandbox.validation import (
    AUTHENTICATION_ERROR,
    BAD_ADMIN_REQUEST,
    INJECTED_SERVER_ERROR,
    INVALID_OBJECT_ID,
    NO_ROUTE,
    PRODUCTION_ON_ENVIRONMENT_ENDPOINT,
    RATE_LIMITED,
    UNKNOWN_ENVIRONMENT,
    UNKNOWN_ZONE,
    ApiError,
    Bucket,
    PurgeRequest,
    check_environment,
    describe,
    item_text,
    parse_json_object,
    validate_purge,
)

logger = logging.getLogger("zonepurge.sandbox")

API_PREFIX = "/client/v4"
ADMIN_PREFIX = "/__sandbox"

Sleep = Callable[[float], Awaitable[None]]
# Installed by server.run on app.state.abort_connection: closes the TCP connection of the
# client at that (host, port) without a response; False if it could not.
AbortConnection = Callable[[tuple[str, int]], bool]


class ConnectionDropped(RuntimeError):
    """Raised by the app to cut a response short when no server hook can close the socket
    (for example under Starlette's TestClient, where it surfaces in the test)."""


class _Drop(Exception):
    """Internal: the fault draw chose a dropped connection."""


class SandboxState:
    """Everything the sandbox remembers between calls. Not thread-safe: one event loop."""

    def __init__(self, config: SandboxConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.zones: dict[str, ZoneSpec] = {}
        self.faults = config.faults
        self.purges: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self.reset(ResetRequest(), clear_faults=False)

    def reset(self, request: ResetRequest, *, clear_faults: bool = True) -> None:
        given = request.model_fields_set
        self.plan = request.plan if request.plan is not None else self.config.plan
        overrides = request.limits if "limits" in given else self.config.limits
        self.global_limit = (
            request.global_limit if "global_limit" in given else self.config.global_limit
        )
        self.limits: PlanLimits = (overrides or LimitOverrides()).apply(PLAN_LIMITS[self.plan])
        self.rng = random.Random(request.seed if request.seed is not None else self.config.seed)
        if clear_faults:
            self.faults = FaultSettings()
        # Zones go back to the config's (an automatic zone comes back with the same refs), so
        # that one test's PUT zones/... does not leak into the next.
        self.zones = {z.id: z for z in self.config.zones}
        self.purges.clear()
        self.calls.clear()
        self.items_purged = 0
        # New, full buckets and windows, built lazily from the (possibly new) limits.
        self._buckets: dict[tuple[str, Bucket], TokenBucket] = {}
        self._windows: dict[int, BlockingWindow] = {}

    def bucket(self, account: str, name: Bucket) -> TokenBucket:
        key = (account, name)
        if key not in self._buckets:
            lim = self.limits
            rate, burst = (
                (lim.url_rate_per_s, lim.url_burst)
                if name == "urls"
                else (lim.flex_rate_per_s, lim.flex_burst)
            )
            self._buckets[key] = TokenBucket(rate, burst, self.clock)
        return self._buckets[key]

    def window(self, token_index: int) -> BlockingWindow | None:
        """The general-limit window of a token (keyed by its position in the config)."""
        if self.global_limit is None:
            return None
        if token_index not in self._windows:
            self._windows[token_index] = BlockingWindow(
                self.global_limit.requests, self.global_limit.window_s, self.clock
            )
        return self._windows[token_index]

    def describe_limits(self) -> dict[str, Any]:
        return {
            "plan": self.plan.value,
            "limits": dataclasses.asdict(self.limits),
            "global_limit": self.global_limit.model_dump() if self.global_limit else None,
        }


# --- responses ---------------------------------------------------------------------------


def _success(result: Any) -> JSONResponse:
    return JSONResponse({"success": True, "errors": [], "messages": [], "result": result})


def _failure(err: ApiError) -> JSONResponse:
    body = {
        "success": False,
        "errors": [{"code": err.code, "message": err.message}],
        "messages": [],
        "result": None,
    }
    return JSONResponse(body, status_code=err.status, headers=err.headers)


def _throttled(wait_s: float, message: str) -> ApiError:
    return ApiError(
        429, RATE_LIMITED, message, {"Retry-After": str(retry_after_header(wait_s))}
    )


def _bad_admin_request(message: str) -> JSONResponse:
    return _failure(ApiError(400, BAD_ADMIN_REQUEST, message))


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
    )


class _CutResponse(Response):
    """Starts a response, then fails before its body: the best a plain ASGI app can do to
    look like a dropped connection when the server gives it no way to close the socket."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 502,
                "headers": [(b"content-length", b"64"), (b"content-type", b"application/json")],
            }
        )
        raise ConnectionDropped("sandbox fault: connection dropped")


# --- the app -----------------------------------------------------------------------------


class _Sandbox:
    def __init__(self, state: SandboxState, sleep: Sleep) -> None:
        self.state = state
        self.sleep = sleep

    # Cloudflare endpoints ------------------------------------------------------------------

    async def list_environments(self, request: Request) -> Response:
        return await self._call(request, "list_environments", self._list_environments)

    async def purge_cache(self, request: Request) -> Response:
        return await self._call(request, "purge_cache", self._purge)

    async def invalidate_cache(self, request: Request) -> Response:
        return await self._call(request, "invalidate_cache", self._purge)

    async def _call(
        self,
        request: Request,
        action: str,
        handler: Callable[[Request, dict[str, Any], str], Awaitable[Response]],
    ) -> Response:
        """Run one Cloudflare call and log it in ``calls``, whatever its outcome."""
        call: dict[str, Any] = {
            "at": self.state.clock(),
            "method": request.method,
            "path": request.url.path,
            "zone": request.path_params["zone"],
            "environment": request.path_params.get("ref"),
            "action": action,
            "kind": None,
            "items": 0,
            "status": None,
            "code": None,
            "retry_after": None,
            "bucket": None,
            "account": None,
            # Which injected fault answered the call, if any: drop, error, throttle, reject.
            "fault": None,
        }
        # Logged on arrival, so the list is in arrival order even when latency interleaves calls.
        self.state.calls.append(call)
        try:
            response = await handler(request, call, action)
        except ApiError as err:
            response = _failure(err)
            call["code"] = err.code
            if "Retry-After" in err.headers:
                call["retry_after"] = int(err.headers["Retry-After"])
        except _Drop:
            call["fault"] = "drop"
            # status stays None: the client gets no response at all.
            response = await self._drop_connection(request)
        if call["fault"] != "drop":
            call["status"] = response.status_code
        if call["fault"]:
            logger.info("sandbox fault %r on %s %s", call["fault"], call["method"], call["path"])
        return response

    async def _faults_first(self, call: dict[str, Any]) -> None:
        """Latency, then one draw of the seeded RNG to pick at most one fault."""
        faults = self.state.faults
        if faults.latency_ms > 0:
            await self.sleep(faults.latency_ms / 1000)
        # Always one draw per call, so the n-th call meets the same fault for a given seed
        # whatever the settings were before.
        draw = self.state.rng.random()
        if draw < faults.drop_probability:
            raise _Drop
        draw -= faults.drop_probability
        if draw < faults.error_probability:
            call["fault"] = "error"
            status = self.state.rng.choice(faults.error_statuses)
            raise ApiError(status, INJECTED_SERVER_ERROR, "Internal error (sandbox fault)")
        draw -= faults.error_probability
        if draw < faults.throttle_probability:
            call["fault"] = "throttle"
            raise ApiError(
                429,
                RATE_LIMITED,
                "You are being rate limited (sandbox fault)",
                {"Retry-After": str(faults.throttle_retry_after_s)},
            )

    def _authenticate(self, request: Request) -> int:
        """The index of the config token the request carries; 401 if none."""
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        presented = presented.strip()
        if scheme.lower() == "bearer" and presented:
            for index, spec in enumerate(self.state.config.tokens):
                if hmac.compare_digest(
                    spec.token.get_secret_value().encode(), presented.encode()
                ):
                    return index
        raise ApiError(401, AUTHENTICATION_ERROR, "Authentication error")

    def _general_limit(self, token_index: int) -> None:
        window = self.state.window(token_index)
        if window is not None and (wait := window.hit()) > 0:
            raise _throttled(wait, "Rate limited: too many API requests for this token")

    def _zone(self, zone_id: str, token_index: int) -> ZoneSpec:
        if not is_zone_id(zone_id):
            raise ApiError(
                400,
                INVALID_OBJECT_ID,
                "Could not route to this zone: the zone identifier is invalid",
            )
        # Scope before existence, so a scoped token cannot probe for other zones.
        if not self.state.config.tokens[token_index].allows(zone_id):
            raise ApiError(403, AUTHENTICATION_ERROR, "Authentication error")
        zone = self.state.zones.get(zone_id)
        if zone is None:
            if not self.state.config.auto_zones:
                raise ApiError(404, UNKNOWN_ZONE, "Zone not found")
            zone = ZoneSpec(id=zone_id, account=self.state.config.default_account)
            self.state.zones[zone_id] = zone
        return zone

    async def _enter(self, request: Request, call: dict[str, Any]) -> ZoneSpec:
        """The steps every Cloudflare endpoint shares, up to a zone the token may use."""
        await self._faults_first(call)
        token_index = self._authenticate(request)
        self._general_limit(token_index)
        zone = self._zone(call["zone"], token_index)
        call["account"] = zone.account
        return zone

    async def _list_environments(
        self, request: Request, call: dict[str, Any], action: str
    ) -> Response:
        zone = await self._enter(request, call)
        return _success({"environments": environment_listing(zone.environments)})

    async def _purge(self, request: Request, call: dict[str, Any], action: str) -> Response:
        raw = await request.body()
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            call["kind"], call["items"] = describe(json.loads(raw))
        zone = await self._enter(request, call)
        env = self._environment(zone, call["environment"])
        purge = validate_purge(parse_json_object(raw), self.state.limits)
        if env is not None:
            check_environment(purge, env.expression)
        self._reject_items(purge, call)

        call["bucket"] = purge.bucket
        wait = self.state.bucket(zone.account, purge.bucket).try_take(purge.cost)
        if wait > 0:
            what = "URL" if purge.bucket == "urls" else "tag/host/prefix/everything"
            raise _throttled(wait, f"Rate limited: the account's {what} purge budget is used up")

        purge_id = uuid.uuid4().hex
        self.state.purges.append(
            {
                "id": purge_id,
                "account": zone.account,
                "zone": zone.id,
                "environment": call["environment"],
                "action": action,
                "kind": purge.kind,
                "items": purge.items,
                "at": self.state.clock(),
            }
        )
        self.state.items_purged += len(purge.items)
        return _success({"id": purge_id})

    def _environment(self, zone: ZoneSpec, ref: str | None) -> EnvironmentSpec | None:
        """The environment a purge targets: production for the zone endpoint (None if the
        zone has no environments), else the one with that ref."""
        if ref is None:
            return next((e for e in zone.environments if e.production), None)
        env = next((e for e in zone.environments if e.ref == ref), None)
        if env is None:
            raise ApiError(404, UNKNOWN_ENVIRONMENT, "Environment not found")
        if env.production:
            raise ApiError(
                400,
                PRODUCTION_ON_ENVIRONMENT_ENDPOINT,
                "This is the production environment: purge it through the zone endpoint "
                "(/zones/{zone_id}/purge_cache)",
            )
        return env

    def _reject_items(self, purge: PurgeRequest, call: dict[str, Any]) -> None:
        for rule in self.state.faults.reject_items:
            if any(rule.match in item_text(item) for item in purge.items):
                call["fault"] = "reject"
                raise ApiError(400, rule.code, rule.message)

    async def _drop_connection(self, request: Request) -> Response:
        abort: AbortConnection | None = getattr(request.app.state, "abort_connection", None)
        client = request.scope.get("client")
        if abort is not None and client and abort((client[0], client[1])):
            # Let the server see the disconnect, so it neither sends a 500 nor logs an
            # unfinished response; whatever is returned afterwards goes nowhere.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(request.receive(), timeout=5)
            return Response(status_code=204)
        return _CutResponse()

    # Admin endpoints -----------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def purges(self, request: Request) -> Response:
        return JSONResponse(self.state.purges)

    async def calls(self, request: Request) -> Response:
        return JSONResponse(self.state.calls)

    async def stats(self, request: Request) -> Response:
        purges, calls = self.state.purges, self.state.calls
        return JSONResponse({
            "purges": len(purges),
            "items_purged": self.state.items_purged,
            "calls": len(calls),
            "throttled": sum(1 for c in calls if c["status"] == 429),
            "first_purge_at": purges[0]["at"] if purges else None,
            "last_purge_at": purges[-1]["at"] if purges else None,
        })

    async def limits(self, request: Request) -> Response:
        return JSONResponse(self.state.describe_limits())

    async def faults(self, request: Request) -> Response:
        if request.method == "POST":
            body = await _admin_body(request)
            if isinstance(body, Response):
                return body
            try:
                # Partial update: the keys given replace the current ones.
                self.state.faults = FaultSettings.model_validate(
                    {**self.state.faults.model_dump(), **body}
                )
            except ValidationError as exc:
                return _bad_admin_request(_validation_message(exc))
        return JSONResponse(self.state.faults.model_dump())

    async def reset(self, request: Request) -> Response:
        body = await _admin_body(request, allow_empty=True)
        if isinstance(body, Response):
            return body
        try:
            reset = ResetRequest.model_validate(body)
        except ValidationError as exc:
            return _bad_admin_request(_validation_message(exc))
        self.state.reset(reset)
        return JSONResponse(self.state.describe_limits())

    async def put_zone(self, request: Request) -> Response:
        zone_id = request.path_params["zone"]
        body = await _admin_body(request)
        if isinstance(body, Response):
            return body
        try:
            spec = ZoneBody.model_validate(body)
            zone = ZoneSpec(id=zone_id, account=spec.account, environments=spec.environments)
        except ValidationError as exc:
            return _bad_admin_request(_validation_message(exc))
        self.state.zones[zone_id] = zone
        return JSONResponse(
            {
                "id": zone.id,
                "account": zone.account,
                "environments": environment_listing(zone.environments),
            }
        )


async def _admin_body(request: Request, *, allow_empty: bool = False) -> dict[str, Any] | Response:
    raw = await request.body()
    if allow_empty and not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _bad_admin_request("body is not valid JSON")
    if not isinstance(body, dict):
        return _bad_admin_request("body must be a JSON object")
    return body


def environment_listing(environments: list[EnvironmentSpec]) -> list[dict[str, Any]]:
    """Environments as Cloudflare lists them: an ordered chain whose ``position`` names the
    neighbours (``after``: the previous environment's ref, ``before``: the next one's)."""
    listing = []
    for i, env in enumerate(environments):
        position: dict[str, str] = {}
        if i > 0:
            position["after"] = str(environments[i - 1].ref)
        if i + 1 < len(environments):
            position["before"] = str(environments[i + 1].ref)
        listing.append(
            {
                "name": env.name,
                "ref": env.ref,
                "version": env.version,
                "expression": env.expression,
                "locked_on_deployment": env.locked_on_deployment,
                "position": position,
            }
        )
    return listing


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    return _failure(ApiError(status, NO_ROUTE, "No route for that URI"))


def create_app(
    config: SandboxConfig,
    clock: Clock = time.monotonic,
    *,
    sleep: Sleep = asyncio.sleep,
) -> Starlette:
    """Build the sandbox app. ``clock`` drives buckets and timestamps (seconds); ``sleep``
    serves injected latency (tests pass fakes for both)."""
    sandbox = _Sandbox(SandboxState(config, clock), sleep)
    zone = f"{API_PREFIX}/zones/{{zone}}"
    routes = [
        Route(f"{zone}/environments", sandbox.list_environments, methods=["GET"]),
        Route(f"{zone}/purge_cache", sandbox.purge_cache, methods=["POST"]),
        Route(f"{zone}/invalidate_cache", sandbox.invalidate_cache, methods=["POST"]),
        Route(f"{zone}/environments/{{ref}}/purge_cache", sandbox.purge_cache, methods=["POST"]),
        Route(
            f"{zone}/environments/{{ref}}/invalidate_cache",
            sandbox.invalidate_cache,
            methods=["POST"],
        ),
        Route(f"{ADMIN_PREFIX}/health", sandbox.health, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/purges", sandbox.purges, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/calls", sandbox.calls, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/stats", sandbox.stats, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/limits", sandbox.limits, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/faults", sandbox.faults, methods=["GET", "POST"]),
        Route(f"{ADMIN_PREFIX}/reset", sandbox.reset, methods=["POST"]),
        Route(f"{ADMIN_PREFIX}/zones/{{zone}}", sandbox.put_zone, methods=["PUT"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_found})
    app.state.sandbox = sandbox.state
    app.state.abort_connection = None
    return app
