"""The OpenAI analyzer: the real `openai` client against a local OpenAI-compatible server (loopback)."""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities import analysis
from activities.analysis import (
    ANALYSIS_REJECTED,
    ANALYSIS_UNAVAILABLE,
    ANSWER_MARGIN_SECONDS,
    MIN_REQUEST_SECONDS,
    OpenAIAnalyzer,
    endpoint_for,
    output_schema,
    validate_output,
)
from activities.calls import CallActivities
from activities.providers import analyzer_from
from activities.simulated import SimulatedAnalyzer, SimulatedTelephony, _human_conversation
from activities.sms import SmsWriteRequest
from models import Assistant, CallCreateParams, FieldSpecRecord, call_assistant_from
from models.workflow_io import AnalysisResult, AnalyzeRequest
from tests.helpers import settings_for_tests
from tests.http_fakes import HUMAN_TRANSCRIPT, NOW, Choices, ErrorBody, FakeOpenAI, Status, serve
from workers import create_worker
from workflows.call_order import ANALYZE_PATIENCE, ANALYZE_RETRY, CallOrderWorkflow

ALL_TYPES = [
    {"name": "name", "type": "string", "required": True, "description": "the callee's full name"},
    {"name": "budget", "type": "number", "required": False},
    {"name": "consent", "type": "boolean", "required": True, "description": "agreed to be emailed"},
    {"name": "plan", "type": "enum", "required": False, "enum_options": ["basic", "pro"]},
    {"name": "demo_date", "type": "date", "required": True},
    {"name": "callback_at", "type": "datetime", "required": False, "description": "when to call back"},
]
EXPECTED_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "the callee's full name"},
        "budget": {"type": ["number", "null"]},
        "consent": {"type": "boolean", "description": "agreed to be emailed"},
        "plan": {"type": ["string", "null"], "enum": ["basic", "pro", None]},
        "demo_date": {"type": "string", "format": "date"},
        "callback_at": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "when to call back",
        },
    },
    "required": ["name", "budget", "consent", "plan", "demo_date", "callback_at"],
    "additionalProperties": False,
}
GOOD = {
    "name": "Claire Martin",
    "budget": 1200.5,
    "consent": True,
    "plan": None,
    "demo_date": "2026-12-01",
    "callback_at": "2026-12-01T10:00:00+01:00",
}
OUTCOME = {"outcome": "interested", "outcome_summary": "She asked for the details by email."}
FIELDS = [FieldSpecRecord.model_validate(field) for field in ALL_TYPES]


def request(**assistant: Any) -> AnalyzeRequest:
    spec = Assistant.model_validate({"prompt": "Offer Claire a demo.", **assistant})
    return AnalyzeRequest(
        call_id="call-1",
        attempt_id="attempt-1",
        assistant=call_assistant_from(spec, id="a", organization_id="org_local", now=NOW),
        transcript=HUMAN_TRANSCRIPT,
        to_phone_number="+33612345678",
        from_phone_number="+33159000000",
    )


@pytest.fixture
async def fake() -> Any:
    server = FakeOpenAI()
    async with serve(server.routes) as base:
        server.base = base  # type: ignore[attr-defined]
        yield server


def analyzer(fake: FakeOpenAI, **overrides: Any) -> OpenAIAnalyzer:
    settings = settings_for_tests(
        analyzer="openai",
        openai_api_key="sk-test-default",
        openai_base_url=f"{fake.base}/v1",  # type: ignore[attr-defined]
        **overrides,
    )
    return OpenAIAnalyzer(settings)


async def test_exact_json_schema_sent_for_all_six_types_and_good_reply_stored(fake: FakeOpenAI) -> None:
    fake.script = {"structured_output": [GOOD], "call_outcome": [OUTCOME]}
    result = await analyzer(fake).analyze(request(structured_output_config=ALL_TYPES))

    assert result == AnalysisResult(
        structured_output=GOOD, outcome="interested", outcome_summary=OUTCOME["outcome_summary"]
    )
    [sent] = fake.of_kind("structured_output")
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "structured_output", "strict": True, "schema": EXPECTED_SCHEMA},
    }
    assert sent["model"] == "gpt-4.1"  # the seed's dedicated gpt-4.1 goes to OpenAI as gpt-4.1
    prompt = sent["messages"][-1]["content"]
    assert "outbound phone call between our agent (+33159000000) and the callee (+33612345678)" in prompt
    assert "Callee: Yes, I'm interested. My email is claire@example.com." in prompt
    [outcome] = fake.of_kind("call_outcome")
    assert outcome["response_format"]["json_schema"]["strict"] is True
    assert outcome["response_format"]["json_schema"]["schema"]["properties"]["outcome"]["enum"] == [
        "do_not_contact",
        "requested_callback_new_number",
        "requested_callback_later",
        "completed",
        "interested",
        "not_interested",
        None,
    ]
    headers = {r["headers"]["Authorization"] for r in fake.requests}
    assert headers == {"Bearer sk-test-default"}


async def test_structured_output_prompt_variables_are_filled_in(fake: FakeOpenAI) -> None:
    fake.script = {"structured_output": [GOOD], "call_outcome": [OUTCOME]}
    template = "{{call_direction}} call from {{agent_phone_number}} to {{user_phone_number}}:\n{{transcript}}"
    await analyzer(fake).analyze(
        request(structured_output_config=ALL_TYPES, structured_output_prompt=template)
    )
    [sent] = fake.of_kind("structured_output")
    assert sent["messages"][-1]["content"] == (
        "outbound call from +33159000000 to +33612345678:\n"
        "Agent: Hello Claire, this is Alex from Acme about your demo.\n"
        "Callee: Yes, I'm interested. My email is claire@example.com.\n"
        "Agent: Great, I'll send the details. Goodbye."
    )


