"""RFC 9457 problem details for every error a service returns."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
# A problem lists at most this many field errors (a body with a million bad ids gets the first ones
# and the count, not a response larger than the request).
MAX_ERRORS = 100
PROBLEM_BASE = "https://rescind.dev/problems/"

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


class Problem(Exception):
    """Raise from anywhere in a request to answer with problem JSON."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type_: str | None = None,
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type_ or _default_type(status)
        self.title = title or _TITLES.get(status, "Error")
        self.errors = errors
        self.headers = headers
        self.extra = extra


def _default_type(status: int) -> str:
    slug = _TITLES.get(status, "error").lower().replace(" ", "-")
    return PROBLEM_BASE + slug


def problem_response(
    status: int,
    detail: str,
    *,
    type_: str | None = None,
    title: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
    **extra: Any,
) -> JSONResponse:
    body = problem_body(status, detail, type_=type_, title=title, errors=errors, instance=instance, **extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def problem_body(
    status: int,
    detail: str,
    *,
    type_: str | None = None,
    title: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    instance: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The JSON of a problem (also served outside FastAPI, by the background processes' probes)."""
    body: dict[str, Any] = {
        "type": type_ or _default_type(status),
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors[:MAX_ERRORS]
        if len(errors) > MAX_ERRORS:
            body["errors_truncated"] = True
            body["error_count"] = len(errors)
    body.update(extra)
    return body


def field_error(field: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"field": field, "detail": message, **extra}


def _loc_to_field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        head, rest = parts[0], parts[1:]
        return head + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in rest)
    return ".".join(parts)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status,
            exc.detail,
            type_=exc.type,
            title=exc.title,
            errors=exc.errors,
            headers=exc.headers,
            instance=request.url.path,
            **exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        raw = exc.errors()
        if any(e.get("type") == "json_invalid" for e in raw):
            return problem_response(
                400,
                "The request body is not valid JSON.",
                type_=PROBLEM_BASE + "malformed-json",
                errors=[field_error("body", "malformed JSON")],
                instance=request.url.path,
            )
        errors = [
            field_error(_loc_to_field(e.get("loc", ())), str(e.get("msg", "invalid")), code=e.get("type"))
            for e in raw
        ]
        fields = list(dict.fromkeys(e["field"] for e in errors[:MAX_ERRORS]))
        names = ", ".join(fields[:10]) + (", ..." if len(fields) > 10 or len(errors) > MAX_ERRORS else "")
        return problem_response(
            422,
            f"Invalid request: {names}.",
            type_=PROBLEM_BASE + "validation-error",
            errors=errors,
            instance=request.url.path,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return problem_response(
            exc.status_code, detail, headers=getattr(exc, "headers", None), instance=request.url.path
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeoutError)
    async def _db_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", type(exc).__name__)
        return problem_response(
            503,
            "The database is unavailable; retry shortly.",
            type_=PROBLEM_BASE + "database-unavailable",
            headers={"Retry-After": "2"},
            instance=request.url.path,
        )

    @app.exception_handler(DBAPIError)
    async def _dbapi(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return await _db_down(request, exc)
        log.exception("database error")
        return problem_response(500, "Internal error.", instance=request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "Internal error.", instance=request.url.path)
