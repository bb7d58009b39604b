"""The seed's assistant, in both shapes: the strict inline `Assistant` of a request, and the lenient
`CallAssistant` a `Call` carries back (with `call_assistant_from` to turn the one into the other).

Request models enforce every documented constraint; every error names its field in pydantic's `loc`.
Response records ("...Record", `CallAssistant`) only check types and enum literals, so anything the API
ever returned (the seed's own example has `"timezone": "timezone"`) reads back unchanged.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    HttpUrl,
    Strict,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from models.common import (
    E164,
    MAX_SAFE_INT,
    AssistantType,
    BackgroundSound,
    FieldType,
    FirstSentenceMode,
    HttpMethod,
    OutcomeOrNone,
    SttModel,
    ThinkingSound,
    TransferMode,
    VoiceId,
    VoiceProvider,
    Weekday,
)
from models.retry import CallRetryConfig

# --- shared helpers ---------------------------------------------------------------------------------


def located_error(loc: tuple[str | int, ...], message: str, value: Any) -> ValidationError:
    """A ValidationError at `loc` (relative to the model being validated), for cross-field checks."""
    error = PydanticCustomError("value_error", "Value error, {reason}", {"reason": message})
    return ValidationError.from_exception_data(
        "outdial", [InitErrorDetails(type=error, loc=loc, input=value)]
    )


_HTTP_URL: TypeAdapter[HttpUrl] = TypeAdapter(HttpUrl)
# `{{name}}`: a prompt variable (any name the request's prompt_variables may use) or a tool's input, in
# a prompt, a first sentence, an SMS or a custom tool's URL, headers and body alike.
PLACEHOLDER = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
# The same, quoted as a whole JSON string in a tool's body_template: it becomes the value, typed.
QUOTED_PLACEHOLDER = re.compile(r'"\{\{\s*([^{}]+?)\s*\}\}"')
# The voice agent's own tools (agent/call_agent.py): a custom tool named like one would stop it starting.
BUILTIN_TOOL_NAMES = frozenset(
    {"end_call", "transfer_to_human", "send_dtmf", "skip_turn", "human_reached", "send_sms"}
    | {"check_availability", "book_meeting"}
)


def check_http_url(value: str) -> str:
    """An absolute http(s) URL with a host; kept as the caller wrote it (no normalisation). The
    messages never quote the URL: one often holds a token, and an order's refusal is kept in history."""
    try:
        host = _HTTP_URL.validate_python(value).host or ""
    except ValidationError:
        raise ValueError("must be an http(s) URL (e.g. https://example.com/hook)") from None
    try:
        host.encode("idna")  # what resolving it does first: a label over 63 characters fails there
    except UnicodeError:
        raise ValueError("must have a host name DNS can look up (labels of at most 63 characters)") from None
    if value != value.strip():
        raise ValueError("must not have surrounding whitespace")
    return value


# A host HTTP clients (httpx: webhooks, custom tools) send to: a DNS name (IDNA-encoded) or an IP address.
SENDABLE_HOST = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]+")


def unsendable_reason(url: str) -> str | None:
    """Why httpx could not send to a URL the WHATWG parser of `check_http_url` takes (`http:/host`,
    a backslash for a slash), else None. Checked where requests come in (`refuse_unusable_tools`,
    `refuse_unsendable_url`), not in the models: orders started and assistants stored before still load
    and replay (a delivery to such a URL fails for good, saying why)."""
    try:
        parsed = httpx.URL(url)
        host = parsed.host  # decoded from punycode: one IDNA 2008 refuses (`xn--n3h`, ☃) raises
    except (httpx.InvalidURL, TypeError, UnicodeError):
        return "must be a URL HTTP clients can send to"
    if not host:
        return "has no host: an http(s) URL's follows `//`"
    if not SENDABLE_HOST.fullmatch(parsed.raw_host.decode("ascii", "replace")):
        return "its host is no host name (a backslash, a space?)"
    return None


def refuse_unsendable_url(url: str | None, *at: str | int) -> None:
    """A located ValidationError when `url` (a webhook_url) is one `unsendable_reason` refuses; the URL
    is not quoted back, as it often holds a token."""
    if url and (reason := unsendable_reason(url)):
        raise located_error(at, reason, None)


def check_templated_url(value: str) -> str:
    """An http(s) URL once its {{variable}} placeholders are filled in."""
    try:
        check_http_url(PLACEHOLDER.sub("x", value))
    except ValueError:
        raise ValueError("must be an http(s) URL once its {{variable}} are filled in") from None
    return value


