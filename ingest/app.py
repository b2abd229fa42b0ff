"""The ingest's FastAPI application.

Routes (``/openapi.json`` describes them)::

    POST /client/v4/zones/{zone}/purge_cache                      and .../invalidate_cache
    POST /client/v4/zones/{zone}/environments/{ref}/purge_cache   and .../invalidate_cache
    GET  /client/v4/zones/{zone}/environments
    GET  /v1/receipts/{id}
    GET  /health                          the process is up
    GET  /ready                           and Redis answers

A purge goes through, in order: the token (401), the zone in its scope (403), the body's size
(413), the body (400, each bad item named), the environment, by ref or name (404 if the zone has
none such), the environment in the token's scope (403), and the enqueue (503 if Redis cannot be
reached). Blocking work (validation, Redis, Cloudflare's environment list, the broker) runs in
the thread pool, so a slow call holds a thread, never the event loop.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from importlib.metadata import version
from typing import Annotated, Any

import redis
from fastapi import Depends, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest import envelope as env
from ingest.auth import Grant, TokenRing
from ingest.bodies import PURGE_BODY_SCHEMA, NotAnObjectError, purge_request
from producer import Producer, Receipt, RequestError, UnavailableError, UnknownEnvironmentError
from zonepurge import metrics
from zonepurge.cloudflare import CloudflareError
from zonepurge.items import Mode
from zonepurge.lanes import Lane
from zonepurge.model import check_zone
from zonepurge.receipts import ReceiptReport, read_receipt
from zonepurge.runtime import Runtime

API = "/client/v4"
# A request with more bad items than this is answered with this many errors and a count of the
# rest, so that a refusal stays smaller than the request.
MAX_ERRORS = 1000

log = logging.getLogger("zonepurge.ingest")
access_log = logging.getLogger("zonepurge.ingest.access")

ZonePath = Annotated[str, Path(description="Cloudflare's zone id (32 hexadecimal characters)",
                                pattern="^[0-9a-fA-F]{32}$")]
RefPath = Annotated[str, Path(description="the environment's ref, as Cloudflare's clients send "
                                          "it, or its name (any case)")]


def _path_problem(error: dict[str, Any]) -> str:
    """A path parameter's problem in the words every producer uses (zonepurge.model)."""
    if error["loc"][-1] == "zone" and isinstance(error.get("input"), str):
        try:
            check_zone(error["input"])
        except ValueError as exc:
            return str(exc)
    return str(error["msg"])


class Health(BaseModel):
    status: str
    detail: str | None = None


def _refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    described = {
        400: "the request is invalid: one error per bad item or field",
        401: "no ingest token, or an unknown one",
        403: "the token may not purge (or read) this zone or environment",
        404: "no such environment, receipt or route",
        413: "the body is larger than ZONEPURGE_INGEST_MAX_BODY_BYTES",
        502: "the zone's environments cannot be had from Cloudflare",
        503: "Redis cannot be reached: nothing was enqueued; try again",
    }
    return {s: {"model": env.ErrorEnvelope, "description": described[s]} for s in statuses}


