"""The seed's schemas: the example response round-trips exactly, bad requests fail on the right field."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given as for_all
from hypothesis import settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from api.schemas import (
    AssistantCreateParams,
    CallCreateBody,
    CallExportParams,
    CallFilters,
    VoicePreviewParams,
)
from models import (
    DEFAULT_ASSISTANT_PROMPT,
    Assistant,
    Call,
    CallAttempt,
    CallCreateParams,
    CallCreateResponse,
    CustomLlmModel,
    CustomToolHeader,
    call_assistant_from,
)
from models.assistant import CanvasPosition, Voice
from models.call import CONTACT_FIELDS, TRANSCRIPT_MAX_BYTES, TranscriptEntry, contact_of
from models.campaign import CampaignCreateParams
from models.common import END_REASONS
from models.workflow_io import ConverseResult

EXAMPLE_PATH = Path(__file__).parent / "data" / "seed_call_example.json"
PHONE = "+33612345678"
ASSISTANT_ID = "123e4567-e89b-12d3-a456-426614174000"


def seed_example() -> dict[str, Any]:
    return json.loads(EXAMPLE_PATH.read_text())


def load_example() -> dict[str, Any]:
    """The seed's example, then the official client's newer fields as its values derive them."""
    example = seed_example()
    call = example["call"]
    for attempt in [*call["call_attempts"], call["last_call_attempt"]]:
        attempt.update(handled_by_ai=False, handled_by_human=False)  # answered_at is {}: not answered
    call["contact"] = dict.fromkeys(CONTACT_FIELDS)  # prompt_variables has no contact variable
    call["assistant"] = with_keys_after(
        call["assistant"],
        structured_output_prompt={"stt_model": "stt-rt-v5"},
        transfer_phone_number={"type": "standalone"},
    )
    return example


def with_keys_after(mapping: dict[str, Any], **after: dict[str, Any]) -> dict[str, Any]:
    """`mapping` with keys inserted after the named ones, in the order a model dumps its fields."""
    result: dict[str, Any] = {}
    for key, value in mapping.items():
        result[key] = value
        result.update(after.get(key, {}))
    return result


def error_fields(err: ValidationError) -> set[str]:
    """Every field name that appears in any error's loc."""
    return {str(part) for error in err.errors() for part in error["loc"]}


# --- the seed's example response ----------------------------------------------------------------------


def test_seed_example_round_trips_exactly() -> None:
    example = load_example()
    dumped = CallCreateResponse.model_validate(example).model_dump(mode="json")
    assert dumped == example
    # same keys in the same order, ints stay ints: the JSON text is identical
    assert json.dumps(dumped, indent=2) == json.dumps(example, indent=2)


def test_seed_example_gains_only_the_clients_newer_fields() -> None:
    """A Call stored before the client's newer fields existed reads back with them derived."""
    assert CallCreateResponse.model_validate(seed_example()).model_dump(mode="json") == load_example()


def test_seed_call_round_trips_and_json_reparses() -> None:
    example = load_example()["call"]
    call = Call.model_validate(example)
    assert call.model_dump(mode="json") == example
    assert Call.model_validate_json(call.model_dump_json()) == call
    assert call.created_at == {} and call.call_retry_config is not None
    assert call.call_retry_config.timezone == "timezone"


def test_call_dump_keeps_nulls_and_writes_utc_iso() -> None:
    call = Call(
        id="c1",
        from_phone_number=PHONE,
        organization_id="org",
        to_phone_number=PHONE,
        created_at=datetime(2025, 6, 2, 9, 30),
        call_attempts=[CallAttempt(id="a1", phone_number=PHONE, status="completed", result="human")],
    ).with_derived_fields()
    dumped = call.model_dump(mode="json")
    assert list(dumped) == list(load_example()["call"])
    assert dumped["created_at"] == "2025-06-02T09:30:00Z"
    assert dumped["outcome"] is None and dumped["assistant"] is None
    assert dumped["calls_count"] == 1 and dumped["last_call_attempt"]["id"] == "a1"
    assert list(dumped["last_call_attempt"]) == list(load_example()["call"]["last_call_attempt"])
    assert Call.model_validate(dumped) == call


def test_contact_takes_what_the_call_found_out_over_the_orders_variables() -> None:
    """Each field from the latest attempt whose structured output has it (the callee corrected
    their email on the phone), else prompt_variables, else metadata; blanks and non-strings skip."""
    attempts = [
        CallAttempt(id="2", phone_number=PHONE, structured_output={"email": " new@acme.test ", "company": 7}),
        CallAttempt(
            id="1", phone_number=PHONE, structured_output={"email": "old@acme.test", "job_title": ""}
        ),
    ]
    contact = contact_of(
        {"email": "crm@acme.test", "first_name": "Claire", "job_title": "CTO"},
        {"last_name": "Dubois", "company": "Acme", "first_name": "Other"},
        attempts,
    )
    assert contact.model_dump() == {
        "company": "Acme",
        "email": "new@acme.test",
        "first_name": "Claire",
        "job_title": "CTO",
        "last_name": "Dubois",
    }
    call = Call(
        id="c", from_phone_number=PHONE, organization_id="o", to_phone_number=PHONE, call_attempts=attempts
    )
    assert call.contact.email == "new@acme.test"  # derived when a Call is made without one
    given = Call.model_validate({**call.model_dump(mode="json"), "contact": {"email": "kept@acme.test"}})
    assert given.contact.email == "kept@acme.test"  # a Call read back keeps the contact it had


