"""Post-call analysis through an OpenAI-compatible endpoint (the `openai` client): structured output and
outcome, plus the text of after-call SMS.

Two requests per analysis, run concurrently:
- structured output: a strict JSON schema built from the assistant's `structured_output_config`, the
  assistant's `structured_output_prompt` (or a default one) with {{transcript}}, {{call_direction}},
  {{user_phone_number}}, {{agent_phone_number}} filled in;
- outcome: one of the seed's six outcomes (or null) and a short `outcome_summary`.

Every reply is validated here against the schema too: strict mode is a promise only OpenAI keeps, and
custom endpoints often ignore it. An invalid reply is asked again, with the error, up to
`analysis_max_invalid_replies` times; past that the analysis still returns, the failure written in
`outcome_summary`, so the order completes instead of retrying forever. Transient API errors (network,
timeouts, 408/409/429/5xx) raise a retryable error for the activity's Temporal retry policy (backoff,
visible in the Web UI, honouring Retry-After); configuration errors (401/403/404/400) are final.

Which endpoint: the assistant's `llm_model` when it is OpenAI-compatible (dedicated gpt-4.1 -> OpenAI;
OpenRouter with provider routing when OPENROUTER_API_KEY is set; custom api_url/api_key, through the
URL guard), else the configured default (OPENAI_BASE_URL/OPENAI_API_KEY, OUTDIAL_ANALYSIS_MODEL).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.sms import MAX_SMS_CHARS, SmsWriteRequest
from activities.url_guard import UnresolvedHost, UnsafeUrlError, check_url, guarded_httpx2_client
from agent.prompt import interpolate
from models.assistant import (
    CustomLlmModelRecord,
    DedicatedInstanceModelRecord,
    LlmModelRecord,
    OpenRouterModelRecord,
)
from models.call import TranscriptEntry
from models.common import Outcome
from models.secrets import scrubbed
from models.settings import Settings
from models.workflow_io import AnalysisResult, AnalyzeRequest

log = logging.getLogger(__name__)

# Error types the order's retry policy should know: the first retries, the others are final.
ANALYSIS_UNAVAILABLE = "AnalysisUnavailable"
ANALYSIS_REJECTED = "AnalysisRejected"
UNSAFE_URL = "UnsafeUrl"
# Within the activity's start-to-close timeout, a request leaves this much to answer in, and is not
# sent with less than the other (a reply asked again once the time is up would be cut off anyway).
ANSWER_MARGIN_SECONDS = 5.0
MIN_REQUEST_SECONDS = 5.0

OUTCOMES: dict[str, str] = {
    "do_not_contact": "the callee asked not to be called or contacted again (this wins over any other)",
    "requested_callback_new_number": "the callee asked to be called back on another phone number",
    "requested_callback_later": "the callee asked to be called back at another time",
    "completed": "the purpose of the call was fully achieved during the call (e.g. booked, confirmed)",
    "interested": "the callee showed interest, but the purpose of the call is not achieved yet",
    "not_interested": "the callee declined",
}

DEFAULT_STRUCTURED_OUTPUT_PROMPT = """\
Extract the fields of the JSON schema from this {{call_direction}} phone call between our agent \
({{agent_phone_number}}) and the callee ({{user_phone_number}}).
Use only what was actually said. For an optional field the conversation does not establish, answer \
null; never invent a value. Dates as YYYY-MM-DD; date-times as ISO 8601 with a UTC offset when known.

Transcript:
{{transcript}}"""

_EXTRACTION_SYSTEM = (
    "You extract structured data from phone call transcripts. Reply with JSON that matches the given "
    "schema exactly and nothing else."
)
_OUTCOME_SYSTEM = (
    "You classify the business outcome of a phone call placed by an AI agent. Choose exactly one outcome:\n"
    + "\n".join(f"- {name}: {meaning}" for name, meaning in OUTCOMES.items())
    + "\n- null: none of these can be told from the conversation (e.g. the callee hung up at once).\n"
    "outcome_summary: one or two sentences explaining the choice, quoting the callee where possible.\n"
    "Reply with JSON that matches the given schema exactly and nothing else."
)
_SMS_SYSTEM = (
    "You write one SMS message to the person an AI agent just called, following the instructions. "
    f"Plain text, no markdown, at most {MAX_SMS_CHARS // 2} characters, in the language of the "
    "conversation. Reply with the message text only."
)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # fullmatch, ASCII digits
_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}.*", re.S)


class FieldLike(Protocol):
    name: str
    required: bool
    type: str
    description: str | None
    enum_options: list[str] | None


class InvalidReply(ValueError):
    """The model's reply does not match the schema (after the bound, the analysis records it). `kept`:
    what of it fits, kept when no reply does (the fields that fit, the others null)."""

    def __init__(self, message: str, kept: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.kept = kept


class FormatRefused(Exception):
    """The endpoint refused the request's response_format (no JSON-schema mode): ask without it."""