def _as_utc(value: datetime | dict[str, Any] | None) -> datetime | dict[str, Any] | None:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


HttpUrlStr = Annotated[str, AfterValidator(check_http_url)]
Timestamp = Annotated[datetime | dict[str, Any] | None, AfterValidator(_as_utc)]
"""A response timestamp: our own values are aware UTC datetimes (dumped as ISO 8601, '...Z'); the
seed's example has `{}` (its schema says `object`), which reads back and dumps as `{}`; naive -> UTC."""


def _check_unique_names(items: list[Any] | None) -> list[Any] | None:
    seen: set[str] = set()
    for index, item in enumerate(items or []):
        if item.name in seen:
            raise located_error((index, "name"), f"duplicate name {item.name!r}", item.name)
        seen.add(item.name)
    return items


# --- request: the strict inline assistant -------------------------------------------------------------


StrictBool = Annotated[bool, Strict()]  # JSON true or false only: 1 or "yes" is a 422


class _Strict(BaseModel):
    """Nested request parts reject unknown keys, so a typo ("sped") is an error instead of ignored."""

    model_config = ConfigDict(extra="forbid")


class Calendly(_Strict):
    connection_id: str = Field(min_length=1)
    event_type_id: str = Field(min_length=1)


class CustomToolHeader(_Strict):
    key: str = Field(min_length=1)
    value: str = Field(repr=False)  # often a secret (Authorization); still serialized


# What HTTP can send (else the tool failed on every call, the HTTP library refusing the header).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a token (fullmatch)
_HEADER_VALUE = re.compile(r"[^\r\n\x00]*")  # no line break or NUL (fullmatch)


class CustomToolQueryParam(_Strict):
    key: str = Field(min_length=1)
    value: str


class FieldSpec(_Strict):
    """One field the LLM extracts: a custom tool's input_schema item or a structured_output_config item."""

    name: str = Field(min_length=1)
    required: StrictBool
    type: FieldType
    description: str | None = None
    enum_options: list[str] | None = None

    @model_validator(mode="after")
    def _enum_has_options(self) -> FieldSpec:
        if self.type == "enum" and not self.enum_options:
            raise located_error(("enum_options",), "required and non-empty when type is 'enum'", None)
        return self


class CustomTool(_Strict):
    body_template: str | None = None
    description: str = Field(min_length=1)
    headers: list[CustomToolHeader]
    input_schema: list[FieldSpec]
    method: HttpMethod
    name: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
    query_params: list[CustomToolQueryParam]
    url: Annotated[str, Field(min_length=1), AfterValidator(check_templated_url)]

    _unique_inputs = field_validator("input_schema")(_check_unique_names)


TOOL_NAME_MAX = 64  # OpenAI's limit for a function's name


def refuse_unusable_tools(tools: list[CustomTool] | None, *at: str) -> None:
    """A located ValidationError for the first custom tool the agent could not use: a header HTTP
    cannot send, a URL it cannot send to, a name like one of its own tools (it would not start) or
    past TOOL_NAME_MAX, or a body_template that is no JSON once filled in (as agent/http_tools.py fills
    it: a quoted placeholder becomes a JSON value, a bare one a value too, or text in a string): each
    failed every call. Checked where requests come in (`POST /call`, `/assistants`), not in this model:
    assistants stored and orders started before still load and replay."""
    for index, tool in enumerate(tools or []):
        for number, header in enumerate(tool.headers):
            if not _HEADER_NAME.fullmatch(header.key):
                reason = "must be a token HTTP can send (letters, digits, !#$%&'*+.^_`|~-)"
                raise located_error((*at, index, "headers", number, "key"), reason, header.key)
            if not _HEADER_VALUE.fullmatch(header.value):
                reason = "must hold no line break or NUL (HTTP cannot send it)"
                raise located_error((*at, index, "headers", number, "value"), reason, None)
        if tool.name in BUILTIN_TOOL_NAMES:
            reason = f"{tool.name!r} is one of the agent's own tools; choose another name"
            raise located_error((*at, index, "name"), reason, tool.name)
        if len(tool.name) > TOOL_NAME_MAX:
            reason = f"at most {TOOL_NAME_MAX} characters (a function name, for the LLM)"
            raise located_error((*at, index, "name"), reason, tool.name)
        refuse_unsendable_url(PLACEHOLDER.sub("x", tool.url), *at, index, "url")
        if tool.body_template:
            try:
                json.loads(PLACEHOLDER.sub("0", tool.body_template))  # "{{x}}" a string, {{x}} a number
            except json.JSONDecodeError as err:
                reason = f"must be JSON once its placeholders are filled in ({err.msg})"
                raise located_error((*at, index, "body_template"), reason, None) from None