def test_an_attempt_stored_before_handled_by_existed_reads_back_with_them_derived() -> None:
    def attempt(**fields: Any) -> CallAttempt:
        return CallAttempt.model_validate({"id": "a", "phone_number": PHONE, **fields})

    assert (attempt().handled_by_ai, attempt().handled_by_human) == (False, False)
    answered = attempt(answered_at="2025-06-02T09:30:00Z", end_reason="tool_end_call")
    assert (answered.handled_by_ai, answered.handled_by_human) == (True, False)
    transferred = attempt(answered_at="2025-06-02T09:30:00Z", end_reason="transferred_warm")
    assert (transferred.handled_by_ai, transferred.handled_by_human) == (True, True)
    assert transferred.end_reason == "transfer"  # an earlier version's word, read in the client's
    assert attempt(answered_at="2025-06-02T09:30:00Z", handled_by_ai=False).handled_by_ai is False


def test_end_reasons_are_the_official_clients_words() -> None:
    """The client types `end_reason` as a closed list: a Call with any other word fails its strict
    parse, and a client matching on `transfer` (the seed's example) would never match."""
    from typing import get_args

    from revox.types.call_retrieve_response import CallCallAttempt

    clients = set(get_args(get_args(CallCallAttempt.model_fields["end_reason"].annotation)[0]))
    assert END_REASONS == clients


@pytest.mark.parametrize(
    ("earlier", "now"),
    [
        ("transferred_cold", "transfer"),
        ("order_cancelled", "participant_removed"),
        ("user_hangup", "client_initiated"),
        ("voicemail_unavailable", "voicemail"),
        ("order_errored", None),
        ("dial failed: SIP trunk unreachable", None),
        ("screening", None),
        ("voicemail", "voicemail"),
        (None, None),
    ],
)
def test_an_end_reason_an_earlier_version_stored_reads_in_the_clients_words(
    earlier: str | None, now: str | None
) -> None:
    stored = CallAttempt.model_validate({"id": "a", "phone_number": PHONE, "end_reason": earlier})
    assert stored.end_reason == now


def test_response_keeps_unknown_keys() -> None:
    example = load_example()["call"]
    example["brand_new_field"] = {"x": 1}
    assert Call.model_validate(example).model_dump(mode="json") == example


# --- invalid requests ---------------------------------------------------------------------------------

TOOL: dict[str, Any] = {
    "description": "Look up stock",
    "headers": [{"key": "Authorization", "value": "Bearer {{token}}"}],
    "input_schema": [{"name": "sku", "required": True, "type": "string"}],
    "method": "GET",
    "name": "check_inventory",
    "query_params": [{"key": "sku", "value": "{{sku}}"}],
    "url": "https://api.example.com/items/{{sku}}",
}


def with_assistant(**fields: Any) -> dict[str, Any]:
    return {"phone_number": PHONE, "assistant": {"prompt": "Hi", **fields}}


def with_window(**window: Any) -> dict[str, Any]:
    return with_assistant(call_retry_config={"calling_windows": [window]})