# --- schemas and validation (pure) --------------------------------------------------------------------


def output_schema(fields: Sequence[FieldLike]) -> dict[str, Any]:
    """The strict-mode JSON schema of a structured_output_config.

    Strict mode wants every property listed in `required` and no additional properties, so an optional
    field is one whose type admits null.
    """
    properties: dict[str, Any] = {}
    for field in fields:
        prop: dict[str, Any]
        if field.type == "enum":
            options: list[Any] = list(field.enum_options or [])
            prop = {"type": "string", "enum": options}
            if not field.required:
                prop = {"type": ["string", "null"], "enum": [*options, None]}
        else:
            base = {"number": "number", "boolean": "boolean"}.get(field.type, "string")
            prop = {"type": base if field.required else [base, "null"]}
            if field.type == "date":
                prop["format"] = "date"
            elif field.type == "datetime":
                prop["format"] = "date-time"
        if field.description:
            prop["description"] = field.description
        properties[field.name] = prop
    return {
        "type": "object",
        "properties": properties,
        "required": [field.name for field in fields],
        "additionalProperties": False,
    }


def validate_output(fields: Sequence[FieldLike], data: object) -> dict[str, Any]:
    """`data` when it matches `output_schema(fields)` (an optional field left out as null), else
    InvalidReply saying where it does not, holding the values that fit (kept if no reply fits whole)."""
    if not isinstance(data, dict):
        raise InvalidReply(f"expected a JSON object, got {type(data).__name__}")
    expected = {field.name for field in fields}
    if extra := sorted(set(data) - expected):
        raise InvalidReply(f"unexpected properties {extra}", _fitting(fields, data))
    # (an endpoint without strict mode may leave out an optional field: it reads as null)
    if missing := sorted(field.name for field in fields if field.required and field.name not in data):
        raise InvalidReply(f"missing properties {missing}", _fitting(fields, data))
    output = {field.name: data.get(field.name) for field in fields}
    for field in fields:
        problem = field_problem(field, output[field.name])
        if problem:
            raise InvalidReply(f"{field.name}: {problem}", _fitting(fields, data))
    return output


def _fitting(fields: Sequence[FieldLike], data: dict[str, Any]) -> dict[str, Any] | None:
    """The reply's values that fit their fields, the others null and unknown properties left out; None
    when none fits."""
    nulled = tuple(f.name for f in fields if field_problem(f, data.get(f.name)))
    kept = Fitted({f.name: None if f.name in nulled else data.get(f.name) for f in fields})
    kept.nulled = nulled
    return kept if any(value is not None for value in kept.values()) else None


class Fitted(dict[str, Any]):
    """A reply's values that fit their fields; `nulled`: the fields whose value did not (null here)."""

    nulled: tuple[str, ...] = ()


def field_problem(field: FieldLike, value: object) -> str | None:
    """What is wrong with `value` for `field`, or None when it fits."""
    if value is None:
        return "is required and may not be null" if field.required else None
    kind = field.type
    if kind == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"expected a number, got {value!r}"
    if kind == "boolean":
        return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
    if not isinstance(value, str):
        return f"expected a string, got {value!r}"
    if kind == "enum" and value not in (field.enum_options or []):
        return f"{value!r} is not one of {field.enum_options}"
    if kind == "date" and not _parses(_DATE, value, date.fromisoformat):
        return f"{value!r} is not a date as YYYY-MM-DD"
    if kind == "datetime" and not _parses(_DATETIME, value, datetime.fromisoformat):
        return f"{value!r} is not an ISO 8601 date-time"
    return None


def _parses(shape: re.Pattern[str], value: str, parse: Callable[[str], object]) -> bool:
    if not shape.fullmatch(value):
        return False
    try:
        parse(value)
    except ValueError:
        return False
    return True


