"""Cloudflare's response envelope, and the errors the ingest answers with.

Every answer under ``/client/v4`` and ``/v1`` is ``{"success", "errors", "messages", "result"}``,
as Cloudflare's are, so that a Cloudflare client reads the ingest's refusals as it reads
Cloudflare's. Error codes (clients should branch on the HTTP status; 10000 and 7000 are
Cloudflare's own, the 2xxx block is zonepurge's):

====== ====== =======================================================================
status code   meaning
====== ====== =======================================================================
400    2001   the purge request is invalid: one error per bad item or field
400    2002   the body is not a JSON object
401    10000  no ingest token, or an unknown one
403    10000  the token may not purge (or read) this zone or environment
404    2003   the zone has no such environment
404    2004   no such receipt (never was, or its TTL has passed)
404    7000   no such route
405    7001   method not allowed
413    2005   the body is larger than ZONEPURGE_INGEST_MAX_BODY_BYTES
502    2006   the zone's environments cannot be had from Cloudflare
503    2007   Redis cannot be reached: nothing was enqueued
====== ====== =======================================================================

``messages`` carries warnings of an accepted purge (code 2100): an environment that could not
be checked yet, a broker that could not be told.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

INVALID_REQUEST = 2001
NOT_A_JSON_OBJECT = 2002
UNKNOWN_ENVIRONMENT = 2003
UNKNOWN_RECEIPT = 2004
BODY_TOO_LARGE = 2005
ENVIRONMENTS_UNAVAILABLE = 2006
QUEUE_UNAVAILABLE = 2007
WARNING = 2100
AUTHENTICATION_ERROR = 10000
NO_ROUTE = 7000
METHOD_NOT_ALLOWED = 7001

T = TypeVar("T")


class Message(BaseModel):
    code: int
    message: str


class Envelope(BaseModel, Generic[T]):
    success: bool
    errors: list[Message] = Field(default_factory=list)
    messages: list[Message] = Field(default_factory=list)
    result: T | None = None


class ErrorEnvelope(Envelope[None]):
    """A refusal: ``success`` false, ``errors`` saying why, ``result`` null."""


class PurgeResult(BaseModel):
    id: str = Field(description="the receipt's id: GET /v1/receipts/{id} follows the purge")


class EnvironmentItem(BaseModel):
    name: str
    ref: str
    expression: str | None = None


class EnvironmentList(BaseModel):
    environments: list[EnvironmentItem]


class IngestError(Exception):
    """An answer other than success: HTTP status, and one (code, message) per problem."""

    def __init__(self, status: int, errors: Sequence[tuple[int, str]],
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}: " + "; ".join(m for _, m in errors))
        self.status = status
        self.errors = list(errors)
        self.headers = dict(headers or {})


def success(result: Any, warnings: Sequence[str] = ()) -> dict[str, Any]:
    return {"success": True, "errors": [],
            "messages": [{"code": WARNING, "message": w} for w in warnings], "result": result}


def failure(status: int, errors: Sequence[tuple[int, str]],
            headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = {"success": False, "errors": [{"code": c, "message": m} for c, m in errors],
            "messages": [], "result": None}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))