def with_tool(**changes: Any) -> dict[str, Any]:
    return with_assistant(custom_tools=[{**TOOL, **changes}])


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("phone-missing", {}, "phone_number"),
    ("phone-not-e164", {"phone_number": "0612345678"}, "phone_number"),
    ("phone-e164-but-invalid", {"phone_number": "+33123"}, "phone_number"),
    ("phone-letters", {"phone_number": "+33abc45678"}, "phone_number"),
    ("phone-trailing-newline", {"phone_number": PHONE + "\n"}, "phone_number"),
    ("phone-arabic-digits", {"phone_number": "+٣٣٦١٢٣٤٥٦٧٨"}, "phone_number"),
    ("transfer-phone-newline", with_assistant(transfer_phone_number=PHONE + "\n"), "transfer_phone_number"),
    ("from-phone-invalid", {"phone_number": PHONE, "from_phone_number": "+1555"}, "from_phone_number"),
    ("transfer-phone-invalid", with_assistant(transfer_phone_number="12345"), "transfer_phone_number"),
    ("assistant-from-phone-invalid", with_assistant(from_phone_number="+999999"), "from_phone_number"),
    ("prompt-missing", {"phone_number": PHONE, "assistant": {}}, "prompt"),
    ("background-volume-high", with_assistant(background_sound_volume=1.5), "background_sound_volume"),
    ("thinking-volume-negative", with_assistant(thinking_sound_volume=-0.1), "thinking_sound_volume"),
    ("thinking-probability-high", with_assistant(thinking_sound_probability=2), "thinking_sound_probability"),
    ("delay-negative", with_assistant(first_sentence_delay_ms=-1), "first_sentence_delay_ms"),
    ("voice-speed-low", with_assistant(voice={"id": "v", "provider": "cartesia", "speed": 0.5}), "speed"),
    (
        "voice-elevenlabs-fast",
        with_assistant(voice={"id": "v", "provider": "elevenlabs", "speed": 1.3}),
        "speed",
    ),
    ("voice-volume-high", with_assistant(voice={"id": "v", "provider": "cartesia", "volume": 2.1}), "volume"),
    ("voice-empty-id", with_assistant(voice={"id": "", "provider": "cartesia"}), "id"),
    ("voice-id-a-path", with_assistant(voice={"id": "../v1/user", "provider": "elevenlabs"}), "id"),
    ("voice-unknown-key", with_assistant(voice={"id": "v", "provider": "cartesia", "sped": 1}), "sped"),
    ("window-25h", with_window(calling_window_start_time="25:00"), "calling_window_start_time"),
    ("window-10h", with_window(calling_window_start_time="10h"), "calling_window_start_time"),
    ("window-13pm", with_window(calling_window_end_time="13pm"), "calling_window_end_time"),
    ("window-fullwidth", with_window(calling_window_start_time="０9:00"), "calling_window_start_time"),
    (
        "window-start-after-end",
        with_window(calling_window_start_time="18:00", calling_window_end_time="9am"),
        "calling_windows",
    ),
    ("window-retry-delay-negative", with_window(retry_delay_seconds=-1), "retry_delay_seconds"),
    ("retry-unknown-timezone", with_assistant(call_retry_config={"timezone": "Mars/Olympus"}), "timezone"),
    ("retry-empty-days", with_assistant(call_retry_config={"allowed_days": []}), "allowed_days"),
    ("retry-bad-day", with_assistant(call_retry_config={"allowed_days": ["funday"]}), "allowed_days"),
    (
        "retry-max-attempts-zero",
        with_assistant(call_retry_config={"max_retry_attempts": 0}),
        "max_retry_attempts",
    ),
    ("tool-duplicate-names", with_assistant(custom_tools=[TOOL, TOOL]), "custom_tools"),
    ("tool-name-not-snake", with_tool(name="CheckInventory"), "name"),
    ("tool-name-double-underscore", with_tool(name="check__inventory"), "name"),
    ("tool-empty-description", with_tool(description=""), "description"),
    ("tool-url-not-http", with_tool(url="ftp://example.com/{{sku}}"), "url"),
    ("tool-url-relative", with_tool(url="/items/{{sku}}"), "url"),
    ("tool-header-empty-key", with_tool(headers=[{"key": "", "value": "v"}]), "key"),
    ("tool-query-empty-key", with_tool(query_params=[{"key": "", "value": "v"}]), "key"),
    ("tool-bad-method", with_tool(method="FETCH"), "method"),
    (
        "tool-missing-headers",
        {
            "phone_number": PHONE,
            "assistant": {
                "prompt": "Hi",
                "custom_tools": [{k: v for k, v in TOOL.items() if k != "headers"}],
            },
        },
        "headers",
    ),
    (
        "tool-input-duplicate-names",
        with_tool(input_schema=[{"name": "a", "required": True, "type": "string"}] * 2),
        "input_schema",
    ),
    (
        "enum-without-options",
        with_assistant(structured_output_config=[{"name": "tier", "required": True, "type": "enum"}]),
        "enum_options",
    ),
    (
        "enum-with-empty-options",
        with_assistant(
            structured_output_config=[{"name": "tier", "required": True, "type": "enum", "enum_options": []}]
        ),
        "enum_options",
    ),
    (
        "structured-output-duplicate-names",
        with_assistant(structured_output_config=[{"name": "a", "required": False, "type": "date"}] * 2),
        "structured_output_config",
    ),
    (
        "field-spec-bad-type",
        with_assistant(structured_output_config=[{"name": "a", "required": True, "type": "integer"}]),
        "type",
    ),
    ("bad-email", with_assistant(email_notification_address="not-an-email"), "email_notification_address"),
    ("bad-outcome", with_assistant(email_notification_outcomes=["happy"]), "email_notification_outcomes"),
    ("bad-webhook-url", with_assistant(webhook_url="example.com/hook"), "webhook_url"),
    ("webhook-url-not-http", with_assistant(webhook_url="mailto:a@example.com"), "webhook_url"),
    (
        "custom-llm-bad-api-url",
        with_assistant(
            llm_model={"type": "custom", "api_key": "k", "api_url": "together", "model_name": "m"}
        ),
        "api_url",
    ),
    (
        "custom-llm-empty-key",
        with_assistant(
            llm_model={"type": "custom", "api_key": "", "api_url": "https://x.ai/v1", "model_name": "m"}
        ),
        "api_key",
    ),
    ("unknown-llm-type", with_assistant(llm_model={"type": "local", "name": "llama"}), "llm_model"),
    (
        "dedicated-unknown-name",
        with_assistant(llm_model={"type": "dedicated-instance", "name": "gpt-5"}),
        "name",
    ),
    (
        "realtime-empty-voice",
        with_assistant(
            llm_model={
                "type": "realtime",
                "provider": "openai",
                "realtime_model_id": "m",
                "realtime_voice_id": "",
            }
        ),
        "realtime_voice_id",
    ),
    (
        "max-duration-message-151",
        with_assistant(max_duration_end_message="x" * 151),
        "max_duration_end_message",
    ),
    ("max-call-duration-zero", with_assistant(max_call_duration_secs=0), "max_call_duration_secs"),
    ("calendly-empty", with_assistant(calendly={"connection_id": "", "event_type_id": "e"}), "connection_id"),
    ("bad-background-sound", with_assistant(background_sound="audio/jungle.ogg"), "background_sound"),
    ("bad-first-sentence-mode", with_assistant(first_sentence_mode="loud"), "first_sentence_mode"),
    (
        "both-assistant-and-id",
        {"phone_number": PHONE, "assistant": {"prompt": "Hi"}, "assistant_id": ASSISTANT_ID},
        "assistant_id",
    ),
    ("bad-assistant-id", {"phone_number": PHONE, "assistant_id": "assistant-1"}, "assistant_id"),
    (
        "skip-window-conflicts-force-now",
        {"phone_number": PHONE, "force_now": True, "skip_calling_window": False},
        "skip_calling_window",
    ),
    ("concurrency-max-zero", {"phone_number": PHONE, "concurrency": {"key": "k", "max": 0}}, "max"),
    ("concurrency-max-fraction", {"phone_number": PHONE, "concurrency": {"key": "k", "max": 2.5}}, "max"),
    ("concurrency-max-bool", {"phone_number": PHONE, "concurrency": {"key": "k", "max": True}}, "max"),
    ("concurrency-max-string", {"phone_number": PHONE, "concurrency": {"key": "k", "max": "3"}}, "max"),
    ("concurrency-empty-key", {"phone_number": PHONE, "concurrency": {"key": "", "max": 1}}, "key"),
    ("concurrency-long-key", {"phone_number": PHONE, "concurrency": {"key": "é" * 128, "max": 1}}, "key"),
    # The seed's numbers and booleans are JSON's: true is not 1, "60" is not 60, 1 is not true.
    (
        "retry-attempts-bool",
        {
            "phone_number": PHONE,
            "assistant": {"prompt": "p", "call_retry_config": {"max_retry_attempts": True}},
        },
        "max_retry_attempts",
    ),
    (
        "retry-delay-string",
        {
            "phone_number": PHONE,
            "assistant": {
                "prompt": "p",
                "call_retry_config": {"calling_windows": [{"retry_delay_seconds": "60"}]},
            },
        },
        "retry_delay_seconds",
    ),
    (
        "first-sentence-delay-bool",
        {"phone_number": PHONE, "assistant": {"prompt": "p", "first_sentence_delay_ms": True}},
        "first_sentence_delay_ms",
    ),
    (
        "volume-bool",
        {"phone_number": PHONE, "assistant": {"prompt": "p", "background_sound_volume": True}},
        "background_sound_volume",
    ),
    ("force-now-string", {"phone_number": PHONE, "force_now": "yes"}, "force_now"),
    ("force-now-number", {"phone_number": PHONE, "force_now": 1}, "force_now"),
    ("bad-scheduled-at", {"phone_number": PHONE, "scheduled_at": "next tuesday"}, "scheduled_at"),
    ("scheduled-at-number", {"phone_number": PHONE, "scheduled_at": 1700000000}, "scheduled_at"),
    ("metadata-not-str", {"phone_number": PHONE, "metadata": {"n": 1}}, "metadata"),
    ("prompt-variables-not-dict", {"phone_number": PHONE, "prompt_variables": ["a"]}, "prompt_variables"),
    (
        "scheduled-at-past-year-9999",
        {"phone_number": PHONE, "scheduled_at": "9999-12-31T23:30:00-01:00"},
        "scheduled_at",
    ),
    (
        "scheduled-at-before-year-1",
        {"phone_number": PHONE, "scheduled_at": "0001-01-01T00:00:00+01:00"},
        "scheduled_at",
    ),
    ("sms-enabled-one", with_assistant(sms_enabled=1), "sms_enabled"),
    ("ivr-enabled-yes", with_assistant(ivr_navigation_enabled="yes"), "ivr_navigation_enabled"),
    (
        "field-required-string",
        with_assistant(structured_output_config=[{"name": "n", "type": "string", "required": "false"}]),
        "required",
    ),
    (
        "email-list-with-a-non-address",
        with_assistant(email_notification_address="a@x.com,nope"),
        "email_notification_address",
    ),
    ("sms-outcome-unknown", with_assistant(after_call_sms_outcomes=["happy"]), "after_call_sms_outcomes"),
    (
        "transfer-destinations-with-one-label-twice",
        with_assistant(
            transfer_destinations=[
                {"label": "Sales", "phone_number": "+33612345679"},
                {"label": " sales", "phone_number": "+33612345670"},
            ]
        ),
        "label",
    ),
    (
        "transfer-destination-and-another-number",
        with_assistant(
            transfer_phone_number="+33612345670",
            transfer_destinations=[{"label": "Sales", "phone_number": "+33612345679"}],
        ),
        "transfer_destinations",
    ),
    (
        "transfer-destination-not-e164",
        with_assistant(transfer_destinations=[{"label": "Sales", "phone_number": "0612345679"}]),
        "phone_number",
    ),
]