def outcome_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "outcome": {
                "type": ["string", "null"],
                "enum": [*OUTCOMES, None],
                "description": "the business outcome of the call, or null when it cannot be told",
            },
            "outcome_summary": {
                "type": "string",
                "description": "one or two sentences explaining the outcome",
            },
        },
        "required": ["outcome", "outcome_summary"],
        "additionalProperties": False,
    }


def validate_outcome(data: object) -> tuple[Outcome | None, str]:
    if not isinstance(data, dict) or set(data) != {"outcome", "outcome_summary"}:
        raise InvalidReply("expected exactly the properties outcome and outcome_summary")
    outcome, summary = data["outcome"], data["outcome_summary"]
    if outcome is not None and outcome not in OUTCOMES:
        raise InvalidReply(f"outcome: {outcome!r} is not one of {list(OUTCOMES)} or null")
    if not isinstance(summary, str) or not summary.strip():
        raise InvalidReply("outcome_summary: expected a non-empty string")
    return outcome, summary.strip()  # type: ignore[return-value]


def format_transcript(transcript: Sequence[TranscriptEntry]) -> str:
    lines = []
    for entry in transcript:
        if entry.role == "tool":
            lines.append(f"[tool {entry.tool_name or ''}: {entry.tool_output or entry.content}]")
        else:
            lines.append(f"{'Agent' if entry.role == 'assistant' else 'Callee'}: {entry.content}")
    return "\n".join(lines)


def structured_output_messages(request: AnalyzeRequest) -> list[dict[str, str]]:
    """The extraction request: the assistant's prompt (or the default) with its variables filled in."""
    template = request.assistant.structured_output_prompt or DEFAULT_STRUCTURED_OUTPUT_PROMPT
    transcript = format_transcript(request.transcript)
    variables = {
        "transcript": transcript,
        "call_direction": request.direction,
        "user_phone_number": request.to_phone_number,
        "agent_phone_number": request.from_phone_number,
    }
    prompt = interpolate(template, variables)
    if not re.search(r"\{\{\s*transcript\s*\}\}", template):  # a custom prompt that forgot the transcript
        prompt += f"\n\nTranscript:\n{transcript}"
    return [{"role": "system", "content": _EXTRACTION_SYSTEM}, {"role": "user", "content": prompt}]


def outcome_messages(request: AnalyzeRequest) -> list[dict[str, str]]:
    purpose = (request.assistant.prompt or "").strip()[:2000]
    content = (
        f"The agent's instructions for this call:\n{purpose}\n\n"
        f"Transcript:\n{format_transcript(request.transcript)}"
    )
    return [{"role": "system", "content": _OUTCOME_SYSTEM}, {"role": "user", "content": content}]


# --- endpoints --------------------------------------------------------------------------------------


class Endpoint(BaseModel):
    """Where one analysis goes. `user_controlled` endpoints go through the URL guard."""

    label: str  # safe to log and to show in errors
    base_url: str | None
    api_key: str = Field(repr=False)
    model: str
    query: dict[str, str] = Field(default_factory=dict, repr=False)  # sent with every request
    extra_body: dict[str, Any] = Field(default_factory=dict)
    user_controlled: bool = False


def endpoint_for(llm_model: LlmModelRecord | None, settings: Settings) -> Endpoint:
    """The assistant's own LLM when it is OpenAI-compatible, else the configured default."""
    if isinstance(llm_model, CustomLlmModelRecord):
        base_url, query = llm_model.endpoint()
        return Endpoint(
            label=f"custom LLM {llm_model.model_name}",
            base_url=base_url,
            query=query,
            api_key=llm_model.api_key,
            model=llm_model.model_name,
            user_controlled=True,
        )
    if isinstance(llm_model, OpenRouterModelRecord) and settings.openrouter_api_key:
        return Endpoint(
            label=f"OpenRouter {llm_model.openrouter_model_id} via {llm_model.openrouter_provider}",
            base_url=settings.openrouter_base_url,
            api_key=settings.openrouter_api_key,
            model=llm_model.openrouter_model_id,
            # Provider routing: the assistant's provider first, and only providers that honour
            # every parameter sent (structured outputs).
            extra_body={"provider": {"order": [llm_model.openrouter_provider], "require_parameters": True}},
        )
    if not settings.openai_api_key and not settings.openai_base_url:
        raise ApplicationError(
            "OUTDIAL_ANALYZER=openai needs OPENAI_API_KEY (or OPENAI_BASE_URL for a keyless local server)",
            type=ANALYSIS_REJECTED,
            non_retryable=True,
        )
    dedicated = isinstance(llm_model, DedicatedInstanceModelRecord) and llm_model.name == "gpt-4.1"
    model = "gpt-4.1" if dedicated else settings.analysis_model
    return Endpoint(
        label=f"OpenAI-compatible default endpoint, {model}",
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key or "unused",
        model=model,
    )


