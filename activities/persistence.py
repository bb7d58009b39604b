"""Persistence: the order's state in the database, written by the workflow at each change.

`persist_call` is the one activity; CallOrderWorkflow starts it (fire-and-forget, awaited before the
workflow returns) whenever its state changes, with the full seed `Call` and a per-run sequence number.
The upsert is idempotent and monotonic: a write lands only if it is newer by (`updated_at`, `seq`) than
what the row holds, so retries and writes racing each other never move a call backwards. The API's
placeholder row (`seq` 0, written when it accepts an order) is always superseded by the workflow.

The read helpers below (assistants, caller ids) are shared by `prepare_order` and the HTTP API, so
both resolve an order the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import and_, bindparam, delete, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DataError, IntegrityError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.compliance import DoNotContactEntry
from models import Assistant, Call, CallAssistant, CallAttempt, call_assistant_from
from models.common import canonical_number
from models.settings import Settings
from models.tables import (
    AssistantRecord,
    CallAttemptRecord,
    CallOrderRecord,
    Database,
    DeletedPhoneNumberRecord,
    DoNotContactRecord,
    PhoneNumberRecord,
)

PERSIST_ACTIVITY = "persist_call"


class CallSnapshot(BaseModel):
    """What the workflow writes: its `call` query's answer and its write sequence number (1, 2, ...).
    The attempts named in `kept_transcripts` come without their transcript, which the row holds."""

    call: Call
    seq: int = Field(ge=1)
    kept_transcripts: list[str] = Field(default_factory=list)


# --- writing a call order ----------------------------------------------------------------------------


def _instant(value: object) -> datetime | None:
    """Our timestamps are datetimes; a seed placeholder (`{}`) has no instant."""
    return value if isinstance(value, datetime) else None


def search_text(call: Mapping[str, Any]) -> str:
    """What a search's free-text `query` reads, from the Call as stored: the values a person looks for
    (ids, numbers, metadata, variables, what was said, the outcome, the extracted data), lowercased;
    never the JSON's key names, which every call has."""
    attempts = call.get("call_attempts") or []
    campaign = call.get("campaign") or {}
    values = [
        call.get("id"),
        call.get("to_phone_number"),
        call.get("from_phone_number"),
        call.get("outcome"),
        call.get("outcome_summary"),
        campaign.get("name"),
        *(call.get("metadata") or {}).values(),
        *(call.get("prompt_variables") or {}).values(),
        *(entry.get("content") for attempt in attempts for entry in attempt.get("transcript") or []),
        *(value for attempt in attempts for value in (attempt.get("structured_output") or {}).values()),
    ]
    return "\n".join(str(value) for value in values if value not in (None, "")).lower()


def call_columns(call: Call, seq: int) -> dict[str, Any]:
    """The row's values for `call` (everything but the API's own columns: params, idempotency)."""
    last = call.call_attempts[0] if call.call_attempts else None
    created_at = _instant(call.created_at) or _instant(call.updated_at)
    return {
        "organization_id": call.organization_id,
        "status": call.status,
        "to_phone_number": call.to_phone_number,
        "from_phone_number": call.from_phone_number,
        "assistant_id": call.assistant.id if call.assistant else None,
        "direction": call.direction,
        "outcome": call.outcome,
        "last_result": last.result if last else None,
        "calls_count": len(call.call_attempts),
        "scheduled_at": _instant(call.scheduled_at),
        "created_at": created_at,
        "updated_at": _instant(call.updated_at) or created_at,
        "seq": seq,
        "call": (stored := call.model_dump(mode="json")),
        "search_text": search_text(stored),
        "campaign_id": call.campaign.id if call.campaign else None,
    }


