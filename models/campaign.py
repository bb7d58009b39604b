"""Campaigns: one list of contacts, each row its own call order (revox 0.5.0 `campaigns` shapes).

Request bodies are strict where the official client sends something we act on; a bad *row* (an
invalid or do-not-contact number, a duplicate) is never a 422: it is reported on the row and skipped.
The second half holds what `CampaignWorkflow` and its activities exchange.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from models.call import UtcDateTime
from models.common import E164, CallStatus, Direction, OutcomeOrNone, ResultOrNone
from models.retry import CallRetryConfig

MAX_CONTACTS = 100_000
DEFAULT_MAX_CONCURRENT_CALLS = 10  # a campaign without a cap would ring its whole list at once
RowState = Literal["not_launched", "pending", "launched", "skipped", "cancelled"]
"""A row's own state: `pending` = selected by a launch, its order not started yet; `launched` = its
CallOrderWorkflow was started (the call's status says the rest); `skipped` = a bad row."""
# order_refused: Temporal refused the row's order for good (over its payload limit, say), at launch.
SkipReason = Literal[
    "invalid_phone_number", "duplicate_phone_number", "do_not_contact", "no_calling_window", "order_refused"
]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]


def _as_text(value: Any) -> str:
    """Prompt variables are text in the prompt: numbers and booleans as written, objects as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value) if isinstance(value, int | float) else json.dumps(value, sort_keys=True)


def _whole_number(value: Any) -> Any:
    """The official client types `max_concurrent_calls` as a float, and sends back the 3.0 it read: a
    whole number is that integer; 2.5, "2" or true stay refused (strict)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


MaxConcurrentCalls = Annotated[int, BeforeValidator(_whole_number), Field(ge=1, le=10_000, strict=True)]


def _variables(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _as_text(v) for k, v in value.items()}
    return value


def no_calling_window(zones: list[str]) -> str:
    """Why a row is skipped as `no_calling_window`: the zones its number may be in share none."""
    return (
        f"may be in {len(zones)} timezones ({zones[0]} … {zones[-1]}) that share no calling window; set "
        "the campaign's call_retry_config.timezone to the recipients'"
    )


# --- requests ----------------------------------------------------------------------------------------


class CampaignContact(BaseModel):
    """One row. `to_phone_number` is checked per row (a bad one skips the row, never the request);
    `metadata` is outdial's addition: the order's metadata (e.g. `simulation` for simulated callees)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is a 422, never dropped

    to_phone_number: Annotated[str, Field(max_length=64), AfterValidator(_no_nul)]
    prompt_variables: Annotated[dict[str, str], BeforeValidator(_variables)] = Field(default_factory=dict)
    metadata: dict[str, str] | None = None


class CampaignCreateParams(BaseModel):
    """`POST /campaigns`. `call_retry_config` overrides the assistant's for every row's order."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is a 422, never dropped

    name: Name
    assistant_id: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_no_nul)]
    contacts: Annotated[list[CampaignContact], Field(min_length=1, max_length=MAX_CONTACTS)]
    call_retry_config: CallRetryConfig | None = None
    from_phone_number: E164 | None = None
    max_concurrent_calls: MaxConcurrentCalls | None = None


class CampaignUpdateParams(BaseModel):
    """`PATCH /campaigns/{id}`: given fields replace the stored ones (null clears). Rows not started
    yet get the new values; orders already started keep theirs (a new max applies to the shared key
    as soon as the next order asks for a permit, and an older order asking sets its own max again)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is a 422, never dropped

    name: Name | None = None
    call_retry_config: CallRetryConfig | None = None
    from_phone_number: E164 | None = None
    max_concurrent_calls: MaxConcurrentCalls | None = None

    @field_validator("name")
    @classmethod
    def _kept(cls, name: str | None) -> str:
        if name is None:  # given as null: a campaign is never without a name (the 200 kept the old one)
            raise ValueError("a campaign keeps a name: give a new one, or leave name out")
        return name


FilterValues = Annotated[
    list[Annotated[str, Field(max_length=200), AfterValidator(_no_nul)]], Field(max_length=MAX_CONTACTS)
]


class SelectionFilters(BaseModel):
    """Which rows a launch takes, by their call. An empty list filters nothing; "none" matches none."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is a 422, never dropped

    assignee_ids: FilterValues = Field(default_factory=list)
    directions: list[Direction] = Field(default_factory=list)
    outcomes: list[OutcomeOrNone] = Field(default_factory=list)
    results: list[ResultOrNone] = Field(default_factory=list)
    statuses: list[CallStatus] = Field(default_factory=list)
    query: Annotated[str, Field(max_length=200), AfterValidator(_no_nul)] | None = None