# --- the analyzer -----------------------------------------------------------------------------------


class OpenAIAnalyzer:
    """The Analyzer protocol (and SmsWriter) over the `openai` client."""

    name = "openai"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def analyze(self, request: AnalyzeRequest) -> AnalysisResult:
        if not any(entry.role == "user" and entry.content.strip() for entry in request.transcript):
            return AnalysisResult()  # no transcript, no outcome (the seed: null if no transcript)
        fields = request.assistant.structured_output_config or []
        endpoint = await self._endpoint(request.assistant.llm_model)
        async with self._client(endpoint) as client:
            asks = [
                self._ask_json(
                    client,
                    endpoint,
                    outcome_messages(request),
                    "call_outcome",
                    outcome_schema(),
                    validate_outcome,
                )
            ]
            if fields:
                asks.append(
                    self._ask_json(
                        client,
                        endpoint,
                        structured_output_messages(request),
                        "structured_output",
                        output_schema(fields),
                        lambda data: validate_output(fields, data),
                    )
                )
            # each to its end: what one answers is kept when the other fails
            replies = await asyncio.gather(*(_attempt(ask) for ask in asks), return_exceptions=True)
        replies += [(None, None)] * (2 - len(replies))  # no structured output asked for
        failures = [reply for reply in replies if isinstance(reply, BaseException)]
        if failures:  # the one asking to wait longest, if any does (a Retry-After)
            failed = max(failures, key=lambda err: getattr(err, "next_retry_delay", None) or timedelta(0))
            raise _holding_what_was_answered(failed, replies)
        (outcome_reply, outcome_failure), (structured, structured_failure) = replies
        if isinstance(outcome_failure, ApplicationError) and structured is None:
            raise outcome_failure  # refused for good, and nothing extracted to keep: the analysis is refused
        return _result(outcome_reply, outcome_failure, structured, structured_failure)

    async def write_sms(self, request: SmsWriteRequest) -> str:
        """An SMS from the assistant's instructions and the conversation (after_call_sms_prompt)."""
        endpoint = await self._endpoint(request.llm_model)
        instructions = interpolate(request.instructions, request.variables)
        messages = [
            {"role": "system", "content": _SMS_SYSTEM},
            {
                "role": "user",
                "content": f"Instructions:\n{instructions}\n\nTranscript:\n"
                f"{format_transcript(request.transcript)}",
            },
        ]
        async with self._client(endpoint) as client:
            completion = await self._create(client, endpoint, messages, max_completion_tokens=300)
        _refuse_error_body(completion, endpoint)
        text = (completion.choices[0].message.content or "").strip() if completion.choices else ""
        text = text.encode(errors="ignore").decode()  # without half an emoji (a lone surrogate): unsendable
        if not text:
            raise ApplicationError(f"{endpoint.label}: empty SMS text", type=ANALYSIS_UNAVAILABLE)
        return text[:MAX_SMS_CHARS]

    # -- plumbing --

    async def _endpoint(self, llm_model: LlmModelRecord | None) -> Endpoint:
        endpoint = endpoint_for(llm_model, self.settings)
        if endpoint.user_controlled:  # a clear, early refusal; the transport re-checks every request
            await _check_endpoint_url(endpoint, self.settings.allow_private_urls)
        return endpoint

    def _client(self, endpoint: Endpoint) -> AsyncOpenAI:
        """One client per analysis. No client-side retries: Temporal's retry policy is the backoff."""
        http_client = (
            guarded_httpx2_client(allow_private=self.settings.allow_private_urls)
            if endpoint.user_controlled
            else None
        )
        return AsyncOpenAI(
            api_key=endpoint.api_key,
            base_url=endpoint.base_url,
            default_query=endpoint.query or None,
            max_retries=0,
            timeout=self.settings.analysis_timeout_seconds,
            http_client=http_client,
        )

    async def _ask_json(
        self,
        client: AsyncOpenAI,
        endpoint: Endpoint,
        messages: list[dict[str, str]],
        name: str,
        schema: dict[str, Any],
        validate: Callable[[object], Any],
    ) -> Any:
        """A strict structured-output request, asked again (with the error) while the reply is invalid.
        An endpoint refusing JSON-schema mode is asked in JSON mode, then with no format (DeepSeek's,
        older vLLM's); the JSON is read out of a markdown fence or a sentence. The schema is told in the
        prompt too once the format was refused or a reply did not fit (an endpoint that ignores the
        format, Anthropic's OpenAI layer, says no error: its model guessed the fields' names); not
        before, since an endpoint that honours it would read it twice (as many tokens again)."""
        conversation, told = list(messages), False
        tries = self.settings.analysis_max_invalid_replies
        problem, kept = "", None
        response_format: dict[str, Any] | None = {
            "type": "json_schema",
            "json_schema": {"name": name, "strict": True, "schema": schema},
        }
        tried = 0
        while tried < tries:
            timeout = self._time_for_a_request()
            if timeout is None:  # asked again while it lasts, not past the activity's own timeout
                raise InvalidReply(
                    f"the model's {name} reply did not match the schema in {tried} tries, all the time "
                    f"there was: {_with_nulled(problem, kept)}"
                    if tried
                    else f"no time was left to ask for the {name}",
                    kept,
                )
            options: dict[str, Any] = {"response_format": response_format} if response_format else {}
            try:
                completion = await self._create(client, endpoint, conversation, timeout=timeout, **options)
                _refuse_error_body(completion, endpoint)  # (an error in a 200's body, as its code would)
            except FormatRefused:  # JSON mode, else no mode (the reply read as JSON)
                schema_mode = response_format is not None and response_format["type"] == "json_schema"
                response_format = {"type": "json_object"} if schema_mode else None
                if not told:
                    conversation, told = _schema_told(conversation, name, schema), True
                activity.logger.info(
                    "analysis %s: %s refused the response format %s; asking %s",
                    name,
                    endpoint.label,
                    options["response_format"]["type"],
                    "in JSON mode" if response_format else "with the schema in the prompt",
                )
                continue
            except ApplicationError as err:
                # Asked again with the time left, and out of it: the activity's retry would start over
                # and end the same, so the invalid replies are the answer (the other request's kept).
                if tried and timeout < self.settings.analysis_timeout_seconds and not err.non_retryable:
                    raise InvalidReply(
                        f"the model's {name} reply did not match the schema in {tried} tries, all the "
                        f"time there was: {_with_nulled(problem, kept)}",
                        kept,
                    ) from None
                if kept is not None and err.non_retryable:  # asking again refused: what fitted is the answer
                    raise InvalidReply(
                        f"the model's {name} reply did not match the schema ({_with_nulled(problem, kept)}), "
                        f"and asking again was refused: {err.message}",
                        kept,
                    ) from None
                err.kept = kept  # type: ignore[attr-defined]  # what fitted, should every retry fail too
                raise
            tried += 1
            content = ""
            try:
                if not completion.choices:
                    raise InvalidReply("the reply has no choices")
                choice = completion.choices[0]
                if choice is None or choice.message is None:
                    raise InvalidReply("the reply has no message")
                content = choice.message.content or ""
                if not isinstance(content, str):  # an endpoint's own shape (a list of parts, say)
                    kind, content = type(content).__name__, ""
                    raise InvalidReply(f"the reply's content is not text ({kind})")
                if choice.message.refusal:
                    raise InvalidReply(f"the model refused: {choice.message.refusal[:200]}")
                if choice.finish_reason == "length":
                    raise InvalidReply("the reply was cut off (finish_reason=length)")
                try:
                    data = _json_in(content)
                    _refuse_lone_surrogates(data)
                except json.JSONDecodeError as err:
                    raise InvalidReply(f"not JSON ({err.msg})") from None
                except InvalidReply:
                    raise
                except (ValueError, RecursionError) as err:  # an integer past Python's 4,300 digits,
                    # nesting past its recursion limit: JSON, but none this analysis can hold
                    raise InvalidReply(f"not JSON outdial can read ({type(err).__name__})") from None
                return validate(data)
            except InvalidReply as err:
                problem, kept = str(err), _fuller(err.kept, kept)
                activity.logger.warning(  # the SDK's logger: it names the order's workflow
                    "analysis %s: invalid reply from %s: %s", name, endpoint.label, problem
                )
                if not told:
                    conversation, told = _schema_told(conversation, name, schema), True
                conversation += [
                    {"role": "assistant", "content": content},
                    {
                        "role": "user",
                        "content": f"That reply is invalid: {problem}. "
                        "Answer again with JSON that matches the schema exactly.",
                    },
                ]
        said = _with_nulled(problem, kept)
        raise InvalidReply(
            f"the model's {name} reply did not match the schema in {tries} tries: {said}", kept
        )

    def _time_for_a_request(self) -> float | None:
        """A request's timeout: `analysis_timeout_seconds`, within what is left of the activity's own
        start-to-close timeout (less a margin to answer in); None when too little is left to ask again."""
        timeout = self.settings.analysis_timeout_seconds
        info = activity.info() if activity.in_activity() else None
        if info is None or info.start_to_close_timeout is None:
            return timeout
        deadline = info.started_time + info.start_to_close_timeout
        left = (deadline - datetime.now(deadline.tzinfo)).total_seconds() - ANSWER_MARGIN_SECONDS
        return min(timeout, left) if left >= MIN_REQUEST_SECONDS else None

    async def _create(
        self, client: AsyncOpenAI, endpoint: Endpoint, messages: list[dict[str, str]], **options: Any
    ) -> ChatCompletion:
        if endpoint.extra_body:
            options["extra_body"] = endpoint.extra_body
        deadline = options.get("timeout") or self.settings.analysis_timeout_seconds
        try:
            # the whole request's deadline: httpx's timeout is per read, which a reply sent a byte at a time
            # (a proxy's keep-alive whitespace) never trips, until the activity's own timeout lost it all
            async with asyncio.timeout(deadline):
                completion = await client.chat.completions.create(
                    model=endpoint.model,
                    messages=messages,  # type: ignore[arg-type]
                    **options,
                )
        except openai.APIError as err:
            if "response_format" in options and _refuses_the_format(err):
                raise FormatRefused from None
            raise _failure(err, endpoint) from None
        except TimeoutError:
            raise ApplicationError(
                f"{endpoint.label}: endpoint unreachable (no complete answer within {deadline:g} s)",
                type=ANALYSIS_UNAVAILABLE,
            ) from None
        if not isinstance(completion, ChatCompletion):  # a 200 that is not JSON: an HTML page, say
            raise ApplicationError(
                f"{endpoint.label}: the answer is not a chat completion (is the endpoint's base URL that of "
                "an OpenAI-compatible API?)",
                type=ANALYSIS_REJECTED,
                non_retryable=True,
            )
        return completion