async def test_invalid_reply_is_asked_again_with_the_error_then_the_valid_one_is_stored(
    fake: FakeOpenAI,
) -> None:
    fake.script = {
        "structured_output": [{**GOOD, "demo_date": "next tuesday"}, GOOD],
        "call_outcome": [OUTCOME],
    }
    result = await analyzer(fake).analyze(request(structured_output_config=ALL_TYPES))
    assert result.structured_output == GOOD
    first, second = fake.of_kind("structured_output")
    assert len(second["messages"]) == len(first["messages"]) + 2
    assert "demo_date: 'next tuesday' is not a date as YYYY-MM-DD" in second["messages"][-1]["content"]


async def test_schema_invalid_replies_stop_at_the_bound_and_the_failure_is_recorded(fake: FakeOpenAI) -> None:
    bad_replies = [{**GOOD, "consent": "yes"}, {"name": "Claire"}, "not json at all"]
    fake.script = {"structured_output": bad_replies, "call_outcome": [OUTCOME]}
    result = await analyzer(fake, analysis_max_invalid_replies=3).analyze(
        request(structured_output_config=ALL_TYPES)
    )
    assert len(fake.of_kind("structured_output")) == 3  # the bound, not one more
    assert result.structured_output == {**GOOD, "consent": None}  # the fullest reply's fields that fit
    assert "the fields that fit kept, the others null" in (result.outcome_summary or "")
    assert result.outcome == "interested"  # the outcome does not depend on the structured output
    assert result.outcome_summary is not None
    assert "structured output failed" in result.outcome_summary
    assert "in 3 tries: not JSON" in result.outcome_summary


@pytest.mark.parametrize(
    "reply",
    [
        f"```json\n{json.dumps(GOOD, indent=2)}\n```",
        f"Sure! Here is the JSON you asked for:\n{json.dumps(GOOD)}\nLet me know if you need more.",
    ],
    ids=["fenced", "in-a-sentence"],
)
async def test_json_in_a_markdown_fence_or_a_sentence_is_read(fake: FakeOpenAI, reply: str) -> None:
    """An endpoint that ignores the response format (Anthropic's OpenAI layer does) answers the JSON in
    a fence or after a sentence: it was "not JSON", three times, and the analysis lost."""
    fake.script = {"structured_output": [reply], "call_outcome": [f"```\n{json.dumps(OUTCOME)}\n```"]}
    result = await analyzer(fake).analyze(request(structured_output_config=ALL_TYPES))
    assert (result.structured_output, result.outcome) == (GOOD, "interested")
    assert len(fake.requests) == 2


@pytest.mark.parametrize("refused", [{"json_schema"}, {"json_schema", "json_object"}])
async def test_an_endpoint_without_json_schema_mode_is_asked_in_json_mode_or_with_the_schema_told(
    fake: FakeOpenAI, refused: set[str]
) -> None:
    """DeepSeek answers a JSON-schema response format with a 400: every analysis failed for good."""
    fake.formats_refused = refused
    fake.script = {"structured_output": [GOOD], "call_outcome": [OUTCOME]}
    result = await analyzer(fake).analyze(request(structured_output_config=ALL_TYPES))
    assert (result.structured_output, result.outcome) == (GOOD, "interested")
    answered = fake.of_kind("structured_output")[-1]
    assert (answered.get("response_format") or {}).get("type") == (
        "json_object" if len(refused) == 1 else None
    )
    assert json.dumps(EXPECTED_SCHEMA, ensure_ascii=False) in answered["messages"][0]["content"]
    assert len(fake.requests) == 2 * (1 + len(refused))  # each refusal once per request, not counted as a try


async def test_the_schema_is_told_in_words_once_a_reply_ignored_it(fake: FakeOpenAI) -> None:
    """Anthropic's OpenAI layer ignores `response_format` without an error: told the schema only there,
    its model guessed every field's name, three times. An endpoint that honours it reads it once."""
    guessed = {"customer_name": "Claire Martin", "plan": "basic"}
    fake.script = {
        "structured_output": [f"```json\n{json.dumps(guessed)}\n```", GOOD],
        "call_outcome": [OUTCOME],
    }
    result = await analyzer(fake).analyze(request(structured_output_config=ALL_TYPES))
    assert result.structured_output == GOOD
    first, second = fake.of_kind("structured_output")
    told = json.dumps(EXPECTED_SCHEMA, ensure_ascii=False)
    assert told not in first["messages"][0]["content"] and told in second["messages"][0]["content"]


@pytest.mark.parametrize(
    "reply",
    [
        f"<think>A draft:\n```json\n{json.dumps({**GOOD, 'plan': 'pro'})}\n```\nNo, basic.</think>\n"
        f"```json\n{json.dumps({**GOOD, 'plan': 'basic'})}\n```",
        f"She said:\n```\nYes, I'm interested.\n```\nSo:\n{json.dumps({**GOOD, 'plan': 'basic'})}",
        f"A draft:\n```json\n{json.dumps({**GOOD, 'plan': 'pro'})}\n```\nNo, basic {{see}}.</think>\n\n"
        f"{json.dumps({**GOOD, 'plan': 'basic'})}",
    ],
    ids=["a-draft-in-a-thought", "a-quote-fenced-first", "a-thought-opened-by-the-template"],
)
async def test_the_json_read_is_the_answers_not_a_draft_or_a_quote(fake: FakeOpenAI, reply: str) -> None:
    """The first fence was read: a reasoning model's draft stored (`pro`, its answer `basic`), or a
    quoted line taken for the JSON and the answer lost."""
    fake.script = {"structured_output": [reply], "call_outcome": [OUTCOME]}
    result = await analyzer(fake).analyze(request(structured_output_config=ALL_TYPES))
    assert result.structured_output == {**GOOD, "plan": "basic"}