@pytest.mark.parametrize(("payload", "field"), [pytest.param(p, f, id=i) for i, p, f in INVALID])
def test_invalid_request_names_the_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CallCreateParams.model_validate(payload)
    assert field in error_fields(caught.value), caught.value.errors()


STRICT_FIELDS = [  # (model, a valid body, a number or flag field, values of another JSON type)
    (Voice, {"id": "v", "provider": "cartesia"}, "speed", ["1", True]),
    (CanvasPosition, {"x": 0}, "y", ["1", False]),
    (CallFilters, {}, "page", ["2", True]),
    (CallExportParams, {"filters": {}}, "include_metadata", ["true", 1]),
    (VoicePreviewParams, {"provider": "cartesia", "voiceId": "v"}, "volume", ["1", True]),
    (
        CampaignCreateParams,
        {"name": "C", "assistant_id": str(uuid.uuid4()), "contacts": []},
        "max_concurrent_calls",
        ["2", True],
    ),
]


@pytest.mark.parametrize(
    ("model", "body", "field", "wrong"),
    [pytest.param(*case, id=f"{case[0].__name__}.{case[2]}") for case in STRICT_FIELDS],
)
def test_a_number_or_flag_of_another_json_type_names_the_field(
    model: type[BaseModel], body: dict[str, Any], field: str, wrong: list[object]
) -> None:
    """As everywhere in the API: a JSON `"1"` or `true` where a number goes (or `1` for a flag) is a 422,
    not quietly taken as 1."""
    for value in wrong:
        with pytest.raises(ValidationError) as caught:
            model.model_validate({**body, field: value})
        assert field in error_fields(caught.value), (value, caught.value.errors())