def _with_nulled(problem: str, kept: dict[str, Any] | None) -> str:
    """The last reply's problem, and the fields the values kept leave null (a null that means "did not
    fit", not "not said", for whoever reads the data)."""
    nulled = getattr(kept, "nulled", ())
    return f"{problem}; kept null: {', '.join(nulled)}" if nulled else problem


def _fuller(reply: dict[str, Any] | None, kept: dict[str, Any] | None) -> dict[str, Any] | None:
    """Of two replies' fields that fit, those holding more values (the later one when as many)."""
    if reply is None or kept is None:
        return reply if kept is None else kept
    return (
        reply
        if sum(v is not None for v in reply.values()) >= sum(v is not None for v in kept.values())
        else kept
    )


_FENCED = re.compile(r"```[a-zA-Z]*[ \t]*\r?\n(.*?)\r?\n[ \t]*```", re.DOTALL)


def _json_in(content: str) -> object:
    """The reply's JSON: the whole content, else (an endpoint that ignores the response format answers
    ```json ...``` or a sentence around it) the last markdown fence that holds JSON, else what lies
    between the first `{` and the last `}`; what a reasoning model thought (up to its `</think>`) is
    looked at only if the rest holds none."""
    try:
        return json.loads(content, parse_constant=_not_json, parse_float=_finite)
    except json.JSONDecodeError as err:
        answer = content.rsplit("</think>", 1)[-1]
        # (the thought only when the answer holds no JSON at all: one it holds but cannot be read is asked
        # again, never swapped for a draft)
        for said in dict.fromkeys([answer, content if "{" not in answer else answer]):
            for candidate in [*reversed(_FENCED.findall(said)), said[said.find("{") : said.rfind("}") + 1]]:
                if candidate and candidate != content:
                    with contextlib.suppress(json.JSONDecodeError):
                        return json.loads(candidate, parse_constant=_not_json, parse_float=_finite)
        raise err from None