class _OutOfScopeError(Exception):
    """The token may not purge the environment the request resolved to."""


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as it is known to be larger than ``limit`` bytes."""
    too_large = env.IngestError(413, [(env.BODY_TOO_LARGE, f"the body is larger than {limit} "
                                       "bytes; split the purge, or enqueue a file with the CLI")])
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _problems(problems: list[str]) -> list[tuple[int, str]]:
    errors = [(env.INVALID_REQUEST, p) for p in problems[:MAX_ERRORS]]
    if len(problems) > MAX_ERRORS:
        errors.append((env.INVALID_REQUEST, f"… and {len(problems) - MAX_ERRORS} more problem(s)"))
    return errors


class AccessLog:
    """One line per request: client, method, path (no query string), status, time, and which
    token by its label. Never a header, hence never a token (uvicorn's own access log is off)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            client = scope.get("client") or ("-", 0)
            access_log.info('%s "%s %s" %d %.1fms %s', client[0], scope["method"], scope["path"],
                            status, (time.perf_counter() - started) * 1000,
                            scope.get("state", {}).get("token", "-"))


def create_app(runtime: Runtime | None = None) -> FastAPI:
    """The ingest, enqueueing through ``runtime`` (built from the settings when not given)."""
    runtime = runtime or Runtime()
    settings = runtime.settings
    producer = Producer(runtime)
    ring = TokenRing(settings.ingest_tokens)
    bearer = HTTPBearer(auto_error=False, scheme_name="ingestToken",
                        description="An ingest token from ZONEPURGE_INGEST_TOKENS")

    app = FastAPI(
        title="zonepurge ingest",
        version=version("zonepurge"),
        description="Cloudflare's cache purge API in front of zonepurge's queue: purges are "
                    "validated, deduplicated and enqueued, and answered with Cloudflare's "
                    "envelope, `result.id` being a receipt that follows them to purged or "
                    "dead-lettered.",
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.add_middleware(AccessLog)
    _handle_errors(app)
    _document_refusals_as_sent(app)

    async def authenticated(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> Grant:
        grant = ring.find(credentials.credentials if credentials is not None else None)
        if grant is None:
            raise env.IngestError(401, [(env.AUTHENTICATION_ERROR, "Authentication error: give "
                                         "an ingest token as 'Authorization: Bearer <token>'")],
                                  {"WWW-Authenticate": 'Bearer realm="zonepurge"'})
        request.state.token = grant.label  # for the access log
        return grant

    # As a default, not in an Annotated alias: annotations are strings here (``from __future__
    # import annotations``), which FastAPI resolves in the module's globals, not in this scope.
    token = Depends(authenticated)

    def in_zone(grant: Grant, zone: str) -> None:
        if not grant.allows_zone(zone):
            raise env.IngestError(403, [(env.AUTHENTICATION_ERROR,
                                         f"this token may not purge zone {zone[:64]!r}")])

    def enqueue(grant: Grant, zone: str, ref: str | None, mode: Mode, raw: bytes) -> Receipt:
        def authorize(lane: Lane) -> None:
            if not grant.allows_environment(lane.env, settings.production_name(lane.zone)):
                raise _OutOfScopeError(f"this token may not purge environment {lane.env.describe()} "
                                       f"of zone {lane.zone}")

        try:
            return producer.enqueue(purge_request(zone, ref, mode, raw), authorize)
        except NotAnObjectError as exc:
            raise env.IngestError(400, [(env.NOT_A_JSON_OBJECT, str(exc))]) from None
        except RequestError as exc:
            raise env.IngestError(400, _problems(exc.problems)) from None
        except UnknownEnvironmentError as exc:
            raise env.IngestError(404, [(env.UNKNOWN_ENVIRONMENT, str(exc))]) from None
        except _OutOfScopeError as exc:
            raise env.IngestError(403, [(env.AUTHENTICATION_ERROR, str(exc))]) from None

    async def purge(request: Request, grant: Grant, zone: str, ref: str | None,
                    mode: Mode) -> dict[str, Any]:
        in_zone(grant, zone)
        raw = await _read_body(request, settings.ingest_max_body_bytes)
        receipt = await run_in_threadpool(enqueue, grant, zone, ref, mode, raw)
        return env.success({"id": receipt.id}, receipt.warnings)

    purge_doc: dict[str, Any] = {
        "response_model": env.Envelope[env.PurgeResult],
        "responses": _refusals(400, 401, 403, 404, 413, 503),
        "openapi_extra": {"requestBody": {"required": True, "content": {
            "application/json": {"schema": PURGE_BODY_SCHEMA}}}},
        "tags": ["purge"],
    }
    for action, mode in (("purge_cache", Mode.PURGE), ("invalidate_cache", Mode.INVALIDATE)):
        verb = "Purge" if mode is Mode.PURGE else "Invalidate (soft purge)"

        def for_zone(mode: Mode = mode) -> Any:
            async def endpoint(request: Request, zone: ZonePath, grant: Grant = token) -> dict[str, Any]:
                return await purge(request, grant, zone, None, mode)
            return endpoint

        def for_environment(mode: Mode = mode) -> Any:
            async def endpoint(request: Request, zone: ZonePath, ref: RefPath,
                               grant: Grant = token) -> dict[str, Any]:
                return await purge(request, grant, zone, ref, mode)
            return endpoint

        app.add_api_route(f"{API}/zones/{{zone}}/{action}", for_zone(), methods=["POST"],
                          operation_id=f"zone_{action}",
                          summary=f"{verb} in production (every environment, for purge_everything)",
                          **purge_doc)
        app.add_api_route(f"{API}/zones/{{zone}}/environments/{{ref}}/{action}", for_environment(),
                          methods=["POST"], operation_id=f"environment_{action}",
                          summary=f"{verb} in one environment", **purge_doc)

    @app.get(f"{API}/zones/{{zone}}/environments", tags=["environments"],
             response_model=env.Envelope[env.EnvironmentList],
             responses=_refusals(400, 401, 403, 502, 503),
             summary="The zone's environments, from zonepurge's cached list")
    async def environments(zone: ZonePath, grant: Grant = token) -> dict[str, Any]:
        try:
            zone = check_zone(zone)
        except ValueError as exc:
            raise env.IngestError(400, [(env.INVALID_REQUEST, f"zone: {exc}")]) from None
        in_zone(grant, zone)
        try:
            listed = await run_in_threadpool(runtime.directory.listing, zone)
        except CloudflareError as exc:
            raise env.IngestError(502, [(env.ENVIRONMENTS_UNAVAILABLE, str(exc))]) from None
        return env.success({"environments": [asdict(e) for e in listed]})

    @app.get("/v1/receipts/{receipt_id}", tags=["receipts"],
             response_model=env.Envelope[ReceiptReport],
             responses=_refusals(401, 403, 404, 503),
             summary="What became of a purge: items purged, dead-lettered, still pending")
    async def receipt(receipt_id: Annotated[str, Path(description="result.id of a purge")],
                      grant: Grant = token) -> dict[str, Any]:
        report = await run_in_threadpool(read_receipt, runtime.store, receipt_id)
        if report is None:
            raise env.IngestError(404, [(env.UNKNOWN_RECEIPT, "no such receipt (or its TTL, "
                                         "ZONEPURGE_RECEIPT_TTL_S, has passed)")])
        if not grant.allows_zone(report.zone):
            raise env.IngestError(403, [(env.AUTHENTICATION_ERROR,
                                         "this token may not read receipts of that zone")])
        return env.success(report.model_dump(mode="json"))

    @app.get("/health", tags=["operations"], response_model=Health, response_model_exclude_none=True,
             summary="The process is up")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"], response_model=Health, response_model_exclude_none=True,
             responses={503: {"model": Health, "description": "Redis does not answer"}},
             summary="Redis answers: purges can be accepted")
    async def ready() -> Response | dict[str, Any]:
        try:
            await run_in_threadpool(runtime.store.redis.ping)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            return JSONResponse({"status": "unavailable",
                                 "detail": f"cannot reach Redis ({type(exc).__name__})"},
                                status_code=503)
        return {"status": "ready"}

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def prometheus_metrics() -> Response:
        """Prometheus metrics: items enqueued here, and the queue's state (zonepurge/metrics.py)."""
        from prometheus_client import CONTENT_TYPE_LATEST

        body = await run_in_threadpool(metrics.exposition, runtime)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app


def _document_refusals_as_sent(app: FastAPI) -> None:
    """FastAPI documents a 422 for every operation with parameters; the ingest answers a bad
    parameter with 400 in Cloudflare's envelope (``_handle_errors``), so the 422s go."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _handle_errors(app: FastAPI) -> None:
    """Every refusal in Cloudflare's envelope."""

    @app.exception_handler(env.IngestError)
    async def ingest_error(request: Request, exc: env.IngestError) -> Response:
        return env.failure(exc.status, exc.errors, exc.headers)

    @app.exception_handler(UnavailableError)
    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    async def unavailable(request: Request, exc: Exception) -> Response:
        log.warning("Redis cannot be reached: %s", type(exc).__name__)
        return env.failure(503, [(env.QUEUE_UNAVAILABLE, "the queue (Redis) cannot be reached; "
                                  "nothing was enqueued, try again")], {"Retry-After": "5"})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        code = {404: env.NO_ROUTE, 405: env.METHOD_NOT_ALLOWED}.get(exc.status_code, env.NO_ROUTE)
        return env.failure(exc.status_code, [(code, str(exc.detail))], exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        # loc is ("path", "zone"): named as the body's problems are, "zone: ..."
        problems = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {_path_problem(e)}"
                    for e in exc.errors()]
        return env.failure(400, _problems(problems))
