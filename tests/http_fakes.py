"""Local servers speaking real protocols on 127.0.0.1, for tests of provider adapters (loopback only)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from models import Assistant, Call, CallAttempt, TranscriptEntry, call_assistant_from


def serve(add_routes: Callable[[web.Application], None]) -> Any:
    """An aiohttp app on a free loopback port; yields its base URL."""
    app = web.Application()
    add_routes(app)
    return serve_app(app)


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


class FakeOpenAI:
    """POST /v1/chat/completions, non-streaming. Replies are scripted per kind of request: the
    json_schema name (`structured_output`, `call_outcome`) or `text`; the last reply of a script repeats.
    A reply is JSON-able content (sent as the message text) or `Status(code)`.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: dict[str, list[Any]] = {}
        self.reply_seconds = 0.0  # how long the model takes to answer
        self.formats_refused: set[str] = set()  # response_format types refused, as `format_refusal` says
        self.format_refusal = (400, "This response_format type is unavailable now")  # DeepSeek's

    def kind_of(self, body: dict[str, Any]) -> str:
        schema = (body.get("response_format") or {}).get("json_schema") or {}
        if "name" in schema:
            return str(schema["name"])
        told = re.search(r"the JSON schema `(\w+)`", str((body.get("messages") or [{}])[0].get("content")))
        return told[1] if told else "text"  # a schema told in words only (no JSON-schema mode)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if self.kind_of(r["body"]) == kind]

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"body": body, "headers": dict(request.headers), "query": dict(request.query)})
        await asyncio.sleep(self.reply_seconds)
        if (body.get("response_format") or {}).get("type") in self.formats_refused:
            status, message = self.format_refusal
            return web.json_response({"error": {"message": message, "code": status}}, status=status)
        script = self.script.get(self.kind_of(body)) or [Status(500)]
        reply = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(reply, Status):
            error = {"error": {"message": f"scripted {reply.code}", "type": "test", "code": reply.error_code}}
            return web.json_response(error, status=reply.code, headers=reply.headers)
        if isinstance(reply, ErrorBody):  # OpenRouter's way: a 200 whose body is the error
            error = {"error": {"message": reply.message, "code": reply.code}}
            return web.json_response({"id": "gen-1", **error, "user_id": "user_1"})
        choices = reply.choices if isinstance(reply, Choices) else [_choice(reply)]
        return web.json_response(
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": body.get("model"),
                "choices": choices,
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            }
        )


def _choice(reply: object) -> dict[str, Any]:
    content = reply if isinstance(reply, str) else json.dumps(reply)
    return {
        "index": 0,
        "message": {"role": "assistant", "content": content, "refusal": None},
        "finish_reason": "stop",
        "logprobs": None,
    }


class Status:
    def __init__(
        self, code: int, headers: dict[str, str] | None = None, error_code: str | None = None
    ) -> None:
        self.code = code
        self.headers = headers or {}
        self.error_code = error_code  # the body's error.code (OpenAI's `insufficient_quota`)


class Choices:
    """A 200 whose `choices` are these, as written: a broken proxy's shapes (no message, say)."""

    def __init__(self, choices: list[Any]) -> None:
        self.choices = choices


class ErrorBody:
    """A 200 whose body is `{"error": {"message", "code"}}` and no choices, as OpenRouter answers."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message


HUMAN_TRANSCRIPT = [
    TranscriptEntry(role="assistant", content="Hello Claire, this is Alex from Acme about your demo."),
    TranscriptEntry(role="user", content="Yes, I'm interested. My email is claire@example.com."),
    TranscriptEntry(role="assistant", content="Great, I'll send the details. Goodbye."),
]


def final_call(
    *,
    status: str = "completed",
    outcome: str | None = "interested",
    results: tuple[str, ...] = ("human",),
    call_id: str = "0b7d3c1e-8a51-4a8e-9a3e-1f2d3c4b5a69",
    **assistant: Any,
) -> Call:
    """A Call as CallOrderWorkflow returns it at the end, attempts most recent first."""
    spec = Assistant.model_validate({"prompt": "Offer {{name}} a demo.", **assistant})
    resolved = call_assistant_from(spec, id=f"inline-{call_id}", organization_id="org_local", now=NOW)
    attempts = [
        CallAttempt(
            id=f"attempt-{number}",
            phone_number="+33612345678",
            status="completed",
            result=result,  # type: ignore[arg-type]
            started_at=NOW,
            ended_at=NOW,
            transcript=HUMAN_TRANSCRIPT if result == "human" else None,
        )
        for number, result in enumerate(results, start=1)
    ]
    attempts.reverse()
    return Call(
        id=call_id,
        assistant=resolved,
        llm_model=resolved.llm_model,  # as CallOrderWorkflow fills it
        call_attempts=attempts,
        from_phone_number="+33159000000",
        organization_id="org_local",
        prompt_variables={"name": "Claire"},
        status=status,  # type: ignore[arg-type]
        to_phone_number="+33612345678",
        created_at=NOW,
        updated_at=NOW,
        scheduled_at=NOW,
        outcome=outcome,  # type: ignore[arg-type]
        outcome_summary="She asked for the details." if outcome else None,
    ).with_derived_fields()