class SelectionRows(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is a 422, never dropped

    call_ids: FilterValues = Field(default_factory=list)
    mode: Literal["all_except", "only"] = "all_except"


class Selection(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is a 422, never dropped

    filters: SelectionFilters = Field(default_factory=SelectionFilters)
    rows: SelectionRows = Field(default_factory=SelectionRows)


class CampaignLaunchParams(BaseModel):
    """`POST /campaigns/{id}/launch-calls`. Only `ai_first` exists here (no operator sessions)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is a 422, never dropped

    mode: Literal["ai_first", "speed_dial"]
    selection: Selection = Field(default_factory=Selection)
    scheduled_at: UtcDateTime | None = None


# --- responses ---------------------------------------------------------------------------------------


class LaunchSkipped(BaseModel):
    active: int = 0  # already on its way (pending start, or its order runs)
    attempts_exhausted: int = 0  # its order ended (completed or errored): a row is called once
    cancelled: int = 0


class CampaignLaunchResponse(BaseModel):
    launched: int
    skipped: LaunchSkipped
    session: None = None


class RowStats(BaseModel):
    """Rows by where they are: `pending` (launched, no attempt yet), `calling` (in a call or its
    analysis), `retry` (waiting for another attempt), `failed` (errored or cancelled), `skipped`
    (bad rows)."""

    calling: int = 0
    completed: int = 0
    failed: int = 0
    not_launched: int = 0
    pending: int = 0
    retry: int = 0
    skipped: int = 0
    total: int = 0


class FunnelStats(BaseModel):
    hot: int = 0
    talked_to_human: int = 0
    total_leads: int = 0


class RowSkip(BaseModel):
    """A row reported and skipped (outdial's addition to the create response and to each row)."""

    row_index: int
    phone_number: str
    reason: SkipReason
    message: str


# --- workflow I/O ------------------------------------------------------------------------------------


class CampaignPace(BaseModel):
    """Token bucket of order starts: at most `burst` at once, then `rows_per_second` on average."""

    rows_per_second: float = Field(default=20.0, gt=0, le=10_000)
    burst: int = Field(default=50, ge=1, le=10_000)


class PaceState(BaseModel):
    tokens: float = 0.0
    at: datetime | None = None  # None: a full bucket


class LaunchRowsRequest(BaseModel):
    """Start the orders of up to `limit` pending rows after `after_row_index` (row order)."""

    campaign_id: str
    organization_id: str
    after_row_index: int
    limit: int = Field(ge=1)
    task_queue: str


class LaunchRowsResult(BaseModel):
    found: bool = True  # False: the campaign was deleted
    cursor: int | None = None  # row_index of the last row handled; None: no pending row is left
    # a pending row remains after `cursor`: False ends the launch with this batch, even when
    # max_in_flight orders run (nothing is left to wait for). Results recorded before it read True.
    rows_left: bool = True
    started: int = 0
    already_started: int = 0  # its order's id was taken already (a retried activity): not twice
    skipped: list[RowSkip] = Field(default_factory=list)  # found do-not-contact at launch
    in_flight: int = 0  # the campaign's orders started and not ended, after this batch (database)


class InFlightRequest(BaseModel):
    campaign_id: str
    organization_id: str


SteerAction = Literal["pause", "resume", "cancel"]


class SteerRequest(BaseModel):
    campaign_id: str
    organization_id: str
    action: SteerAction


class SteerResult(BaseModel):
    signalled: int = 0
    in_call: int = 0  # cancel: orders still in a call, paused so they stop after it; asked again later


class CampaignProgress(BaseModel):
    """What only the campaign workflow knows (its `progress` query and result); the rows' call
    statistics come from the database (`GET /campaigns/{id}/statistics`)."""

    started: int = 0
    already_started: int = 0  # found running or closed under its id (never started twice)
    skipped: dict[str, int] = Field(default_factory=dict)
    cursor: int = -1  # row_index of the last row fetched in this pass
    runs: int = 1  # this run's number, counting continue-as-new
    paused: bool = False
    steered: int = 0  # the number of the last pause or resume applied (the API's `steered`)
    cancelled: bool = False
    orders_paused: bool | None = False  # what the orders were last told (None: unknown, tell them again)
    phase: Literal["launching", "waiting", "paused", "cancelling", "done"] = "launching"


class CampaignState(BaseModel):
    """Carried across continue-as-new."""

    progress: CampaignProgress = Field(default_factory=CampaignProgress)
    pace: PaceState = Field(default_factory=PaceState)
    rescan: bool = True
    in_flight: int = 0  # as last counted (LaunchRowsResult.in_flight)


class CampaignInput(BaseModel):
    """A fresh run's start: `paused` is the campaign's state, `orders_paused` what its orders were
    last told (None when unsure: the run tells them again, which is idempotent)."""

    campaign_id: str
    organization_id: str
    paused: bool = False
    steered: int = 0  # the number of the steering `paused` is from
    orders_paused: bool | None = False
    pace: CampaignPace = Field(default_factory=CampaignPace)
    batch_size: int = Field(default=50, ge=1, le=1000)  # rows per launch activity, at most
    continue_as_new_after_events: int = Field(default=5_000, ge=20)
    cancel_recheck_seconds: float = Field(default=30.0, gt=0)
    # At most this many of its orders started and not ended: the campaign waits for some to end before
    # starting more. All share one concurrency key, whose semaphore carries its queue in one payload
    # (about 29,000 waiters fit; see models.concurrency.SemaphoreState.pack).
    max_in_flight: int = Field(default=10_000, ge=1)
    in_flight_recheck_seconds: float = Field(default=60.0, gt=0)
    # How long a batch of starts may go without a word before it is tried again: a start takes
    # milliseconds, so only a batch whose worker died goes that long (its 2-minute timeout alone held
    # its rows that long).
    launch_heartbeat_seconds: float = Field(default=20.0, gt=0)
    state: CampaignState | None = None


def campaign_workflow_id(campaign_id: str) -> str:
    return f"campaign-{campaign_id}"


def concurrency_key(campaign_id: str) -> str:
    return f"campaign-{campaign_id}"
