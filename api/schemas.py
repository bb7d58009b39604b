"""Request and response bodies of the HTTP API, in the official Revox client's shapes (revox 0.5.0:
`types/*.py`). Call and assistant objects are the seed's models (`models.Call`, `models.CallAssistant`);
this module adds the wrappers (`{call}`, `{assistant}`, lists) and the other resources."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from models import Assistant, Call, CallAssistant, CallCreateParams
from models.assistant import refuse_unsendable_url, refuse_unusable_tools
from models.common import (
    E164,
    CallStatus,
    Direction,
    Outcome,
    OutcomeOrNone,
    ResultOrNone,
    VoiceId,
)

MAX_FILTER_VALUES = 500


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# Length bounds go before the validator: after it, pydantic checks them as a sequence's ("items").
Text = Annotated[str, AfterValidator(_no_nul)]


def _stripped(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def _one_word(value: str) -> str:
    if any(character.isspace() for character in value):
        raise ValueError("must not contain spaces (a LiveKit trunk id, e.g. ST_abc123)")
    return value


# Spaces around it are dropped; within it, or a blank id, a 422: it was stored and dialled through, as
# a trunk no server knows.
TrunkId = Annotated[
    str,
    BeforeValidator(_stripped),
    Field(min_length=1, max_length=200),
    AfterValidator(_no_nul),
    AfterValidator(_one_word),
]
Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]
FilterValues = Annotated[
    list[Annotated[str, Field(max_length=200), AfterValidator(_no_nul)]], Field(max_length=MAX_FILTER_VALUES)
]


class Success(BaseModel):
    success: bool = True


# --- calls ---------------------------------------------------------------------------------------------


class AssistantBody(Assistant):
    """An assistant as a request gives it (`POST /call`'s, `POST /assistants`): a field it does not know
    is a 422 naming it (`assistant.webhok_url` was dropped, and no webhook ever came)."""

    model_config = ConfigDict(extra="forbid")


class CallCreateBody(CallCreateParams):
    """`POST /call`'s body: a field it does not know is a 422 naming it, since a misplaced or misspelt one
    (`webhook_url` beside `assistant`, `prompt_variable`) would otherwise be dropped without a word. The
    workflow still ignores unknown fields: an order started by a newer API runs on an older worker."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=lambda schema: _synonym_shown(schema))

    assistant: AssistantBody | None = None

    @model_validator(mode="after")
    def _usable_tools(self) -> CallCreateBody:
        if self.assistant:
            refuse_unusable_tools(self.assistant.custom_tools, "assistant", "custom_tools")
            refuse_unsendable_url(self.assistant.webhook_url, "assistant", "webhook_url")
        return self


def _synonym_shown(schema: dict[str, Any]) -> None:
    """`skip_calling_window`, the newer client's name for `force_now`, in the schema too: pydantic shows
    only a field's first name, and with no other property allowed, tools built on the schema (`/docs`,
    generated clients, validators) refused what the official client sends."""
    properties = schema.get("properties", {})
    if "force_now" in properties:
        properties["skip_calling_window"] = {
            **properties["force_now"],
            "title": "Skip Calling Window",
            "description": "The newer client's name for force_now (the two must not differ).",
        }


class CallResponse(BaseModel):
    """`POST /call` and `GET /call/{id}`: the seed's Call, wrapped."""

    call: Call


SortField = Literal[
    "created_at", "updated_at", "scheduled_at", "status", "to_phone_number", "outcome", "calls_count"
]


class CallFilters(BaseModel):
    """The filters of `POST /call/search` (and of export). An empty list filters nothing; "none" in
    outcomes/results matches calls without one. Pages count from 1."""

    model_config = ConfigDict(extra="ignore")

    assignee_ids: FilterValues = Field(default_factory=list)
    assistant_ids: FilterValues = Field(default_factory=list)
    campaign_ids: FilterValues = Field(default_factory=list)
    directions: Annotated[list[Direction], Field(max_length=2)] = Field(default_factory=list)
    from_phone_numbers: FilterValues = Field(default_factory=list)
    outcomes: Annotated[list[OutcomeOrNone], Field(max_length=20)] = Field(default_factory=list)
    page: int = Field(default=1, ge=1, le=1_000_000, strict=True)  # strict: JSON numbers, not true or "2"
    page_size: int = Field(default=20, ge=1, le=500, strict=True)
    results: Annotated[list[ResultOrNone], Field(max_length=20)] = Field(default_factory=list)
    statuses: Annotated[list[CallStatus], Field(max_length=20)] = Field(default_factory=list)
    call_ids: FilterValues | None = None
    query: Annotated[str, Field(max_length=200), AfterValidator(_no_nul)] | None = None
    sort_by: SortField | None = None
    sort_direction: Literal["asc", "desc"] = "desc"
    to_phone_number: Annotated[str, Field(max_length=32), AfterValidator(_no_nul)] | None = None


class CallSearchResponse(BaseModel):
    calls: list[Call]
    total_count: int


class CallExportParams(BaseModel):
    """`POST /call/export`: every attempt of every call matching `filters` (paging ignored), as CSV."""

    model_config = ConfigDict(extra="ignore")

    filters: CallFilters
    include_metadata: bool = Field(default=False, strict=True)  # strict: JSON true or false, not 0 or "yes"
    include_structured_output_fields: bool = Field(default=False, strict=True)


class CallExportResponse(BaseModel):
    csv: str
    filename: str


class PhoneHistoryCampaign(BaseModel):
    id: str
    name: str


class PhoneHistory(BaseModel):
    campaigns: list[PhoneHistoryCampaign]
    count: int  # attempts dialled to this number
    do_not_contact: bool
    hot: bool  # the last outcome was `interested`
    last_called_at: str | None = None
    last_outcome: Outcome | None = None
    reached_human: bool


class PhoneHistoryResponse(BaseModel):
    phone_history: dict[str, PhoneHistory]


# --- assistants ---------------------------------------------------------------------------------------------


_NOT_CARRIED_OUT = {
    "zoho": "outdial has no Zoho CRM integration (use webhook_url, Slack or email to reach a CRM)",
    "precall_lookup_url": "it is for inbound calls, and outdial places outbound calls only",
}


class AssistantCreateParams(AssistantBody):
    """`POST /assistants`: the seed's assistant plus its name. The official client's options outdial
    does not carry out are refused when given, rather than stored and silently ignored."""

    name: Name
    zoho: dict[str, Any] | None = None
    precall_lookup_url: str | None = None

    @field_validator("zoho", "precall_lookup_url")
    @classmethod
    def _not_carried_out(cls, value: object, info: ValidationInfo) -> None:
        if value is not None:
            raise ValueError(f"not supported: {_NOT_CARRIED_OUT[str(info.field_name)]}")
        return None

    @model_validator(mode="after")
    def _usable_tools(self) -> AssistantCreateParams:
        refuse_unusable_tools(self.custom_tools, "custom_tools")
        refuse_unsendable_url(self.webhook_url, "webhook_url")
        return self


class AssistantView(CallAssistant):
    """An assistant as `/assistants` shows it: the seed's assistant object (with the newer client's
    required `stt_model` and `type`, as in every Call)."""


class AssistantResponse(BaseModel):
    assistant: AssistantView


class AssistantListResponse(BaseModel):
    assistants: list[AssistantView]


# --- phone numbers ----------------------------------------------------------------------------------------


class PhoneNumberView(BaseModel):
    id: str
    created_at: Any
    created_by: dict[str, Any] | None = None
    inbound_assistant: AssistantView | None = None
    inbound_sip_uri: str | None = None
    label: str | None = None
    livekit_outbound_trunk_id: str | None = None
    phone_number: str
    provider: Literal["twilio", "telnyx", "sip"] = "sip"
    source: Literal["user_imported", "revox_provisioned", "revox_purchased"] = "user_imported"
    type: Literal["owned_number", "verified_caller_id"] = "owned_number"


class PhoneNumberListResponse(BaseModel):
    phone_numbers: list[PhoneNumberView]


class PhoneNumberResponse(BaseModel):
    phone_number: PhoneNumberView


class PhoneNumberCreateParams(BaseModel):
    """`POST /phone-numbers` (outdial's addition: the client has no create): a caller id and its trunk."""

    model_config = ConfigDict(extra="forbid")

    phone_number: E164
    label: Annotated[str, Field(max_length=200), AfterValidator(_no_nul)] | None = None
    livekit_outbound_trunk_id: TrunkId | None = None


class PhoneNumberUpdateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")  # `phone_number` cannot change: a 422, not a 200 that did not

    inbound_assistant_id: Annotated[str, Field(max_length=64), AfterValidator(_no_nul)] | None = None
    label: Annotated[str, Field(max_length=200), AfterValidator(_no_nul)] | None = None
    livekit_outbound_trunk_id: TrunkId | None = None


# --- voices, account ----------------------------------------------------------------------------------------

Language = Literal["en", "fr", "es", "de", "it", "pt", "ru", "zh"]
VoiceProviderName = Literal["cartesia", "elevenlabs", "gradium"]


class VoiceInfo(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str
    description: str
    language: Language
    name: str
    provider: VoiceProviderName
    accent: str | None = None
    gender: str | None = None
    is_cloned: bool | None = Field(default=None, alias="isCloned")
    model_compat: Literal["universal", "sonic-3", "sonic-3.5"] | None = Field(
        default=None, alias="modelCompat"
    )


class VoiceListResponse(BaseModel):
    voices: list[VoiceInfo]


class VoiceSummary(BaseModel):
    id: str
    name: str
    description: str | None = None


class VoiceRetrieveResponse(BaseModel):
    voice: VoiceSummary


class VoicePreviewParams(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    provider: VoiceProviderName
    voice_id: VoiceId = Field(alias="voiceId")
    model: Literal["sonic-3", "sonic-3.5"] | None = None
    speed: float | None = Field(default=None, ge=0.6, le=1.5, strict=True)
    text: Annotated[str, Field(max_length=500), AfterValidator(_no_nul)] | None = None
    volume: float | None = Field(default=None, ge=0.5, le=2.0, strict=True)


class VoiceCloneParams(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    audio: str
    content_type: Literal["audio/webm", "audio/wav", "audio/mpeg", "audio/ogg", "audio/mp4", "video/webm"] = (
        Field(alias="contentType")
    )
    language: Language
    name: Name


class UserView(BaseModel):
    id: str
    created_at: Any
    email: str
    first_name: str | None = None
    has_completed_onboarding: bool = True
    last_name: str | None = None
    organization_id: str
    updated_at: Any
    organization_country: str | None = None


class UserResponse(BaseModel):
    user: UserView


class AuthStatus(BaseModel):
    authenticated: bool