async def test_the_fields_kept_null_are_named_and_survive_a_refusal_or_an_outage(fake: FakeOpenAI) -> None:
    """The summary named the last reply's first problem only (a null for "did not fit" read as "not
    said"); a refused or failed request after a reply that partly fitted lost what fitted."""
    two_wrong = {**GOOD, "consent": "yes", "demo_date": "tuesday"}
    fake.script = {"structured_output": [two_wrong, "not json"], "call_outcome": [OUTCOME]}
    result = await analyzer(fake, analysis_max_invalid_replies=2).analyze(
        request(structured_output_config=ALL_TYPES)
    )
    assert result.structured_output == {**two_wrong, "consent": None, "demo_date": None}
    assert "not JSON (Expecting value); kept null: consent, demo_date" in (result.outcome_summary or "")

    fake.script = {"structured_output": [two_wrong, Status(400)], "call_outcome": [OUTCOME]}
    result = await analyzer(fake).analyze(request(structured_output_config=ALL_TYPES))
    assert result.structured_output == {**two_wrong, "consent": None, "demo_date": None}
    assert "and asking again was refused" in (result.outcome_summary or "")

    fake.script = {"structured_output": [two_wrong, Status(503)], "call_outcome": [OUTCOME]}
    with pytest.raises(ApplicationError) as down:  # the activity retries; the order keeps these if all fail
        await analyzer(fake).analyze(request(structured_output_config=ALL_TYPES))
    assert not down.value.non_retryable
    assert down.value.details[0]["structured_output"] == {**two_wrong, "consent": None, "demo_date": None}
    assert down.value.details[0]["outcome"] == "interested"


async def test_a_thoughts_draft_is_never_taken_for_an_answer_that_cannot_be_read(fake: FakeOpenAI) -> None:
    """The answer after `</think>` held JSON among other braces: the draft in the thought was stored."""
    draft = f"A draft:\n```json\n{json.dumps({**GOOD, 'plan': 'pro'})}\n```\n</think>\n"
    unreadable = draft + f"For {{name}} and {{plan}}: {json.dumps({**GOOD, 'plan': 'basic'})}"
    fake.script = {"structured_output": [unreadable, {**GOOD, "plan": "basic"}], "call_outcome": [OUTCOME]}
    result = await analyzer(fake).analyze(request(structured_output_config=ALL_TYPES))
    assert (
        result.structured_output == {**GOOD, "plan": "basic"} and len(fake.of_kind("structured_output")) == 2
    )


async def test_a_value_holding_think_tags_is_read_as_written(fake: FakeOpenAI) -> None:
    said = {**GOOD, "name": "a <think>b</think> c"}
    fake.script = {
        "structured_output": [f"Here:\n```json\n{json.dumps(said)}\n```"],
        "call_outcome": [OUTCOME],
    }
    result = await analyzer(fake).analyze(request(structured_output_config=ALL_TYPES))
    assert result.structured_output == said


async def test_fields_that_fit_survive_an_error_sent_in_a_200_and_an_outage_names_them(
    fake: FakeOpenAI,
) -> None:
    """OpenRouter sends its errors in a 200's body: that one, after a reply that partly fitted, lost
    what fitted; an outage's summary did not name the fields kept null."""
    two_wrong = {**GOOD, "consent": "yes", "demo_date": "tuesday"}
    kept = {**two_wrong, "consent": None, "demo_date": None}
    fake.script = {
        "structured_output": [two_wrong, ErrorBody(402, "insufficient credits")],
        "call_outcome": [OUTCOME],
    }
    result = await analyzer(fake).analyze(request(structured_output_config=ALL_TYPES))
    assert result.structured_output == kept and "kept null: consent, demo_date" in (
        result.outcome_summary or ""
    )
    fake.script = {"structured_output": [two_wrong, Status(503)], "call_outcome": [OUTCOME]}
    with pytest.raises(ApplicationError) as down:
        await analyzer(fake).analyze(request(structured_output_config=ALL_TYPES))
    assert down.value.details[0]["structured_output"] == kept
    assert "HTTP 503; kept null: consent, demo_date]" in down.value.details[0]["outcome_summary"]


async def test_openrouters_404_for_a_format_no_provider_takes_is_a_format_refusal(fake: FakeOpenAI) -> None:
    """With `require_parameters`, OpenRouter answers a format no provider supports with a 404: the
    whole analysis was refused for good."""
    fake.formats_refused = {"json_schema"}
    fake.format_refusal = (404, "No endpoints found that can handle the requested parameters.")
    fake.script = {"structured_output": [GOOD], "call_outcome": [OUTCOME]}
    result = await analyzer(fake).analyze(request(structured_output_config=ALL_TYPES))
    assert (result.structured_output, result.outcome) == (GOOD, "interested")


async def test_fields_that_fit_are_kept_when_no_reply_fits_whole(fake: FakeOpenAI) -> None:
    """One value the model gets wrong every time (an enum in the wrong case, a null for a required field
    the callee never gave, a property of its own) lost every field extracted."""
    replies = [{**GOOD, "plan": "Pro", "notes": "x"}, {**GOOD, "name": None, "plan": "Pro"}]
    fake.script = {"structured_output": replies, "call_outcome": [OUTCOME]}
    result = await analyzer(fake, analysis_max_invalid_replies=2).analyze(
        request(structured_output_config=ALL_TYPES)
    )
    assert result.structured_output == {
        **GOOD,
        "plan": None,
    }  # the fuller reply, its unknown property left out
    assert "[structured output failed (the fields that fit kept, the others null)" in (
        result.outcome_summary or ""
    )
    assert "name: is required and may not be null" in (result.outcome_summary or "")