class FaqItem(_Strict):
    answer: str
    question: str


CartesiaModel = Literal["sonic-3", "sonic-3.5"]


class Voice(_Strict):
    id: VoiceId
    provider: VoiceProvider
    model: CartesiaModel | None = None  # the official client's: Cartesia's TTS model (sonic-3 if omitted)
    speed: float | None = Field(default=None, ge=0.6, le=1.5, strict=True)  # strict: not true or "1"
    volume: float | None = Field(default=None, ge=0.5, le=2, strict=True)

    @model_validator(mode="after")
    def _elevenlabs_speed(self) -> Voice:
        if self.provider == "elevenlabs" and self.speed is not None and not 0.7 <= self.speed <= 1.2:
            raise located_error(("speed",), "must be between 0.7 and 1.2 for elevenlabs voices", self.speed)
        return self


class DedicatedInstanceModel(_Strict):
    name: Literal["gpt-4.1", "ministral-3-8b-instruct"]
    type: Literal["dedicated-instance"]


class OpenRouterModel(_Strict):
    openrouter_model_id: str
    openrouter_provider: str
    type: Literal["openrouter"]


class CustomLlmModel(_Strict):
    api_key: str = Field(min_length=1, repr=False)
    api_url: HttpUrlStr
    model_name: str = Field(min_length=1)
    type: Literal["custom"]


class RealtimeModel(_Strict):
    provider: Literal["openai", "google"]
    realtime_model_id: str
    type: Literal["realtime"]
    realtime_voice_id: str | None = Field(default=None, min_length=1)


LlmModel = Annotated[
    DedicatedInstanceModel | OpenRouterModel | CustomLlmModel | RealtimeModel, Field(discriminator="type")
]

Volume = Annotated[float, Strict(), Field(ge=0, le=1)]  # Strict: JSON true or "0.5" is a 422

NotifyOutcome = OutcomeOrNone
"""An outcome a notification waits for; the official client's "none" stands for a call without one."""


def _check_email_list(value: str) -> str:
    """One address or several, comma-separated (the official client documents "alice@x.com,bob@y.com")."""
    addresses = [part.strip() for part in value.split(",")]
    for address in addresses:
        try:
            _EMAIL.validate_python(address)
        except ValidationError:
            raise ValueError(f"{address!r} is not an email address") from None
    return ", ".join(addresses)


_EMAIL: TypeAdapter[EmailStr] = TypeAdapter(EmailStr)
EmailList = Annotated[str, AfterValidator(_check_email_list)]


class TransferDestination(_Strict):
    """The official client's transfer target: who (its label, for the prompt) and where."""

    label: str = Field(min_length=1)
    phone_number: E164

    @property
    def key(self) -> str:
        """The label as the agent names it: without regard to case or surrounding spaces."""
        return self.label.strip().casefold()


class _EditorData(BaseModel):
    """The Revox editor's own data: its declared fields are checked, anything else it keeps is kept too
    (a node's size or selection), since only the editor reads it."""

    model_config = ConfigDict(extra="allow")


class CanvasPosition(_EditorData):
    x: float = Field(allow_inf_nan=False, strict=True)  # strict: numbers, as elsewhere (not false or "1")
    y: float = Field(allow_inf_nan=False, strict=True)


class PromptFlowEdge(_EditorData):
    id: str
    source: str
    target: str


class PromptBlock(_EditorData):
    body: str
    title: str


class PromptFlowNode(_EditorData):
    id: str
    data: PromptBlock
    position: CanvasPosition
    type: Literal["promptBlock"]


class PromptFlow(_EditorData):
    """Revox's visual prompt editor (nodes, edges, positions): kept and shown back for the editor to
    reopen, never read by a call. The flattened `prompt` is what the agent follows."""

    edges: list[PromptFlowEdge]
    nodes: list[PromptFlowNode]


class SlackChannel(_Strict):
    id: str = Field(min_length=1)  # e.g. C01234567
    name: str | None = None


class Slack(_Strict):
    """The official client's Slack notification: after a call that ends with one of `outcomes`, a
    message to each channel, through the bot token the operator configured for `connection_id`."""

    channels: list[SlackChannel] = Field(min_length=1)
    connection_id: str = Field(min_length=1)
    outcomes: list[NotifyOutcome] = Field(min_length=1)
    template: str | None = None