def attempt_columns(call: Call) -> list[dict[str, Any]]:
    """One row per attempt, numbered oldest first (the Call lists them most recent first)."""
    rows = []
    total = len(call.call_attempts)
    for index, attempt in enumerate(call.call_attempts):
        latest = index == 0
        rows.append(
            {
                "id": attempt.id,
                "call_id": call.id,
                "organization_id": call.organization_id,
                "number": total - index,
                "phone_number": attempt.phone_number,
                "status": attempt.status,
                "result": attempt.result,
                "dial_error": attempt.dial_error,
                "started_at": _instant(attempt.started_at),
                "answered_at": _instant(attempt.answered_at),
                "ended_at": _instant(attempt.ended_at),
                "ended_by": attempt.ended_by,
                "end_reason": attempt.end_reason,
                "recording_url": attempt.recording_url,
                "transcript": [entry.model_dump(mode="json") for entry in attempt.transcript]
                if attempt.transcript is not None
                else None,
                "structured_output": attempt.model_dump(mode="json")["structured_output"],
                # The order's outcome comes from its last conversation, so it belongs to that attempt.
                "outcome": call.outcome if latest else None,
                "outcome_summary": call.outcome_summary if latest else None,
            }
        )
    return rows


# Prebuilt: `persist_call` runs at every change of every order, and building its statements afresh
# (coercing the clauses, keying the compiled cache) cost the worker more Python than running them.
_ORDER, _ATTEMPT = CallOrderRecord, CallAttemptRecord
_STORED_CALL = select(_ORDER.call).where(_ORDER.id == bindparam("b_id"))
_ORDER_EXISTS = select(_ORDER.id).where(_ORDER.id == bindparam("b_id"))
_UPDATE_ORDER_IF_NEWER = update(_ORDER).where(  # the SET clause: the columns the parameters name
    _ORDER.id == bindparam("b_id"),
    or_(
        _ORDER.seq == 0,  # the API's placeholder
        _ORDER.updated_at < bindparam("b_updated_at"),
        and_(_ORDER.updated_at == bindparam("b_updated_at"), _ORDER.seq <= bindparam("b_seq")),
    ),
)
_INSERT_ORDER = insert(_ORDER)
_UPDATE_ATTEMPT = update(_ATTEMPT).where(_ATTEMPT.id == bindparam("b_id"))
_INSERT_ATTEMPT = insert(_ATTEMPT)
_DELETE_DROPPED_ATTEMPTS = delete(_ATTEMPT).where(
    _ATTEMPT.call_id == bindparam("b_call_id"),  # type: ignore[arg-type]
    _ATTEMPT.id.not_in(bindparam("b_ids", expanding=True)),  # type: ignore[union-attr]
)


# What POST /call resolved into its placeholder (assistant_id's assistant, the caller id, ...), which an
# order started with an assistant_id does not know until prepare_order has run.
_RESOLVED = ("assistant", "call_retry_config", "from_phone_number", "llm_model", "first_sentence_delay_ms")


def keep_resolution(call: Call, stored: dict[str, Any] | None) -> Call:
    """`call` with the stored Call's resolution when it has none of its own yet (an order still
    initializing, or one that errored then): a later read never loses what POST /call answered, nor
    the order the caller id it was accepted with (an inline assistant's order names none until then)."""
    if not stored:
        return call
    if call.assistant is None and stored.get("assistant"):
        known = Call.model_validate(stored)
        return call.model_copy(update={field: getattr(known, field) for field in _RESOLVED})
    if not call.from_phone_number and stored.get("from_phone_number"):
        return call.model_copy(update={"from_phone_number": stored["from_phone_number"]})
    return call


def keep_transcripts(call: Call, stored: dict[str, Any] | None, kept: Sequence[str]) -> Call:
    """`call` with the stored transcripts of the attempts its write left them out of (`kept`)."""
    if not kept or not stored:
        return call
    before = {a.get("id"): a for a in stored.get("call_attempts") or [] if isinstance(a, dict)}
    attempts = [
        attempt.model_copy(update={"transcript": CallAttempt.model_validate(before[attempt.id]).transcript})
        if attempt.id in kept and attempt.id in before
        else attempt
        for attempt in call.call_attempts
    ]
    return call.model_copy(update={"call_attempts": attempts})