async def test_a_reply_holding_half_an_emoji_is_asked_again_then_the_valid_one_is_stored(
    fake: FakeOpenAI,
) -> None:
    """A lone UTF-16 surrogate (half an emoji, as a JSON escape) parses, but UTF-8 cannot encode it:
    Temporal could not send the analysis result, so the activity failed at every retry. It is an invalid
    reply instead, asked again like any other."""
    fake.script = {"call_outcome": [{"outcome": "interested", "outcome_summary": "Keen \ud83d"}, OUTCOME]}
    result = await analyzer(fake).analyze(request())
    assert (result.outcome, result.outcome_summary) == (OUTCOME["outcome"], OUTCOME["outcome_summary"])
    first, second = fake.of_kind("call_outcome")
    assert "lone UTF-16 surrogate" in second["messages"][-1]["content"]
    result.model_dump_json()  # what the activity's result goes through


async def test_nan_and_infinity_are_not_json_numbers_and_are_asked_again(fake: FakeOpenAI) -> None:
    """`json.loads` takes them, and the data converter then stored a required number as null."""
    fields = [{"name": "age", "type": "number", "required": True}]
    fake.script = {
        "structured_output": ['{"age": NaN}', '{"age": -Infinity}', '{"age": 1e400}', '{"age": 42}'],
        "call_outcome": [OUTCOME],
    }
    result = await analyzer(fake, analysis_max_invalid_replies=4).analyze(
        request(structured_output_config=fields)
    )
    assert result.structured_output == {"age": 42}
    asked = [body["messages"][-1]["content"] for body in fake.of_kind("structured_output")]
    assert "NaN is not a JSON number" in asked[1] and "-Infinity is not a JSON number" in asked[2]
    assert "1e400 is beyond a number's range" in asked[3]  # json.loads reads it as infinity


async def test_an_answer_that_is_not_a_chat_completion_is_final_and_says_so() -> None:
    """A wrong base URL answering 200 with an HTML page failed with an AttributeError, retried for an hour."""

    async def html(_: web.Request) -> web.Response:
        return web.Response(text="<html>Welcome to the gateway</html>", content_type="text/html")

    async with serve(lambda app: app.router.add_post("/v1/chat/completions", html)) as base:
        page = FakeOpenAI()
        page.base = base  # type: ignore[attr-defined]
        with pytest.raises(ApplicationError) as refused:
            await analyzer(page).analyze(request())
    assert refused.value.type == ANALYSIS_REJECTED and refused.value.non_retryable
    assert "not a chat completion" in str(refused.value)


async def test_replies_are_asked_again_only_while_the_activity_has_time(fake: FakeOpenAI) -> None:
    """Invalid replies are asked again up to the bound, each within the activity's start-to-close
    timeout: a slow model's third try was cut off by Temporal, and the activity retried for an hour."""
    fake.script = {"call_outcome": [{"outcome": "maybe", "outcome_summary": "?"}]}
    fake.reply_seconds = 1.0
    env = ActivityEnvironment()
    left = ANSWER_MARGIN_SECONDS + MIN_REQUEST_SECONDS + 0.5  # time for one try, not two
    env.info = dataclasses.replace(
        env.info,
        started_time=datetime.now(UTC) - timedelta(seconds=120 - left),
        start_to_close_timeout=timedelta(seconds=120),
    )
    result = await env.run(analyzer(fake, analysis_max_invalid_replies=3).analyze, request())
    assert len(fake.of_kind("call_outcome")) == 1
    assert result.outcome is None and result.outcome_summary is not None
    assert "in 1 tries, all the time there was: outcome: 'maybe'" in result.outcome_summary