class SttContextEntry(_Strict):
    key: str = Field(min_length=1)
    value: str


class SttContext(_Strict):
    """The official client's speech-to-text context: facts about the call (`general`: who is called,
    from which company) and the domain `terms` to expect (names, products, acronyms), so that the
    callee's words are transcribed as spelled."""

    general: list[SttContextEntry] = Field(default_factory=list)
    terms: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)


class Assistant(BaseModel):
    """The request's inline assistant. Unset options stay None; `call_assistant_from` fills defaults."""

    model_config = ConfigDict(extra="ignore")  # newer clients' fields must not break us

    prompt: str
    after_call_sms_outcomes: list[NotifyOutcome] | None = None
    after_call_sms_prompt: str | None = None
    background_sound: BackgroundSound | None = None
    background_sound_volume: Volume | None = None
    calendly: Calendly | None = None
    call_retry_config: CallRetryConfig | None = None
    cartesia_dictionary_pronunciation_id: str | None = Field(default=None, min_length=1)
    custom_tools: list[CustomTool] | None = None
    email_notification_address: EmailList | None = None
    email_notification_outcomes: list[NotifyOutcome] | None = None
    end_of_call_sentence: str | None = None
    faq_items: list[FaqItem] | None = None
    first_sentence: str | None = None
    first_sentence_delay_ms: Annotated[int, Strict()] | None = Field(default=None, ge=0, le=MAX_SAFE_INT)
    first_sentence_mode: FirstSentenceMode | None = None
    from_phone_number: E164 | None = None
    human_transfer_mode: TransferMode | None = None
    ivr_navigation_enabled: StrictBool | None = None
    llm_model: LlmModel | None = None
    logo_url: HttpUrlStr | None = None  # the editor's: shown back, as position and prompt_flow
    max_call_duration_secs: Annotated[float, Strict()] | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_duration_end_message: str | None = Field(default=None, max_length=150)
    position: CanvasPosition | None = None
    prompt_flow: PromptFlow | None = None
    slack: Slack | None = None
    sms_enabled: StrictBool | None = None
    sms_template: str | None = None
    structured_output_config: list[FieldSpec] | None = None
    structured_output_prompt: str | None = None
    stt_context: SttContext | None = None
    stt_model: SttModel | None = None
    thinking_sound: ThinkingSound | None = None
    thinking_sound_probability: Volume | None = None
    thinking_sound_volume: Volume | None = None
    transfer_destinations: list[TransferDestination] | None = None
    transfer_phone_number: E164 | None = None
    type: AssistantType | None = None
    voice: Voice | None = None
    voicemail_message: str | None = None
    voicemail_sms_prompt: str | None = None
    warm_transfer_summary_instructions: str | None = None
    webhook_url: HttpUrlStr | None = None

    _unique_fields = field_validator("structured_output_config")(_check_unique_names)
    _unique_tools = field_validator("custom_tools")(_check_unique_names)

    @model_validator(mode="after")
    def _transfer_destinations(self) -> Assistant:
        """The client's `transfer_destinations`: the agent picks one by its label, so labels are unique;
        the first is the transfer number the response shows, unless transfer_phone_number names another
        of them (a number outside the list would be a second, unlabelled destination)."""
        destinations = self.transfer_destinations or []
        seen: set[str] = set()
        for index, destination in enumerate(destinations):
            if destination.key in seen:
                message = "labels must be unique: the agent chooses a destination by its label"
                raise located_error(("transfer_destinations", index, "label"), message, destination.label)
            seen.add(destination.key)
        if destinations:
            numbers = [d.phone_number for d in destinations]
            if self.transfer_phone_number not in (None, *numbers):
                message = f"transfer_phone_number {self.transfer_phone_number} is not one of them: give one"
                raise located_error(("transfer_destinations",), message, self.transfer_phone_number)
            self.transfer_phone_number = self.transfer_phone_number or numbers[0]
        return self


# --- response: lenient records, in the seed's key order ------------------------------------------------

Number = int | float  # keeps 0 as 0 and 0.6 as 0.6 on a round trip


class Record(BaseModel):
    """Base of response models: type checks only, unknown keys kept (and dumped back)."""

    model_config = ConfigDict(extra="allow")


class CallingWindowRecord(Record):
    calling_window_end_time: str = "18:00"
    calling_window_start_time: str = "10:00"
    retry_delay_seconds: int = 7200