def test_invalid_cases_are_many() -> None:
    assert len(INVALID) >= 30


# --- valid requests -----------------------------------------------------------------------------------

FULL_ASSISTANT: dict[str, Any] = {
    "prompt": "You call {{name}} about their order.",
    "after_call_sms_prompt": "Thank {{name}}.",
    "background_sound": "audio/office.ogg",
    "background_sound_volume": 0.3,
    "calendly": {"connection_id": "conn", "event_type_id": "https://api.calendly.com/event_types/abc"},
    "call_retry_config": {
        "allowed_days": ["monday", "saturday"],
        "call_twice_in_a_row": True,
        "calling_windows": [
            {
                "calling_window_start_time": "9am",
                "calling_window_end_time": "12:00",
                "retry_delay_seconds": 600,
            },
            {"calling_window_start_time": "14:00", "calling_window_end_time": "6pm"},
        ],
        "max_retry_attempts": 5,
        "timezone": "Europe/Paris",
    },
    "custom_tools": [
        TOOL,
        {**TOOL, "name": "book_slot", "method": "POST", "body_template": '{"sku": "{{sku}}"}'},
    ],
    "email_notification_address": "sales@example.com",
    "email_notification_outcomes": ["interested", "completed"],
    "end_of_call_sentence": "Goodbye!",
    "faq_items": [{"question": "Who are you?", "answer": "An assistant."}],
    "first_sentence": "Hello {{name}}!",
    "first_sentence_delay_ms": 0,
    "first_sentence_mode": "static",
    "from_phone_number": "+14155552671",
    "human_transfer_mode": "warm",
    "ivr_navigation_enabled": True,
    "llm_model": {
        "type": "custom",
        "api_key": "sk-secret",
        "api_url": "https://api.together.xyz/v1",
        "model_name": "m",
    },
    "max_call_duration_secs": 300.5,
    "max_duration_end_message": "x" * 150,
    "sms_enabled": True,
    "sms_template": "See you {{name}}",
    "structured_output_config": [
        {"name": "email", "required": False, "type": "string", "description": "their email"},
        {"name": "tier", "required": True, "type": "enum", "enum_options": ["gold", "silver"]},
    ],
    "structured_output_prompt": "Extract from {{transcript}}",
    "thinking_sound": "keyboard-typing.ogg",
    "thinking_sound_probability": 1,
    "thinking_sound_volume": 0,
    "transfer_phone_number": "+442071838750",
    "voice": {"id": "voice-1", "provider": "elevenlabs", "speed": 1.2, "volume": 0.5},
    "voicemail_message": "Call us back.",
    "voicemail_sms_prompt": "We missed you.",
    "warm_transfer_summary_instructions": "Be brief.",
    "webhook_url": "https://hooks.example.com/calls",
    "a_field_from_a_newer_client": 1,
}


def test_minimal_request() -> None:
    params = CallCreateParams.model_validate({"phone_number": PHONE})
    assert params.phone_number == PHONE
    assert params.assistant is None and params.assistant_id is None
    assert params.force_now is False and params.scheduled_at is None


def test_full_request() -> None:
    params = CallCreateParams.model_validate(
        {
            "phone_number": PHONE,
            "assistant": FULL_ASSISTANT,
            "concurrency": {"key": "campaign-7", "max": 3.0},
            "force_now": True,
            "from_phone_number": "+14155552671",
            "metadata": {"crm_id": "42"},
            "prompt_variables": {"name": "Ada"},
            "scheduled_at": "2025-06-02T09:30:00+02:00",
            "newer_top_level_field": True,
        }
    )
    assert params.concurrency is not None and params.concurrency.max == 3
    assert isinstance(params.concurrency.max, int)
    assert params.scheduled_at == datetime(2025, 6, 2, 7, 30, tzinfo=UTC)
    assistant = params.assistant
    assert assistant is not None and assistant.voice is not None and assistant.voice.speed == 1.2
    assert isinstance(assistant.llm_model, CustomLlmModel)
    # secrets stay out of reprs but serialize normally
    assert "sk-secret" not in repr(params)
    assert "Bearer" not in repr(assistant.custom_tools)
    dumped = params.model_dump(mode="json")
    assert dumped["assistant"]["llm_model"]["api_key"] == "sk-secret"
    assert dumped["assistant"]["custom_tools"][0]["headers"][0]["value"] == "Bearer {{token}}"
    assert dumped["scheduled_at"] == "2025-06-02T07:30:00Z"
    lowercase = CallCreateParams.model_validate(
        {"phone_number": PHONE, "scheduled_at": "2025-06-02t07:30:00z"}
    )
    assert lowercase.scheduled_at == params.scheduled_at  # RFC 3339 allows it
    assert "a_field_from_a_newer_client" not in dumped["assistant"]
    # what the Temporal payload converter does: JSON out and back
    assert CallCreateParams.model_validate_json(params.model_dump_json()) == params