def _as_stored_numbers(values: dict[str, Any]) -> dict[str, Any]:
    """The order's numbers as E.164 writes them, as migrations 0009 and 0011 rewrote them: an order
    placed before them (its number `+330159000001`) wrote its own form back at its next step, and the
    search filters found it under no form again."""
    numbers = {
        name: canonical
        for name in ("to_phone_number", "from_phone_number")
        if values[name] and (canonical := canonical_number(values[name])) != values[name]
    }
    if not numbers:
        return values
    call = {**values["call"], **numbers}
    return {**values, **numbers, "call": call, "search_text": search_text(call)}


def write_call(database: Database, call: Call, seq: int, kept_transcripts: Sequence[str] = ()) -> bool:
    """Upsert the order and its attempts if this state is not older than the stored one.

    Returns False when a newer state was already stored (the write is then a no-op). The conditional
    UPDATE locks the row (PostgreSQL) or the database (SQLite) until commit, so the attempts written
    after it always belong to the newest state.
    """
    database.migrate()
    for _ in range(5):
        try:
            with database.engine.begin() as connection:
                if call.assistant is None or not call.from_phone_number or kept_transcripts:
                    stored = connection.execute(_STORED_CALL, {"b_id": call.id}).scalar()
                    call = keep_transcripts(keep_resolution(call, stored), stored, kept_transcripts)
                values = _as_stored_numbers(call_columns(call, seq))
                if not _upsert_order(connection, call.id, values):
                    return False
                _upsert_attempts(connection, call.id, attempt_columns(call))
                return True
        except IntegrityError:
            continue  # another writer inserted the same row first: try again as an update
    raise RuntimeError(f"could not persist call {call.id}: conflicting concurrent inserts")


def _upsert_order(connection: Connection, call_id: str, values: dict[str, Any]) -> bool:
    newer = {"b_id": call_id, "b_updated_at": values["updated_at"], "b_seq": values["seq"]}
    if connection.execute(_UPDATE_ORDER_IF_NEWER, values | newer).rowcount:
        return True
    if connection.execute(_ORDER_EXISTS, {"b_id": call_id}).first():
        return False  # stale: a newer state is stored
    connection.execute(_INSERT_ORDER, {"id": call_id, **values})
    return True


def _upsert_attempts(connection: Connection, call_id: str, rows: list[dict[str, Any]]) -> None:
    """The order's attempts as its newest state has them: one it dropped (a dial that started after its
    window closed rang nobody) goes from the stored rows too."""
    connection.execute(_DELETE_DROPPED_ATTEMPTS, {"b_call_id": call_id, "b_ids": [row["id"] for row in rows]})
    for values in rows:
        if not connection.execute(_UPDATE_ATTEMPT, values | {"b_id": values["id"]}).rowcount:
            connection.execute(_INSERT_ATTEMPT, values)


NOT_STORABLE = "CallNotStorable"


class PersistenceActivities:
    """The persistence activity, bound to the worker's database (opened on first use)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def database(self) -> Database:
        return Database.for_url(self.settings.database_url)

    @activity.defn(name=PERSIST_ACTIVITY)
    async def persist_call(self, snapshot: CallSnapshot) -> bool:
        """Store the order's state; True if it was written, False if a newer one was already there.
        A value the database refuses (a call id past its 64 characters, on PostgreSQL) is refused
        again on every retry: that write fails at once, and the order goes on without it."""
        try:
            return await asyncio.to_thread(
                write_call, self.database, snapshot.call, snapshot.seq, snapshot.kept_transcripts
            )
        except DataError as err:  # the driver's reason only: the statement's values may be private
            reason = str(err.orig).splitlines()[0]
            raise ApplicationError(
                f"call {snapshot.call.id} cannot be stored: {reason}", type=NOT_STORABLE, non_retryable=True
            ) from None


# --- reading what orders refer to ------------------------------------------------------------------------


def find_assistant(database: Database, organization_id: str, assistant_id: str) -> AssistantRecord | None:
    """The organization's assistant; its id in any case, as `POST /call` takes it (ids are lowercase)."""
    with database.session() as session:
        record = session.get(AssistantRecord, assistant_id.lower())
        return record if record and record.organization_id == organization_id else None