async def test_a_re_ask_cut_short_by_the_activitys_time_ends_the_re_asking_and_keeps_the_outcome(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow model's re-ask, given only the time left, timed out: that failed the whole activity (a
    transient failure), every retry ended the same, and after an hour the outcome was lost too."""
    monkeypatch.setattr(analysis, "ANSWER_MARGIN_SECONDS", 0.1)  # the same arithmetic, in seconds
    monkeypatch.setattr(analysis, "MIN_REQUEST_SECONDS", 0.2)
    fields = [{"name": "age", "type": "number", "required": True}]
    fake.script = {"structured_output": ['{"age": "old"}'], "call_outcome": [OUTCOME]}
    fake.reply_seconds = 0.9  # the first try has 1.4 s, the re-ask what is left of it: 0.5 s
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        started_time=datetime.now(UTC) - timedelta(seconds=118.5),
        start_to_close_timeout=timedelta(seconds=120),
    )
    result = await env.run(
        analyzer(fake, analysis_timeout_seconds=10).analyze, request(structured_output_config=fields)
    )
    assert len(fake.of_kind("structured_output")) == 2
    assert result.outcome == "interested" and result.structured_output is None
    assert "in 1 tries, all the time there was: age:" in (result.outcome_summary or "")


async def test_a_structured_output_the_endpoint_refuses_for_good_keeps_the_outcome(fake: FakeOpenAI) -> None:
    """A schema over the endpoint's limits (OpenAI refuses some with a 400) failed the whole analysis:
    the outcome, asked beside it and answered, was cancelled and lost."""
    fake.script = {"structured_output": [Status(400)], "call_outcome": [OUTCOME]}
    result = await analyzer(fake).analyze(request(structured_output_config=ALL_TYPES))
    assert result.outcome == "interested" and result.structured_output is None
    assert "[structured output failed: " in (result.outcome_summary or "")
    assert (
        "[structured output failed: OpenAI-compatible default endpoint, gpt-4.1: request refused (HTTP 400)"
        in (result.outcome_summary or "")
    )


async def test_an_outcome_the_endpoint_refuses_for_good_keeps_what_was_extracted(fake: FakeOpenAI) -> None:
    """The structured output, answered beside the refused outcome (some endpoints refuse its schema's
    nullable enum with a 400: every call), was lost with it; with nothing extracted, the analysis fails."""
    fake.script = {"structured_output": [GOOD], "call_outcome": [Status(400)]}
    result = await analyzer(fake).analyze(request(structured_output_config=ALL_TYPES))
    assert result.outcome is None and result.structured_output == GOOD
    assert (result.outcome_summary or "").startswith(
        "analysis failed: OpenAI-compatible default endpoint, gpt-4.1: request refused (HTTP 400)"
    )
    fake.script = {"structured_output": [Status(400)], "call_outcome": [Status(400)]}
    with pytest.raises(ApplicationError) as refused:
        await analyzer(fake).analyze(request(structured_output_config=ALL_TYPES))
    assert refused.value.type == ANALYSIS_REJECTED and refused.value.non_retryable


async def test_a_reply_sent_a_byte_at_a_time_is_given_up_at_the_requests_deadline() -> None:
    """httpx's timeout is per read: a reply trickling in (a proxy's keep-alive whitespace) outlasted it,
    until the activity's own timeout failed the attempt, losing the other request's answer with it."""
    import asyncio

    async def trickle(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for _ in range(100):
            await response.write(b" ")
            await asyncio.sleep(0.1)
        return response

    async with serve(lambda app: app.router.add_post("/v1/chat/completions", trickle)) as base:
        slow = OpenAIAnalyzer(
            settings_for_tests(
                analyzer="openai",
                openai_api_key="sk-test",
                openai_base_url=f"{base}/v1",
                analysis_timeout_seconds=1,
            )
        )
        started = asyncio.get_running_loop().time()
        with pytest.raises(ApplicationError) as unanswered:
            await slow.analyze(request())
    assert unanswered.value.type == ANALYSIS_UNAVAILABLE and not unanswered.value.non_retryable
    assert "no complete answer within 1 s" in unanswered.value.message
    assert asyncio.get_running_loop().time() - started < 5  # not the 10 s the reply trickles for


async def test_a_retry_after_either_request_asks_for_is_heeded(fake: FakeOpenAI) -> None:
    """The outcome's 503 was raised, the structured output's `Retry-After: 30` beside it dropped."""
    fake.script = {"call_outcome": [Status(503)], "structured_output": [Status(429, {"retry-after": "30"})]}
    with pytest.raises(ApplicationError) as unavailable:
        await analyzer(fake).analyze(request(structured_output_config=ALL_TYPES))
    assert unavailable.value.next_retry_delay == timedelta(seconds=30)


async def test_an_invalid_outcome_is_recorded_in_the_summary_and_outcome_stays_null(fake: FakeOpenAI) -> None:
    fake.script = {"call_outcome": [{"outcome": "maybe", "outcome_summary": "?"}]}
    result = await analyzer(fake, analysis_max_invalid_replies=2).analyze(request())
    assert len(fake.of_kind("call_outcome")) == 2
    assert result.outcome is None and result.structured_output is None
    assert result.outcome_summary is not None
    assert result.outcome_summary.startswith("analysis failed: the model's call_outcome reply")


async def test_no_transcript_means_no_outcome_and_no_request(fake: FakeOpenAI) -> None:
    empty = request().model_copy(update={"transcript": []})
    assert await analyzer(fake).analyze(empty) == AnalysisResult()
    assert fake.requests == []


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({**GOOD, "budget": True}, "budget: expected a number"),
        ({**GOOD, "budget": "12"}, "budget: expected a number"),
        ({**GOOD, "consent": "yes"}, "consent: expected true or false"),
        ({**GOOD, "plan": "enterprise"}, "plan: 'enterprise' is not one of"),
        ({**GOOD, "demo_date": "2026-13-01"}, "demo_date: '2026-13-01' is not a date"),
        ({**GOOD, "callback_at": "tomorrow 10am"}, "callback_at: 'tomorrow 10am' is not an ISO 8601"),
        ({**GOOD, "name": None}, "name: is required and may not be null"),
        ({**GOOD, "extra": 1}, "unexpected properties ['extra']"),
        ({k: v for k, v in GOOD.items() if k != "name"}, "missing properties ['name']"),
        ([GOOD], "expected a JSON object"),
    ],
)
def test_validation_names_what_is_wrong(value: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("(", r"\(")):
        validate_output(FIELDS, value)


def test_validation_accepts_nulls_for_optional_fields_and_integers_as_numbers() -> None:
    reply = {**GOOD, "budget": 3, "plan": None, "callback_at": None}
    assert validate_output(FIELDS, reply) == reply
    assert output_schema(FIELDS) == EXPECTED_SCHEMA
    # An endpoint without strict mode leaves out an optional field it has no value for: it is null (all
    # that was extracted was lost, after three tries).
    assert validate_output(FIELDS, {k: v for k, v in reply.items() if k != "plan"}) == reply


@pytest.mark.parametrize(
    "reply",
    [
        '{"budget": ' + "9" * 5000 + "}",  # past Python's 4,300 digits (a ValueError)
        "[" * 100_000 + "]" * 100_000,  # past its recursion limit (a RecursionError)
        Choices([{"index": 0, "finish_reason": "stop"}]),  # a broken proxy's completions
        Choices([None]),
        Choices([{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": 7}}]),
    ],
    ids=["5000-digits", "deeply-nested", "no-message", "null-choice", "content-not-text"],
)
async def test_any_malformed_reply_is_asked_again(fake: FakeOpenAI, reply: object) -> None:
    """Each failed the activity with a bare Python exception, retried as a transient failure: the model
    was never asked again, and the outcome the other request had answered was lost."""
    fields = [{"name": "budget", "required": True, "type": "number"}]
    fake.script = {"structured_output": [reply, {"budget": 1200}], "call_outcome": [OUTCOME]}
    result = await analyzer(fake).analyze(request(structured_output_config=fields))
    assert result.structured_output == {"budget": 1200} and result.outcome == "interested"
    assert len(fake.of_kind("structured_output")) == 2


async def test_custom_llm_endpoint_is_used_with_its_own_key(fake: FakeOpenAI) -> None:
    fake.script = {"call_outcome": [OUTCOME]}
    custom = {
        "type": "custom",
        # A query (Azure's api-version) goes with every request; the path still ends the address.
        "api_url": f"{fake.base}/v1?api-version=2024-10-21",  # type: ignore[attr-defined]
        "api_key": "sk-custom-0123456789",
        "model_name": "acme/llama-70b",
    }
    await analyzer(fake, allow_private_urls=True).analyze(request(llm_model=custom))
    [sent] = fake.requests
    assert sent["body"]["model"] == "acme/llama-70b" and sent["query"] == {"api-version": "2024-10-21"}
    assert sent["headers"]["Authorization"] == "Bearer sk-custom-0123456789"


async def test_a_custom_llm_that_echoes_its_request_has_its_secrets_scrubbed_from_the_error(
    fake: FakeOpenAI,
) -> None:
    """The refusal is quoted in the Call's outcome_summary (a webhook, the Web UI) and the worker's log:
    the URL's query values and its login (decoded, and as the Basic credentials sent for it) go with the
    key, not only the key."""
    basic = base64.b64encode(b"llm@user:pa$$-w0rd").decode()
    echo = (
        f"you sent sk-custom-0123456789, ?key=QUERY-KEY%2F42 (QUERY-KEY/42), {basic}, pa%24%24-w0rd, "
        "llm@user, &sig=Sig+Nature%2F7"  # the last as a form encodes it, as it is sent
    )
    fake.script = {"call_outcome": [ErrorBody(400, echo)]}
    host = fake.base.removeprefix("http://")  # type: ignore[attr-defined]
    custom = {
        "type": "custom",
        "api_url": f"http://llm%40user:pa%24%24-w0rd@{host}/v1?key=QUERY-KEY%2F42&v=1&sig=Sig+Nature/7",
        "api_key": "sk-custom-0123456789",
        "model_name": "acme/llama-70b",
    }
    with pytest.raises(ApplicationError) as refused:
        await analyzer(fake, allow_private_urls=True).analyze(request(llm_model=custom))
    assert refused.value.message.endswith(
        "the provider answered an error (code 400): you sent ***, ?key=*** (***), ***, ***, ***, &sig=***"
    )


async def test_custom_llm_endpoint_on_a_private_address_is_refused_without_a_request(
    fake: FakeOpenAI,
) -> None:
    custom = {
        "type": "custom",
        "api_url": f"{fake.base}/v1",  # type: ignore[attr-defined]
        "api_key": "sk-custom-0123456789",
        "model_name": "acme/llama-70b",
    }
    with pytest.raises(ApplicationError) as refused:
        await analyzer(fake, allow_private_urls=False).analyze(request(llm_model=custom))
    assert refused.value.type == "UnsafeUrl" and refused.value.non_retryable
    assert "loopback" in refused.value.message and "sk-custom" not in refused.value.message
    assert fake.requests == []


async def test_openrouter_model_goes_to_openrouter_with_provider_routing(fake: FakeOpenAI) -> None:
    fake.script = {"call_outcome": [OUTCOME]}
    openrouter = {
        "type": "openrouter",
        "openrouter_model_id": "openai/gpt-4.1",
        "openrouter_provider": "azure",
    }
    subject = analyzer(
        fake,
        openrouter_api_key="sk-or-test",
        openrouter_base_url=f"{fake.base}/v1",  # type: ignore[attr-defined]
    )
    await subject.analyze(request(llm_model=openrouter))
    [sent] = fake.requests
    assert sent["body"]["model"] == "openai/gpt-4.1"
    assert sent["body"]["provider"] == {"order": ["azure"], "require_parameters": True}
    assert sent["headers"]["Authorization"] == "Bearer sk-or-test"


def test_models_that_are_not_openai_compatible_use_the_configured_default() -> None:
    settings = settings_for_tests(openai_api_key="sk-x", analysis_model="gpt-4.1-mini")
    realtime = request(
        llm_model={"type": "realtime", "provider": "google", "realtime_model_id": "gemini-live"}
    ).assistant.llm_model
    ministral = request(
        llm_model={"type": "dedicated-instance", "name": "ministral-3-8b-instruct"}
    ).assistant.llm_model
    for model in (realtime, ministral):
        endpoint = endpoint_for(model, settings)
        assert (endpoint.model, endpoint.base_url, endpoint.user_controlled) == ("gpt-4.1-mini", None, False)
    assert "sk-x" not in repr(endpoint_for(realtime, settings))  # keys stay out of reprs and logs


def test_analyzer_from_picks_openai_when_configured() -> None:
    assert analyzer_from(settings_for_tests(analyzer="openai", openai_api_key="sk-x")).name == "openai"
    assert analyzer_from(settings_for_tests()).name == "simulated"


async def test_an_error_in_a_200s_body_fails_as_its_code_would_and_says_what_the_provider_said(
    fake: FakeOpenAI,
) -> None:
    """OpenRouter answers a rate limit or spent credit with a 200 whose body is the error: a rate limit is
    retried as a 429 is (it was asked again at once, three times, and the outcome lost), spent credit is
    final; either way its message is quoted."""
    fake.script = {"call_outcome": [ErrorBody(429, "Rate limit exceeded: free-models-per-min")]}
    with pytest.raises(ApplicationError) as limited:
        await analyzer(fake).analyze(request())
    assert limited.value.type == ANALYSIS_UNAVAILABLE and not limited.value.non_retryable
    assert "Rate limit exceeded: free-models-per-min" in limited.value.message and len(fake.requests) == 1
    fake.script = {"call_outcome": [ErrorBody(402, "Insufficient credits")]}
    with pytest.raises(ApplicationError) as broke:
        await analyzer(fake).analyze(request())
    assert broke.value.type == ANALYSIS_REJECTED and broke.value.non_retryable
    assert "Insufficient credits" in broke.value.message
    fake.script = {"text": [ErrorBody(402, "Insufficient credits")]}  # the after-call SMS's writer alike
    with pytest.raises(ApplicationError) as unwritten:
        writing = SmsWriteRequest(instructions="Thank them.", transcript=HUMAN_TRANSCRIPT)
        await analyzer(fake).write_sms(writing)
    assert unwritten.value.non_retryable and "Insufficient credits" in unwritten.value.message


async def test_openais_spent_quota_is_final_not_waited_out_for_an_hour(fake: FakeOpenAI) -> None:
    """A 429 `insufficient_quota` is the account's credit spent: no retry cures it."""
    fake.script = {"call_outcome": [Status(429, error_code="insufficient_quota")]}
    with pytest.raises(ApplicationError) as refused:
        await analyzer(fake).analyze(request())
    assert refused.value.type == ANALYSIS_REJECTED and refused.value.non_retryable
    assert "scripted 429" in refused.value.message