def test_header_value_is_hidden_from_repr() -> None:
    assert "hunter2" not in repr(CustomToolHeader(key="Authorization", value="hunter2"))


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"skip_calling_window": True}, True),
        ({"force_now": True}, True),
        ({"force_now": True, "skip_calling_window": True}, True),
        ({"force_now": None, "skip_calling_window": True}, True),
        ({"skip_calling_window": False}, False),
        ({}, False),
    ],
)
def test_skip_calling_window_is_force_now(flags: dict[str, Any], expected: bool) -> None:
    params = CallCreateParams.model_validate({"phone_number": PHONE, **flags})
    assert params.force_now is expected and params.skip_calling_window is expected
    dumped = params.model_dump(mode="json")
    assert dumped["force_now"] is expected and "skip_calling_window" not in dumped


def test_naive_scheduled_at_is_utc() -> None:
    params = CallCreateParams.model_validate({"phone_number": PHONE, "scheduled_at": "2025-06-02T09:30:00"})
    assert params.scheduled_at == datetime(2025, 6, 2, 9, 30, tzinfo=UTC)
    aware = CallCreateParams(phone_number=PHONE, scheduled_at=datetime(2025, 6, 2, 9, 30))
    assert aware.scheduled_at is not None and aware.scheduled_at.tzinfo is not None


def test_assistant_id_is_normalised() -> None:
    params = CallCreateParams.model_validate({"phone_number": PHONE, "assistant_id": ASSISTANT_ID.upper()})
    assert params.assistant_id == ASSISTANT_ID


# --- call_assistant_from ------------------------------------------------------------------------------

NOW = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)


def test_call_assistant_defaults() -> None:
    record = call_assistant_from(
        Assistant(prompt=DEFAULT_ASSISTANT_PROMPT), id="a1", organization_id="org", now=NOW
    )
    assert record.first_sentence_delay_ms == 400 and record.first_sentence_mode == "generated"
    assert record.llm_model.model_dump() == {"name": "gpt-4.1", "type": "dedicated-instance"}
    assert record.ivr_navigation_enabled is False and record.sms_enabled is False
    assert record.max_call_duration_secs == 600 and record.name == "inline assistant"
    assert 0 <= record.background_sound_volume <= 1 and 0 <= record.thinking_sound_volume <= 1
    assert 0 <= record.thinking_sound_probability <= 1
    assert record.call_retry_config is not None
    assert record.call_retry_config.model_dump() == {
        "allowed_days": ["monday", "tuesday", "wednesday", "thursday", "friday"],
        "call_twice_in_a_row": False,
        "calling_windows": [
            {
                "calling_window_end_time": "18:00",
                "calling_window_start_time": "10:00",
                "retry_delay_seconds": 7200,
            }
        ],
        "max_retry_attempts": 3,
        "timezone": None,
    }
    dumped = record.model_dump(mode="json")
    assert list(dumped) == list(load_example()["call"]["assistant"])
    assert dumped["created_at"] == dumped["updated_at"] == "2025-06-02T08:00:00Z"
    assert dumped["voice"] is None and dumped["custom_tools"] is None


def test_call_assistant_keeps_request_values() -> None:
    assistant = Assistant.model_validate(copy.deepcopy(FULL_ASSISTANT))
    record = call_assistant_from(assistant, id="a1", organization_id="org", now=NOW, name="Sales")
    dumped = record.model_dump(mode="json")
    assert dumped["name"] == "Sales" and dumped["first_sentence_delay_ms"] == 0
    assert dumped["call_retry_config"]["timezone"] == "Europe/Paris"
    assert dumped["llm_model"]["api_key"] == "sk-secret"
    assert dumped["faq_items"] == [
        {
            "answer": "An assistant.",
            "question": "Who are you?",
            "id": None,
            "needs_human_answer": False,
            "source": "human",
        }
    ]
    assert [tool["name"] for tool in dumped["custom_tools"]] == ["check_inventory", "book_slot"]
    assert "sk-secret" not in repr(record)
    call = Call(
        id="c1", assistant=record, from_phone_number=PHONE, organization_id="org", to_phone_number=PHONE
    )
    assert Call.model_validate_json(call.model_dump_json()) == call


def test_temporal_pydantic_converter_round_trips() -> None:
    from temporalio.contrib.pydantic import pydantic_data_converter

    converter = pydantic_data_converter.payload_converter
    call = Call.model_validate(load_example()["call"])
    params = CallCreateParams.model_validate(
        {
            "phone_number": PHONE,
            "assistant": FULL_ASSISTANT,
            "skip_calling_window": True,
            "scheduled_at": "2025-06-02",
        }
    )
    call_back, params_back = converter.from_payloads(
        converter.to_payloads([call, params]), [Call, CallCreateParams]
    )
    assert call_back == call and params_back == params
    assert call_back.model_dump(mode="json") == load_example()["call"]


TRANSFER_TO = {"transfer_phone_number": "+33612345678"}
BRIEF = {"warm_transfer_summary_instructions": "brief"}


