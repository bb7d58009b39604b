"""Request bodies must be Unicode: JSON's `\\ud83d` escape alone (a cut-off emoji, as JavaScript's
`JSON.stringify` writes it) parses to a lone surrogate that UTF-8 cannot encode, so it would fail later,
as a 500, in the database, in Temporal or in a response. Such a body is a 422 naming the field; so is a
body that is not UTF-8 at all (FastAPI's own answer, a 400 "error parsing the body", says neither)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # json.loads joins a valid pair into one character


def lone_surrogates(value: Any, loc: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Where in a parsed JSON document a string (or an object key) holds a lone surrogate."""
    if isinstance(value, str):
        if _LONE_SURROGATE.search(value):
            yield loc
    elif isinstance(value, dict):
        for key, item in value.items():
            if _LONE_SURROGATE.search(key):
                yield (*loc, key.encode("utf-8", "backslashreplace").decode())
            yield from lone_surrogates(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from lone_surrogates(item, (*loc, index))


def check_unicode(body: bytes) -> None:
    """Raise a 422 (RequestValidationError) at the first field holding a lone surrogate."""
    if b"\\ud" not in body and b"\\uD" not in body:  # a surrogate can only come in as an escape
        return
    try:
        document = json.loads(body)
        loc = next(lone_surrogates(document), None)
    except (ValueError, RecursionError):  # FastAPI answers malformed (or too deeply nested) JSON itself
        return
    if loc is not None:
        raise RequestValidationError(
            [
                {
                    "type": "string_unicode",
                    "loc": ("body", *loc),
                    "msg": "must be valid Unicode (a lone UTF-16 surrogate escape, e.g. half an emoji)",
                }
            ]
        )


def check_utf8(body: bytes) -> None:
    """Raise a 422 (RequestValidationError) at the first byte of `body` that is not UTF-8."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", err.start),
                    "msg": f"must be UTF-8 (byte {err.start} is not)",
                }
            ]
        ) from None


class UnicodeRoute(APIRoute):
    """An APIRoute whose JSON bodies are checked by `check_unicode` before FastAPI parses them, and by
    `check_utf8` when FastAPI could not parse them."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            if request.method not in ("POST", "PUT", "PATCH"):
                return await handler(request)
            body = await request.body()  # cached: FastAPI reads the same bytes after
            check_unicode(body)
            try:
                return await handler(request)
            except HTTPException as err:
                if err.status_code != 400:
                    raise
                check_utf8(body)  # FastAPI could not parse the body: say where, if that is why
                raise RequestValidationError(  # else JSON too deeply nested for Python's parser
                    [{"type": "json_invalid", "loc": ("body",), "msg": "JSON that cannot be parsed"}]
                ) from None

        return checked