class RetryConfigRecord(Record):
    """Lenient twin of models.retry.CallRetryConfig; `RetryConfigRecord()` holds the seed's defaults."""

    allowed_days: list[Weekday] = Field(
        default_factory=lambda: ["monday", "tuesday", "wednesday", "thursday", "friday"]
    )
    call_twice_in_a_row: bool = False
    calling_windows: list[CallingWindowRecord] = Field(default_factory=lambda: [CallingWindowRecord()])
    max_retry_attempts: int = 3
    timezone: str | None = None


class CalendlyRecord(Record):
    connection_id: str
    event_type_id: str


class KeyValueRecord(Record):
    key: str
    value: str = Field(repr=False)


class FieldSpecRecord(Record):
    name: str
    required: bool
    type: FieldType
    description: str | None = None
    enum_options: list[str] | None = None


class CustomToolRecord(Record):
    body_template: str | None = None
    description: str
    headers: list[KeyValueRecord] = Field(default_factory=list)
    input_schema: list[FieldSpecRecord] = Field(default_factory=list)
    method: HttpMethod
    name: str
    query_params: list[KeyValueRecord] = Field(default_factory=list)
    url: str


class FaqItemRecord(Record):
    answer: str
    question: str
    id: str | None = None
    needs_human_answer: bool | None = None
    source: Literal["human", "ai"] | None = None


class VoiceRecord(Record):
    """`model` (Cartesia's, the official client's) is kept, as an extra, only when the order gave one."""

    id: str
    provider: VoiceProvider
    speed: Number | None = None
    volume: Number | None = None


class DedicatedInstanceModelRecord(Record):
    name: Literal["gpt-4.1", "ministral-3-8b-instruct"]
    type: Literal["dedicated-instance"]


class OpenRouterModelRecord(Record):
    openrouter_model_id: str
    openrouter_provider: str
    type: Literal["openrouter"]


class CustomLlmModelRecord(Record):
    api_key: str = Field(repr=False)
    api_url: str
    model_name: str
    type: Literal["custom"]

    def endpoint(self) -> tuple[str, dict[str, str]]:
        """`api_url` as the openai client takes it: the address, and its query (Azure's `api-version`,
        a key) as parameters of every request (a repeated name keeps its last value: the openai client
        would send a list as `name[]`). Left in the address, the path came after the query."""
        parts = urlsplit(self.api_url)
        return urlunsplit(parts._replace(query="")), dict(parse_qsl(parts.query, keep_blank_values=True))


class RealtimeModelRecord(Record):
    provider: Literal["openai", "google"]
    realtime_model_id: str
    type: Literal["realtime"]
    realtime_voice_id: str | None = None


LlmModelRecord = Annotated[
    DedicatedInstanceModelRecord | OpenRouterModelRecord | CustomLlmModelRecord | RealtimeModelRecord,
    Field(discriminator="type"),
]


def default_llm_model() -> DedicatedInstanceModelRecord:
    """The seed's default LLM: the dedicated gpt-4.1 instance."""
    return DedicatedInstanceModelRecord(name="gpt-4.1", type="dedicated-instance")


# Defaults for the response's non-optional fields when a request leaves them out. The seed documents
# 400 ms and "generated"; the others are ours: 10-minute calls, sounds at moderate volume.
DEFAULT_FIRST_SENTENCE_DELAY_MS = 400
DEFAULT_MAX_CALL_DURATION_SECS = 600
DEFAULT_BACKGROUND_SOUND_VOLUME = 0.5
DEFAULT_THINKING_SOUND_VOLUME = 0.5
DEFAULT_THINKING_SOUND_PROBABILITY = 0.5
DEFAULT_ASSISTANT_NAME = "inline assistant"
DEFAULT_ASSISTANT_PROMPT = (
    "You are a friendly, concise phone assistant placing an outbound call. Greet the person, say who "
    "you are calling for and why in one or two sentences, answer their questions honestly, and never "
    "claim to be human. If they are not interested or ask not to be called again, acknowledge it "
    "politely and end the call. Once the conversation is over, thank them and end the call."
)
"""The prompt of the assistant used when an order gives neither `assistant` nor `assistant_id`."""