@pytest.mark.parametrize(
    ("request_fields", "shown"),
    [
        ({"human_transfer_mode": "warm", **BRIEF}, (None, None)),
        (TRANSFER_TO, ("cold", None)),
        ({**TRANSFER_TO, **BRIEF}, ("cold", None)),
        ({**TRANSFER_TO, "human_transfer_mode": "warm", **BRIEF}, ("warm", "brief")),
    ],
)
def test_the_assistant_shows_the_transfer_as_it_will_happen(request_fields, shown) -> None:
    """Seed: human_transfer_mode is "null when transfer is not configured"; the summary instructions
    are "null when not configured or cold transfer"; the agent transfers cold unless told warm."""
    view = call_assistant_from(
        Assistant(prompt="Hi", **request_fields),
        id="a",
        organization_id="o",
        now=datetime(2026, 3, 2, tzinfo=UTC),
    )
    assert (view.human_transfer_mode, view.warm_transfer_summary_instructions) == shown


def test_the_official_clients_notification_and_transfer_options_are_understood() -> None:
    """revox 0.5.0 documents a comma-separated email list, "none" for a call without an outcome,
    after_call_sms_outcomes and transfer_destinations: each is taken, not dropped or refused."""
    params = CallCreateParams.model_validate(
        with_assistant(
            email_notification_address="alice@x.com,bob@y.com",
            email_notification_outcomes=["interested", "none"],
            after_call_sms_outcomes=["interested"],
            transfer_destinations=[{"label": "Sales", "phone_number": "+33612345679"}],
            human_transfer_mode="warm",
        )
    )
    assistant = params.assistant
    assert assistant is not None
    assert assistant.email_notification_address == "alice@x.com, bob@y.com"
    assert assistant.transfer_phone_number == "+33612345679"  # the one the agent transfers to
    shown = call_assistant_from(assistant, id="a", organization_id="o", now=datetime(2026, 1, 1, tzinfo=UTC))
    assert shown.human_transfer_mode == "warm"
    assert shown.after_call_sms_outcomes == ["interested"]
    assert shown.email_notification_outcomes == ["interested", "none"]


def test_several_transfer_destinations_are_kept_for_the_agent_to_choose_from() -> None:
    """With several destinations the agent picks one by label; the first is the number shown, unless
    transfer_phone_number names another of them."""
    destinations = [
        {"label": "Sales", "phone_number": "+33612345679"},
        {"label": "Support", "phone_number": "+33612345670"},
    ]
    for given, shown_number in ((None, "+33612345679"), ("+33612345670", "+33612345670")):
        params = CallCreateParams.model_validate(
            with_assistant(transfer_destinations=destinations, transfer_phone_number=given)
        )
        assert params.assistant is not None
        shown = call_assistant_from(
            params.assistant, id="a", organization_id="o", now=datetime(2026, 1, 1, tzinfo=UTC)
        )
        assert shown.transfer_phone_number == shown_number
        assert [(d.label, d.phone_number) for d in shown.transfer_destinations] == [
            ("Sales", "+33612345679"),
            ("Support", "+33612345670"),
        ]


