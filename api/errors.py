"""Every failure leaves the API as ``{"error": {"code", "message", "field"}}``, never as a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.storage import StorageError

logger = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "unavailable",
}
_LOCATION_PARTS = {"body", "query", "path", "header", "cookie"}
_MEMBER_NAMES = {"str", "constrained-str", "dict[str,any]"}


class APIError(Exception):
    """Raised by routes for an expected failure; rendered by :func:`install_error_handlers`."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers


def not_found(what: str = "resource") -> APIError:
    return APIError(404, "not_found", f"{what} not found")


def error_response(
    status_code: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        status_code=status_code,
        content={"error": {"code": code, "message": message, "field": field}},
        headers=headers,
    )


def _field_of(loc: tuple[object, ...] | list[object]) -> str | None:
    parts = [str(p) for p in loc]
    if parts and parts[0] in _LOCATION_PARTS:
        parts = parts[1:]
    # Pydantic puts the failing union member or validator name in the location; keep the field path only.
    parts = [p for p in parts if not p.startswith("function-") and p not in _MEMBER_NAMES]
    if "[key]" in parts:  # a map's key failed: name the map, never the (possibly huge or hostile) key itself
        parts = parts[: parts.index("[key]") - 1]
    if not parts:
        return "body" if loc and str(loc[0]) == "body" else None
    path = ""
    for part in parts:
        path += f"[{part}]" if part.isdigit() else (f".{part}" if path else part)
    return path


RETRY_LATER = {"Retry-After": "5"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status_code, exc.code, exc.message, exc.field, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
        field = _field_of(first.get("loc", ()))
        message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        if first.get("type") == "json_invalid":
            field, message = "body", "request body is not valid JSON"
        elif first.get("type") == "missing":
            message = "field required"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        return error_response(422, "validation_error", message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # The framework's only 400s are bodies it could not parse (not UTF-8, nested past the parser's
            # depth, broken multipart framing): bad input like any other, so a 422 naming the body.
            detail = exc.detail if isinstance(exc.detail, str) else "unreadable"
            return error_response(
                422, "validation_error", f"the request body could not be parsed ({detail})", "body"
            )
        code = _HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, code, message, None, getattr(exc, "headers", None))

    # An outage of a dependency is a 503 with Retry-After, answered like any handled error: the response is
    # sent normally and the keep-alive connection stays open (unhandled errors go to Starlette's last-resort
    # middleware, which closes it).
    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(DisconnectionError)
    @app.exception_handler(PoolTimeoutError)
    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        logger.warning(
            "database unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__
        )
        return error_response(
            503, "database_unavailable", "the job database is unreachable; try again", None, RETRY_LATER
        )

    @app.exception_handler(StorageError)
    async def _storage_down(request: Request, exc: Exception) -> JSONResponse:
        logger.warning("storage unavailable on %s %s", request.method, request.url.path)
        return error_response(
            503, "storage_unavailable", "object storage is unreachable; try again", None, RETRY_LATER
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error")