class CallAssistant(Record):
    """The assistant as the response shows it: every request option resolved to a value or null."""

    id: str
    after_call_sms_prompt: str | None = None
    background_sound: BackgroundSound | None = None
    background_sound_volume: Number = DEFAULT_BACKGROUND_SOUND_VOLUME
    calendly: CalendlyRecord | None = None
    call_retry_config: RetryConfigRecord | None = None
    created_at: Timestamp = None
    custom_tools: list[CustomToolRecord] | None = None
    email_notification_address: str | None = None
    email_notification_outcomes: list[NotifyOutcome] | None = None
    end_of_call_sentence: str | None = None
    first_sentence: str | None = None
    first_sentence_delay_ms: int = DEFAULT_FIRST_SENTENCE_DELAY_MS
    first_sentence_mode: FirstSentenceMode = "generated"
    from_phone_number: str | None = None
    human_transfer_mode: TransferMode | None = None
    ivr_navigation_enabled: bool = False
    llm_model: LlmModelRecord = Field(default_factory=default_llm_model)
    max_call_duration_secs: Number = DEFAULT_MAX_CALL_DURATION_SECS
    max_duration_end_message: str | None = None
    name: str = DEFAULT_ASSISTANT_NAME
    organization_id: str
    prompt: str
    sms_enabled: bool = False
    sms_template: str | None = None
    structured_output_config: list[FieldSpecRecord] | None = None
    structured_output_prompt: str | None = None
    stt_model: SttModel = "stt-rt-v5"  # the official client's, required in its responses
    thinking_sound: ThinkingSound | None = None
    thinking_sound_probability: Number = DEFAULT_THINKING_SOUND_PROBABILITY
    thinking_sound_volume: Number = DEFAULT_THINKING_SOUND_VOLUME
    transfer_phone_number: str | None = None
    type: AssistantType = "standalone"  # the official client's, required in its responses
    updated_at: Timestamp = None
    voice: VoiceRecord | None = None
    voicemail_message: str | None = None
    voicemail_sms_prompt: str | None = None
    warm_transfer_summary_instructions: str | None = None
    webhook_url: str | None = None
    faq_items: list[FaqItemRecord] | None = None
    pending_faq_count: Number | None = None

    def _extra(self, key: str) -> Any:
        """One of the official client's options that the seed's Call lacks: an extra key, there when given."""
        return (self.model_extra or {}).get(key)

    @property
    def transfer_destinations(self) -> list[TransferDestination]:
        """The official client's labelled destinations; with none, the transfer number alone is an
        unlabelled one."""
        return [TransferDestination.model_validate(d) for d in self._extra("transfer_destinations") or []]

    @property
    def slack(self) -> Slack | None:
        """The official client's Slack notification."""
        given = self._extra("slack")
        return None if given is None else Slack.model_validate(given)

    @property
    def cartesia_dictionary_pronunciation_id(self) -> str | None:
        """The official client's Cartesia pronunciation dictionary."""
        return self._extra("cartesia_dictionary_pronunciation_id")

    @property
    def stt_context(self) -> SttContext | None:
        """The official client's speech-to-text context."""
        given = self._extra("stt_context")
        return None if given is None else SttContext.model_validate(given)

    @property
    def after_call_sms_outcomes(self) -> list[str] | None:
        """The official client's narrowing of the after-call SMS to some outcomes."""
        return self._extra("after_call_sms_outcomes")


def call_assistant_from(
    assistant: Assistant,
    *,
    id: str,
    organization_id: str,
    now: datetime,
    name: str = DEFAULT_ASSISTANT_NAME,
) -> CallAssistant:
    """The response shape of a request assistant: options it left out get the defaults above, the
    retry config the seed's defaults (Mon-Fri 10:00-18:00, 7200 s, 3 attempts). Deterministic (no
    clock, no random ids), so workflow code may call it."""
    given = assistant.model_dump(exclude_none=True)
    given["call_retry_config"] = (assistant.call_retry_config or CallRetryConfig()).model_dump()
    # The transfer as it will happen: no number, no transfer (mode null); a number without a mode is a
    # cold transfer (SIP REFER, what the agent does); the handoff summary belongs to a warm one only.
    if not given.get("transfer_phone_number"):
        given.pop("human_transfer_mode", None)
    else:
        given.setdefault("human_transfer_mode", "cold")
    if given.get("human_transfer_mode") != "warm":
        given.pop("warm_transfer_summary_instructions", None)
    for item in given.get("faq_items", []):
        item.update(needs_human_answer=False, source="human")
    return CallAssistant.model_validate(
        {
            **given,
            "id": id,
            "organization_id": organization_id,
            "name": name,
            "created_at": now,
            "updated_at": now,
        }
    )