async def test_authentication_error_is_final_and_does_not_echo_the_key(fake: FakeOpenAI) -> None:
    fake.script = {"call_outcome": [Status(401)]}
    with pytest.raises(ApplicationError) as refused:
        await analyzer(fake).analyze(request())
    assert refused.value.type == ANALYSIS_REJECTED and refused.value.non_retryable
    assert "sk-test-default" not in str(refused.value)


async def test_after_call_sms_text_is_written_from_the_transcript(fake: FakeOpenAI) -> None:
    fake.script = {"text": ["Thanks Claire! Details: https://acme.example/demo"]}
    text = await analyzer(fake).write_sms(
        SmsWriteRequest(
            instructions="Thank {{name}} and send the demo link.",
            variables={"name": "Claire"},
            transcript=HUMAN_TRANSCRIPT,
        )
    )
    assert text == "Thanks Claire! Details: https://acme.example/demo"
    [sent] = fake.requests
    assert "Thank Claire and send the demo link." in sent["body"]["messages"][-1]["content"]
    assert "Callee: Yes, I'm interested." in sent["body"]["messages"][-1]["content"]


async def test_an_sms_text_holding_half_an_emoji_is_sent_without_it(fake: FakeOpenAI) -> None:
    """A lone UTF-16 surrogate cannot be encoded (nor sent as an SMS, nor returned to Temporal)."""
    fake.script = {"text": ["Thanks Claire \ud83d! See you"]}
    text = await analyzer(fake).write_sms(
        SmsWriteRequest(instructions="Thank them.", variables={}, transcript=HUMAN_TRANSCRIPT)
    )
    assert text == "Thanks Claire ! See you"


