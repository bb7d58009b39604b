"""Errors as JSON: `{"error": {"type", "message", "details"?}}` with 401/404/409/413/422/501/503.

Bad input is never a 500: request validation, malformed JSON, database refusals of odd values (NUL
bytes, out-of-range numbers) all answer 422 naming the problem (an id with a NUL byte: 404, as any
unknown id). `errors()` documents them in each operation's OpenAPI entry.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import compile_path

from models.common import error_summary

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


class ErrorDetail(BaseModel):
    type: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


_ERROR_ANSWERS = {
    401: "Missing or invalid API key",
    404: "Not found",
    409: "In conflict with the object's state (final: `x-should-retry: false`)",
    413: "Body over 16 MB (128 MB for a campaign; refused before it is read), a call order over "
    "Temporal's payload limit, or an assistant over 256 KB of JSON",
    422: "Invalid request",
    503: "Temporal or a provider unreachable: retry later, unless `x-should-retry: false`",
}


def errors(*more: int) -> dict[int | str, dict[str, Any]]:
    """The error answers an operation documents: 401, 404, 413 (any body may be too large), 422 and 503
    (anything may find Temporal or a provider down) for all, and `more` where the operation answers them."""
    return {
        status: {"model": ErrorBody, "description": _ERROR_ANSWERS[status]}
        for status in sorted({401, 404, 413, 422, 503, *more})
    }


ERRORS = errors()  # what every operation documents


class ApiError(Exception):
    """An expected failure with its HTTP status, e.g. ApiError(404, "not_found", "call ... not found")."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        retryable: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.details = details
        # False when a retry could do harm: answered with `x-should-retry: false` (the Revox client obeys)
        self.retryable = retryable


def not_found(what: str, id: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} {id!r} not found")


def unprocessable(field: str, message: str) -> ApiError:
    """A 422 for a cross-resource check (unknown assistant_id, foreign from_phone_number, ...)."""
    return ApiError(
        422,
        "validation_error",
        f"{field}: {message}",
        details=[{"loc": ["body", *field.split(".")], "msg": message, "type": "value_error"}],
    )


_STATUS_TYPES = {
    400: "bad_request",
    401: "authentication_error",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    501: "not_implemented",
    503: "unavailable",
}


def error_response(
    status: int,
    type: str,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(type=type, message=message, details=details))
    headers = dict(headers or {})
    if status in (409, 501):  # final answers, which the Revox client would retry unless told not to
        headers["x-should-retry"] = "false"
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _validation_details(errors: Any) -> list[dict[str, Any]]:
    details = []
    for error in errors:
        details.append(
            {
                "loc": list(error.get("loc", ())),
                "msg": error.get("msg", ""),
                "type": error.get("type", ""),
            }
        )
    return jsonable_encoder(details)


def _summary(details: list[dict[str, Any]]) -> str:
    return error_summary(details, skip=("body", "query", "path", "header"), limit=5)


def validate_body(model: type[M], data: dict[str, Any]) -> M:
    """`model` from a request's body merged with what is stored (a PATCH), its errors located in the
    body as FastAPI's own are (`["body", "prompt"]`), not at the model's root."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        errors = err.errors(include_url=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def describe(err: ValidationError) -> str:
    """One line naming each invalid field, as a 422's message does (the CLI says it the same way)."""
    return _summary(_validation_details(err.errors(include_url=False)))


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method the API documents for `path`: a 405's `Allow` (RFC 9110). Starlette's names only
    the first route that matched the path, one of several that share it (GET and POST /assistants). A
    path documented as it is (/call/export) is that resource, not an id of another (/call/{id})."""
    paths: dict[str, dict[str, Any]] = app.openapi()["paths"]
    matching = [template for template in paths if compile_path(template)[0].match(path)]
    literal = [template for template in matching if "{" not in template]
    methods = {method.upper() for template in literal or matching for method in paths[template]}
    return sorted(methods | ({"HEAD"} if "GET" in methods else set()))


def _read_as_json(content_type: str) -> bool:
    """Whether FastAPI reads a body of this type as JSON (`application/json`, `application/*+json`):
    `text/json` is not, and its body, unread, was "not a valid dictionary"."""
    kind = content_type.split(";")[0].strip().lower()
    return kind.startswith("application/") and (kind == "application/json" or kind.endswith("+json"))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, err: ApiError) -> JSONResponse:
        headers = {} if err.retryable else {"x-should-retry": "false"}
        if err.status == 401:  # RFC 9110: a 401 names the scheme it wants (an API key as a bearer token)
            headers["WWW-Authenticate"] = "Bearer"
        return error_response(err.status, err.type, err.message, details=err.details, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        details = _validation_details(err.errors())
        message = _summary(details)
        content_type = request.headers.get("content-type", "")
        if not _read_as_json(content_type) and any(detail["loc"] == ["body"] for detail in details):
            # FastAPI reads a body as JSON only when it says so: `curl -d` says it is a form
            given = f"not {content_type}" if content_type else "the request had none"
            message = f"the body must be JSON, sent with Content-Type: application/json ({given})"
        return error_response(422, "validation_error", message, details=details)

    @app.exception_handler(ValidationError)
    async def _model_invalid(_: Request, err: ValidationError) -> JSONResponse:
        details = _validation_details(err.errors(include_url=False))
        return error_response(422, "validation_error", _summary(details), details=details)

    @app.exception_handler(DataError)
    async def _data_refused(request: Request, err: DataError) -> JSONResponse:
        # The database refused a value our validation let through (e.g. a NUL byte for PostgreSQL).
        log.info("database refused a value: %s", err.orig)
        if any("\x00" in str(value) for value in request.path_params.values()):  # as on SQLite: no such id
            return error_response(404, "not_found", "not found: no id holds a NUL character")
        return error_response(422, "validation_error", "a value could not be stored (unsupported characters)")

    async def _database_unavailable(_: Request, err: Exception) -> JSONResponse:
        # Unreachable, or busy past its timeout (a locked SQLite file, a full pool): a 503 to retry later,
        # as when Temporal is down, not a 500 for a bug.
        log.warning("database unavailable: %s", getattr(err, "orig", None) or err)
        return error_response(503, "unavailable", "the database is unavailable; retry later")

    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(PoolTimeout, _database_unavailable)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        kind = _STATUS_TYPES.get(err.status_code, "error")
        message = err.detail if isinstance(err.detail, str) else kind.replace("_", " ")
        headers = dict(getattr(err, "headers", None) or {})
        if err.status_code == 405 and (allowed := allowed_methods(app, request.url.path)):
            headers["Allow"] = ", ".join(allowed)
        return error_response(err.status_code, kind, message, headers=headers)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, _: ClientDisconnect) -> Response:
        # Its client left before sending its whole body: no bug, nobody to answer (two tracebacks of
        # 70 lines each as an unexpected error, the second from the server it was re-raised to).
        log.info("%s %s: the client disconnected before sending its body", request.method, request.url.path)
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=err)
        return error_response(500, "internal_error", "internal error; see the API's log")