def _schema_told(messages: list[dict[str, str]], name: str, schema: dict[str, Any]) -> list[dict[str, str]]:
    """The messages with the schema the reply must match told in the system message (for an endpoint
    that refused the JSON-schema response format, or whose reply did not follow it)."""
    told = (
        f"Answer with one JSON object only, no other text, matching the JSON schema `{name}` exactly:\n"
        + json.dumps(schema, ensure_ascii=False)
    )
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n\n{told}"}, *messages[1:]]
    return [{"role": "system", "content": told}, *messages]


def _not_json(constant: str) -> object:
    """`json.loads` takes NaN and Infinity; JSON does not, and a data converter would store them as null."""
    raise InvalidReply(f"not JSON ({constant} is not a JSON number)")


def _finite(number: str) -> float:
    """`json.loads` reads 1e400 as infinity, which a data converter would store as null."""
    value = float(number)
    if not math.isfinite(value):
        raise InvalidReply(f"not JSON ({number[:40]} is beyond a number's range)")
    return value


def _refuse_lone_surrogates(data: object) -> None:
    """A lone UTF-16 surrogate (half an emoji, as a JSON escape) parses, but UTF-8 cannot encode it:
    Temporal could not send a result holding one. An invalid reply, so the model is asked again."""
    try:
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise InvalidReply("not valid Unicode: a lone UTF-16 surrogate (half an emoji)") from None