# --- Temporal's retry policy does the backoff for transient errors -----------------------------------


@workflow.defn(sandboxed=False)
class AnalyzeOnce:
    """What CallOrderWorkflow does: the analyze activity with a retry policy; the failure type if any."""

    @workflow.run
    async def run(self, analyze: AnalyzeRequest) -> str:
        try:
            result = await workflow.execute_activity(
                "analyze",
                analyze,
                result_type=AnalysisResult,
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=2),
                    maximum_attempts=5,
                    non_retryable_error_types=[ANALYSIS_REJECTED],
                ),
            )
        except ActivityError as err:
            assert isinstance(err.cause, ApplicationError)
            return f"failed: {err.cause.type}"
        return f"{result.outcome} at {workflow.now() - workflow.info().start_time}"


async def test_transient_errors_retry_with_backoff_then_succeed(time_env, fake: FakeOpenAI) -> None:  # type: ignore[no-untyped-def]
    fake.script = {"call_outcome": [Status(503), Status(429, {"retry-after": "30"}), OUTCOME]}
    subject = analyzer(fake)
    activities = CallActivities(subject.settings, SimulatedTelephony(), subject)
    queue = f"analysis-{uuid.uuid4()}"
    async with Worker(
        time_env.client,
        task_queue=queue,
        workflows=[AnalyzeOnce],
        activities=[activities.analyze],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        outcome = await time_env.client.execute_workflow(
            AnalyzeOnce.run, request(), id=f"analyze-{uuid.uuid4()}", task_queue=queue
        )
    assert len(fake.of_kind("call_outcome")) == 3
    # 2 s of backoff after the 503, then the 30 s the 429's Retry-After asked for.
    assert outcome.startswith("interested at 0:00:3")


async def test_a_rejected_request_is_not_retried(time_env, fake: FakeOpenAI) -> None:  # type: ignore[no-untyped-def]
    fake.script = {"call_outcome": [Status(400)]}
    subject = analyzer(fake)
    activities = CallActivities(subject.settings, SimulatedTelephony(), subject)
    queue = f"analysis-{uuid.uuid4()}"
    async with Worker(
        time_env.client,
        task_queue=queue,
        workflows=[AnalyzeOnce],
        activities=[activities.analyze],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        outcome = await time_env.client.execute_workflow(
            AnalyzeOnce.run, request(), id=f"analyze-{uuid.uuid4()}", task_queue=queue
        )
    assert outcome.endswith(f": {ANALYSIS_REJECTED}")
    assert len(fake.requests) == 1


async def test_an_order_completes_with_the_analysis_failure_recorded(time_env, fake: FakeOpenAI) -> None:  # type: ignore[no-untyped-def]
    """Through CallOrderWorkflow: a model that stays unavailable, or keeps replying off-schema, never
    holds the order; it completes with the failure in outcome_summary after a bounded number of tries."""
    settings = settings_for_tests(
        analyzer="openai",
        openai_api_key="sk-test-default",
        openai_base_url=f"{fake.base}/v1",  # type: ignore[attr-defined]
        analysis_max_invalid_replies=2,
    )

    def order(**assistant: Any) -> CallCreateParams:
        return CallCreateParams.model_validate(
            {
                "phone_number": "+33612345678",
                "assistant": {"prompt": "Offer a demo.", **assistant},
                "force_now": True,
                "metadata": {"simulation": "human:interested"},
            }
        )

    queue = f"analysis-{uuid.uuid4()}"
    async with create_worker(time_env.client, task_queue=queue, settings=settings):
        fake.script = {"call_outcome": [Status(503)]}
        unavailable = await time_env.client.execute_workflow(
            CallOrderWorkflow.run, order(), id=f"call-{uuid.uuid4()}", task_queue=queue
        )
        outcome_requests = len(fake.of_kind("call_outcome"))
        fake.script = {"call_outcome": [OUTCOME], "structured_output": [{"name": 42}]}
        off_schema = await time_env.client.execute_workflow(
            CallOrderWorkflow.run,
            order(structured_output_config=ALL_TYPES),
            id=f"call-{uuid.uuid4()}",
            task_queue=queue,
        )
        off_schema_requests = len(fake.of_kind("structured_output"))
        fake.script = {"call_outcome": [OUTCOME], "structured_output": [Status(503)]}
        half_answered = await time_env.client.execute_workflow(
            CallOrderWorkflow.run,
            order(structured_output_config=ALL_TYPES),
            id=f"call-{uuid.uuid4()}",
            task_queue=queue,
        )

    # the outcome, answered on every try while the structured output failed, was lost with it
    assert half_answered.status == "completed" and half_answered.outcome == "interested"
    assert half_answered.call_attempts[0].structured_output is None
    said = half_answered.outcome_summary or ""
    assert said.startswith("[simulated call] She asked") and said.endswith("HTTP 503]"), said
    assert unavailable.status == "completed" and unavailable.outcome is None
    assert unavailable.outcome_summary and unavailable.outcome_summary.startswith("analysis failed:")
    assert unavailable.outcome_summary.endswith("HTTP 503")  # given up: not "will retry"
    # Temporal's bound, not one more: the retries whose backoff fits within ANALYZE_PATIENCE
    assert abs(outcome_requests - _attempts_within_patience()) <= 1
    assert off_schema.status == "completed" and off_schema.outcome == "interested"
    assert off_schema.call_attempts[0].structured_output is None
    assert off_schema_requests == 2  # analysis_max_invalid_replies
    assert "structured output failed" in (off_schema.outcome_summary or "")
    # a real model's summary of the simulated callee's script says the call was simulated
    assert (off_schema.outcome_summary or "").startswith("[simulated call] ")


def _attempts_within_patience() -> int:
    """How many tries ANALYZE_RETRY's backoff schedules before ANALYZE_PATIENCE runs out."""
    interval = ANALYZE_RETRY.initial_interval.total_seconds()
    cap = ANALYZE_RETRY.maximum_interval.total_seconds()  # type: ignore[union-attr]
    started, attempts = 0.0, 1
    while started + interval < ANALYZE_PATIENCE.total_seconds():
        started += interval
        attempts += 1
        interval = min(interval * ANALYZE_RETRY.backoff_coefficient, cap)
    return attempts


async def test_the_simulated_analyzer_holds_to_the_structured_output_config_as_a_model_must() -> None:
    """Whatever a field's name (capitals, spaces, dashes), the simulated callee's `name: value` is found;
    a prompt variable outside an enum's options is not taken; a required field always has a value: the
    simulated analyzer's output passes the check the real one's replies must pass."""
    fields = [
        {"name": "Company", "type": "string", "required": True},
        {"name": "first name", "type": "string", "required": False},
        {"name": "plan", "type": "enum", "required": True, "enum_options": ["basic", "pro"]},
        {"name": "wants-demo", "type": "boolean", "required": True},
        {"name": "Seats", "type": "number", "required": False},
        {"name": "demo_date", "type": "date", "required": True},
    ]
    spec = Assistant.model_validate({"prompt": "Offer a demo.", "structured_output_config": fields})
    assistant = call_assistant_from(spec, id="a", organization_id="org_local", now=NOW)
    variables = {"Company": "Acme; Paris branch", "first name": "Ada", "plan": "enterprise", "Seats": "12"}
    transcript = _human_conversation(assistant, variables, "interested")
    analysis = await SimulatedAnalyzer().analyze(
        AnalyzeRequest(
            call_id="call-1",
            attempt_id="attempt-1",
            assistant=assistant,
            transcript=transcript,
            to_phone_number="+33612345678",
            from_phone_number="+33159000000",
        )
    )
    assert analysis.structured_output == {
        "Company": "Acme; Paris branch",  # a semicolon ends a value only before another field's name
        "first name": "Ada",
        "plan": "basic",  # "enterprise" is no option: the callee names the first one
        "wants-demo": True,
        "Seats": 12,
        "demo_date": "2026-12-01",
    }
    assert validate_output(assistant.structured_output_config, analysis.structured_output)