def accepted_call(database: Database, organization_id: str, call_id: str, accepted: bool) -> Call | None:
    """The order's Call as the API accepted it, resolved then: kept for the order if its assistant or
    caller id is deleted since. Only the row of an order the API or a campaign accepted (`accepted`,
    from its memo; a campaign's row; the API's placeholder, `seq` 0) counts, whose early writes keep
    that resolution (`keep_resolution`): not one an order started past the API wrote with what it
    asked for, which nobody checked."""
    with database.session() as session:
        record = session.get(CallOrderRecord, call_id)
        if record is None or record.organization_id != organization_id or not record.call:
            return None
        trusted = accepted or record.seq == 0 or record.campaign_id is not None
        return Call.model_validate(record.call) if trusted else None


def phone_numbers_of(database: Database, organization_id: str) -> list[PhoneNumberRecord]:
    """The organization's caller ids, oldest first (the first one is its default)."""
    with database.session() as session:
        query = (
            select(PhoneNumberRecord)
            .where(PhoneNumberRecord.organization_id == organization_id)
            .order_by(PhoneNumberRecord.created_at, PhoneNumberRecord.id)
        )
        return list(session.scalars(query))


# Prebuilt: building a statement costs more than running it, and these run on every POST /call.
_CALLER_IDS = (
    select(PhoneNumberRecord.phone_number, PhoneNumberRecord.livekit_outbound_trunk_id)
    .where(PhoneNumberRecord.organization_id == bindparam("organization_id"))
    .order_by(PhoneNumberRecord.created_at, PhoneNumberRecord.id)
)


def caller_ids(database: Database, organization_id: str) -> dict[str, str | None]:
    """The organization's caller ids and their trunks, oldest first (`resolve_caller_id` picks one)."""
    return dict(database.fetch(_CALLER_IDS, organization_id=organization_id))


def assistant_view(record: AssistantRecord, config: Assistant | None = None) -> CallAssistant:
    """A stored assistant as responses show it (the seed's assistant object), defaults filled in;
    `config`: its config, when the caller validated it already."""
    assistant = call_assistant_from(
        config or Assistant.model_validate(record.config),
        id=record.id,
        organization_id=record.organization_id,
        now=record.created_at,
        name=record.name,
    )
    return assistant.model_copy(update={"updated_at": record.updated_at})


@dataclass(frozen=True)
class CallerId:
    phone_number: str
    livekit_outbound_trunk_id: str | None


class UnknownCallerId(ValueError):
    """The order asks for a from_phone_number the organization does not own."""


def resolve_caller_id(owned: Mapping[str, str | None], requested: str | None, fallback: str) -> CallerId:
    """The number (and trunk) an order dials from, among the organization's caller ids (`caller_ids`):
    the requested one if the organization owns it, else the configured default (`fallback`,
    temporal-dev.yaml `organization.default_from_phone_number`) if it owns that, else its first number.
    An organization without numbers dials from `fallback` (the default trunk's number)."""
    owned = owned or {fallback: None}
    if requested is None:  # the configured number first: set after a demo, it must win over the demo's
        number = fallback if fallback in owned else next(iter(owned))
        return CallerId(number, owned[number])
    if requested not in owned:
        raise UnknownCallerId(
            f"{requested} is not one of the organization's phone numbers ({', '.join(owned)})"
        )
    return CallerId(requested, owned[requested])