async def _attempt(ask: Awaitable[Any]) -> tuple[Any, str | ApplicationError | None]:
    """(result, None), or (None, why) once the invalid-reply bound is spent, or (None, the refusal) once
    the request is refused for good (a schema over the endpoint's limits, say): what the other request
    answered is kept. Any other failure raises: a transient one retries the activity, which asks both
    again."""
    try:
        return await ask, None
    except InvalidReply as err:
        return err.kept, str(err)
    except ApplicationError as err:
        if not err.non_retryable:
            raise
        return None, err


def _said(failure: str | ApplicationError | None) -> str:
    return failure.message if isinstance(failure, ApplicationError) else str(failure)


def _result(
    outcome_reply: tuple[Outcome | None, str] | None,
    outcome_failure: str | ApplicationError | None,
    structured: dict[str, object] | None,
    structured_failure: str | ApplicationError | None,
) -> AnalysisResult:
    outcome, summary = (
        outcome_reply if outcome_reply else (None, f"analysis failed: {_said(outcome_failure)}")
    )
    if structured_failure:
        kept = " (the fields that fit kept, the others null)" if structured is not None else ""
        summary = f"{summary} [structured output failed{kept}: {_said(structured_failure)}]"
    return AnalysisResult(structured_output=structured, outcome=outcome, outcome_summary=summary)


def _holding_what_was_answered(failed: BaseException, replies: list[Any]) -> BaseException:
    """A request's transient failure (the activity retries, asking both again), holding in its details
    what the other request answered: the order keeps that if no retry finishes the analysis (a slow
    structured output timing out on every try lost the outcome answered each time)."""
    if not isinstance(failed, ApplicationError) or failed.non_retryable:
        return failed
    (outcome_reply, outcome_failure), (structured, structured_failure) = [
        _kept_before(reply) if isinstance(reply, BaseException) else reply for reply in replies
    ]
    if outcome_reply is None and structured is None:
        return failed
    return failure_holding(failed, _result(outcome_reply, outcome_failure, structured, structured_failure))


def _kept_before(failed: BaseException) -> tuple[Any, str | BaseException]:
    """A request's failure as a reply: what fitted of the replies before it (see `_ask_json`), and why."""
    kept = getattr(failed, "kept", None)
    if kept is None:
        return None, failed
    return kept, _with_nulled(failed.message if isinstance(failed, ApplicationError) else str(failed), kept)


def failure_holding(failed: ApplicationError, answered: AnalysisResult) -> ApplicationError:
    """`failed` as it is (its type, its Retry-After), holding `answered` in its details."""
    return ApplicationError(
        failed.message,
        answered.model_dump(mode="json"),
        type=failed.type,
        next_retry_delay=failed.next_retry_delay,
    )


async def _check_endpoint_url(endpoint: Endpoint, allow_private: bool) -> None:
    try:
        await check_url(endpoint.base_url or "", allow_private=allow_private)
    except UnsafeUrlError as err:
        raise ApplicationError(
            f"{endpoint.label}: api_url refused: {err}", type=UNSAFE_URL, non_retryable=True
        ) from None
    except UnresolvedHost as err:  # the name may resolve on the next try, as any network failure
        raise ApplicationError(
            f"{endpoint.label}: endpoint unreachable ({err})", type=ANALYSIS_UNAVAILABLE
        ) from None