def test_a_voice_preview_reads_the_key_the_voice_agent_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """ElevenLabs' key is ELEVEN_API_KEY, as the README and the agent say (ELEVENLABS_API_KEY too)."""
    from api.errors import ApiError
    from api.voices import _provider_key

    for variable in ("ELEVEN_API_KEY", "ELEVENLABS_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ApiError) as missing:
        _provider_key("elevenlabs")
    assert missing.value.status == 501 and "ELEVEN_API_KEY" in missing.value.message
    monkeypatch.setenv("ELEVEN_API_KEY", "sk_el")
    assert _provider_key("elevenlabs") == "sk_el"
    monkeypatch.delenv("ELEVEN_API_KEY")
    monkeypatch.setenv("ELEVENLABS_API_KEY", "sk_el_long")
    assert _provider_key("elevenlabs") == "sk_el_long"


def test_a_custom_tool_header_http_cannot_send_is_refused() -> None:
    """A name with a space or a line break, a value with CR, LF or NUL: the HTTP library refuses to
    send them, so the tool failed on every call; refused when the assistant is given."""

    def tool(key: str, value: str) -> dict[str, Any]:
        return {
            "name": "crm",
            "description": "CRM",
            "method": "GET",
            "url": "https://crm.example",
            "headers": [{"key": key, "value": value}],
            "query_params": [],
            "input_schema": [],
        }

    def given(tools: list[dict[str, Any]]) -> AssistantCreateParams:
        return AssistantCreateParams.model_validate({"name": "n", "prompt": "p", "custom_tools": tools})

    given([tool("X-Api-Key", "Bearer a.b/c=")])
    for key, value, field in (
        ("a b", "x", "key"),
        ("k\n", "x", "key"),
        ("k", "a\r\nb", "value"),
        ("k", "a\x00", "value"),
    ):
        with pytest.raises(ValidationError) as refused:
            given([tool(key, value)])
        assert refused.value.errors()[0]["loc"] == ("custom_tools", 0, "headers", 0, field)
        Assistant.model_validate({"prompt": "p", "custom_tools": [tool(key, value)]})  # stored: still loads


def test_a_custom_tool_the_agent_could_not_use_is_refused_where_requests_come_in() -> None:
    """Named like the agent's own tools (it did not start: "duplicate function name"), past 64
    characters (an LLM function's limit), a body_template that is no JSON once filled in, or a URL no
    HTTP client can send to (each failed every call): a 422 naming it, for POST /call's inline
    assistant and /assistants alike. An assistant stored before, or an order started before, still
    loads (and replays)."""
    tool = {
        "name": "crm",
        "description": "CRM",
        "method": "POST",
        "url": "https://crm.example/{{first name}}",
        "headers": [],
        "query_params": [],
        "input_schema": [],
    }
    for change, field in (
        ({"name": "end_call"}, "name"),
        ({"name": "send_sms"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"body_template": '{"day": "{{day}}",}'}, "body_template"),
        ({"url": "http:/crm.example/{{first name}}"}, "url"),  # a slash short: no host to send to
        ({"url": "https://crm.example\\{{first name}}"}, "url"),
        ({"url": "https://xn--n3h.example/{{first name}}"}, "url"),  # ☃, which IDNA 2008 refuses
    ):
        bad = {**tool, **change}
        with pytest.raises(ValidationError) as refused:
            AssistantCreateParams.model_validate({"name": "n", "prompt": "p", "custom_tools": [bad]})
        assert refused.value.errors()[0]["loc"] == ("custom_tools", 0, field)
        with pytest.raises(ValidationError) as refused:
            CallCreateBody.model_validate(
                {"phone_number": "+33612345678", "assistant": {"prompt": "p", "custom_tools": [bad]}}
            )
        assert refused.value.errors()[0]["loc"] == ("assistant", "custom_tools", 0, field)
        Assistant.model_validate({"prompt": "p", "custom_tools": [bad]})  # stored before: still loads
    for body in ('{"n": "{{first name}}", "count": {{count}}, "ok": "{{ok}}"}', '{"{{field}}": "{{value}}"}'):
        usable = {**tool, "body_template": body}  # a placeholder as a key, too: JSON once filled in
        AssistantCreateParams.model_validate({"name": "n", "prompt": "p", "custom_tools": [usable]})


def test_json_nested_too_deeply_to_read_is_left_to_fastapi() -> None:
    """A body nested past Python's recursion limit, holding a surrogate escape: FastAPI answers it (a
    400), not a RecursionError (a 500)."""
    from api.unicode import check_unicode

    check_unicode(b"[" * 5000 + b'"\\ud83d"' + b"]" * 5000)  # no exception


def test_client_options_outdial_does_not_carry_out_are_refused_not_dropped() -> None:
    """The official client's `zoho` and `precall_lookup_url`: a 422 naming them, where they were
    accepted, stored nowhere and ignored; left unset (or null) they are no concern."""
    from api.schemas import AssistantCreateParams

    base = {"name": "a", "prompt": "p"}
    AssistantCreateParams.model_validate({**base, "zoho": None, "precall_lookup_url": None})
    zoho = {
        "connection_id": "c",
        "field_mapping": [],
        "log_call_activity": False,
        "module": "Leads",
        "outcomes": [],
    }
    for field, value in (("zoho", zoho), ("precall_lookup_url", "https://crm.example/{{phone}}")):
        with pytest.raises(ValidationError) as refused:
            AssistantCreateParams.model_validate({**base, field: value})
        [error] = refused.value.errors()
        assert error["loc"] == (field,) and "not supported" in error["msg"]


@settings(max_examples=60, deadline=None)
@for_all(
    st.lists(
        st.tuples(
            st.sampled_from(["user", "assistant", "tool"]), st.integers(0, 90_000), st.sampled_from("aé€😀")
        ),
        max_size=40,
    )
)
def test_a_transcript_is_cut_to_what_an_order_can_carry_keeping_its_start_and_end(
    turns: list[tuple[str, int, str]],
) -> None:
    """Any transcript within TRANSCRIPT_MAX_BYTES of JSON; one within it already, as it was; cut, it keeps
    its entries in order (their roles) from the call's first words to its last, its middle left out if
    need be, one entry saying how many turns."""
    entries = [
        TranscriptEntry(role=role, content=f"<{n}>" + char * size)
        for n, (role, size, char) in enumerate(turns)
    ]  # type: ignore[arg-type]
    _assert_bounded(entries)


def _assert_bounded(entries: list[TranscriptEntry]) -> None:
    bounded = ConverseResult(result="human", transcript=entries).transcript or []
    assert sum(len(e.model_dump_json().encode()) for e in bounded) <= TRANSCRIPT_MAX_BYTES
    if sum(len(e.model_dump_json().encode()) for e in entries) <= TRANSCRIPT_MAX_BYTES:
        assert bounded == entries
    kept = {int(e.content[1 : e.content.index(">")]): e for e in bounded if e.content.startswith("<")}
    gaps = [int(e.content.split()[1]) for e in bounded if not e.content.startswith("<")]
    assert list(kept) == sorted(kept) and len(gaps) <= 1 and len(kept) + sum(gaps) == len(entries)
    assert all(e.role == entries[n].role for n, e in kept.items())
    if entries:
        assert min(kept) == 0 and max(kept) == len(entries) - 1


def test_a_transcript_of_thousands_of_turns_is_cut_too() -> None:
    """Its middle entries were emptied, not left out: past some 4,000 turns it stayed over the bound."""
    roles = ("user", "assistant")
    _assert_bounded([TranscriptEntry(role=roles[n % 2], content=f"<{n}>ok") for n in range(10_000)])