_TRUNK = select(PhoneNumberRecord.livekit_outbound_trunk_id).where(
    PhoneNumberRecord.organization_id == bindparam("organization_id"),
    PhoneNumberRecord.phone_number == bindparam("phone_number"),
)


def trunk_of(database: Database, organization_id: str, phone_number: str, accepted: str | None) -> str | None:
    """The LiveKit outbound trunk the organization records for its caller id now, if any (another
    organization registering the same number must not choose the trunk this one's calls go through);
    the trunk the order was `accepted` with once the number is deleted, as the number itself is kept; none
    (LIVEKIT_SIP_TRUNKS, else the default) once its trunk was cleared."""
    rows = database.fetch(_TRUNK, organization_id=organization_id, phone_number=phone_number)
    return rows[0][0] if rows else accepted


def deleted_trunk(
    database: Database, organization_id: str, phone_number: str, accepted_at: datetime
) -> str | None:
    """The trunk a number had when the organization deleted it, for an order accepted with it before
    (a campaign row, or an order whose first step came after the deletion: they took the default
    trunk, which does not own the number); none for an order accepted after, with no trunk then."""
    with database.session() as session:
        record = session.get(DeletedPhoneNumberRecord, (organization_id, phone_number))
        return record.livekit_outbound_trunk_id if record and record.deleted_at >= accepted_at else None


# --- do-not-contact registry ---------------------------------------------------------------------------


_LISTING = select(
    DoNotContactRecord.call_id, DoNotContactRecord.reason, DoNotContactRecord.recorded_at
).where(
    DoNotContactRecord.organization_id == bindparam("organization_id"),
    DoNotContactRecord.phone_number == bindparam("phone_number"),
)


def do_not_contact_entry(
    database: Database, organization_id: str, phone_number: str
) -> DoNotContactEntry | None:
    """The number's do-not-contact listing for the organization, if any."""
    rows = database.fetch(_LISTING, organization_id=organization_id, phone_number=phone_number)
    if not rows:
        return None
    call_id, reason, recorded_at = rows[0]
    return DoNotContactEntry(
        organization_id=organization_id,
        phone_number=phone_number,
        call_id=call_id,
        reason=reason,
        recorded_at=recorded_at,
    )


class DatabaseDoNotContactRegistry:
    """`activities.compliance.DoNotContactRegistry` on the `do_not_contact` table: shared by every
    worker and the API, and kept across restarts. `add` is idempotent (the first entry wins)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def database(self) -> Database:
        return Database.for_url(self.settings.database_url)

    async def add(self, entry: DoNotContactEntry) -> None:
        await asyncio.to_thread(self._add, entry)

    def _add(self, entry: DoNotContactEntry) -> None:
        """Listed, or listed anew: the latest request is the one an override is weighed against."""
        try:
            with self.database.session() as session:
                listed = session.get(DoNotContactRecord, (entry.organization_id, entry.phone_number))
                if listed is None:
                    session.add(DoNotContactRecord(**entry.model_dump()))
                elif listed.recorded_at < entry.recorded_at:
                    listed.call_id, listed.reason = entry.call_id, entry.reason
                    listed.recorded_at = entry.recorded_at
                session.commit()
        except IntegrityError:
            pass  # a concurrent add of the same number won: it is listed

    async def get(self, organization_id: str, phone_number: str) -> DoNotContactEntry | None:
        return await asyncio.to_thread(self._get, organization_id, phone_number)

    def _get(self, organization_id: str, phone_number: str) -> DoNotContactEntry | None:
        return do_not_contact_entry(self.database, organization_id, phone_number)

    async def remove(self, organization_id: str, phone_number: str) -> None:
        await asyncio.to_thread(self._remove, organization_id, phone_number)

    def _remove(self, organization_id: str, phone_number: str) -> None:
        with self.database.session() as session:
            record = session.get(DoNotContactRecord, (organization_id, phone_number))
            if record is not None:
                session.delete(record)
                session.commit()