_FORMAT_WORDS = ("response_format", "json_schema", "json_object", "structured output", "requested parameters")


def _refuses_the_format(err: openai.APIError) -> bool:
    """A refusal of the response format: a model or endpoint without JSON-schema (or JSON) mode. A 400
    (DeepSeek, older vLLM), a 422 in plain text (older DeepSeek), OpenRouter's 404 when no provider
    takes every parameter ("No endpoints found that can handle the requested parameters")."""
    if not isinstance(err, openai.APIStatusError) or err.status_code not in (400, 404, 422):
        return False
    words = f"{err.message} {err.response.text[:2000]}".lower()
    return any(word in words for word in _FORMAT_WORDS)


def _failure(err: openai.APIError, endpoint: Endpoint) -> ApplicationError:
    """Map an openai error onto Temporal's retry: transient ones retry, the others are final."""
    if isinstance(err, openai.APIConnectionError):  # includes timeouts
        if isinstance(err.__cause__, UnsafeUrlError):
            return ApplicationError(
                f"{endpoint.label}: api_url refused: {err.__cause__}", type=UNSAFE_URL, non_retryable=True
            )
        return ApplicationError(
            f"{endpoint.label}: endpoint unreachable ({type(err).__name__})", type=ANALYSIS_UNAVAILABLE
        )
    if isinstance(err, openai.APIStatusError):
        status = err.status_code
        if err.code == "insufficient_quota":  # a 429 no wait cures: the account's credit is spent
            return ApplicationError(
                f"{endpoint.label}: request refused (HTTP {status}): {_scrub(err.message, endpoint)[:300]}",
                type=ANALYSIS_REJECTED,
                non_retryable=True,
            )
        if status in (408, 409, 429) or status >= 500:
            return ApplicationError(
                f"{endpoint.label}: HTTP {status}",  # the final summary quotes it: no "will retry"
                type=ANALYSIS_UNAVAILABLE,
                next_retry_delay=_retry_after(err),
            )
        detail = "" if status in (401, 403) else f": {_scrub(err.message, endpoint)[:300]}"
        return ApplicationError(
            f"{endpoint.label}: request refused (HTTP {status}){detail}",
            type=ANALYSIS_REJECTED,
            non_retryable=True,
        )
    return ApplicationError(f"{endpoint.label}: {type(err).__name__}", type=ANALYSIS_UNAVAILABLE)


def _refuse_error_body(completion: Any, endpoint: Endpoint) -> None:
    """An error sent as a 200's body (OpenRouter does, rate limited or out of credit: `{"error":
    {"message", "code"}}`, no choices) fails as its status would: a retry for 408, 429 and 5xx, else final."""
    error = (completion.model_extra or {}).get("error")
    if not error:
        return
    error = error if isinstance(error, dict) else {"message": str(error)}
    code = error.get("code")
    message = _scrub(str(error.get("message") or "no message"), endpoint)[:300]
    transient = not isinstance(code, int) or code in (408, 409, 429) or code >= 500
    raise ApplicationError(
        f"{endpoint.label}: the provider answered an error (code {code}): {message}",
        type=ANALYSIS_UNAVAILABLE if transient else ANALYSIS_REJECTED,
        non_retryable=not transient,
    )


def _retry_after(err: openai.APIStatusError) -> timedelta | None:
    value = err.response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return timedelta(seconds=min(max(seconds, 0), 3600)) if seconds > 0 else None


def _scrub(text: str, endpoint: Endpoint) -> str:
    """An endpoint's answer, quoted in a summary, a webhook and a log, without the secrets it may echo:
    the key, the URL's query values and its login (as written, decoded, encoded as a URL or a form
    encodes them, and as the Basic credentials sent for it). Longest first, so a secret holding
    another goes whole; under 4 characters, none is."""
    secrets = {endpoint.api_key, *endpoint.query.values()}
    login = urlsplit(endpoint.base_url or "").netloc.rpartition("@")[0]
    if login:
        user, _, password = unquote(login).partition(":")
        secrets |= {login, user, password, base64.b64encode(f"{user}:{password}".encode()).decode()}
    return scrubbed(text, secrets)
