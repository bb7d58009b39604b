"""The API's database operations (blocking; handlers run them with `ApiContext.db`). Every query is
scoped to one organization."""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import phonenumbers
from sqlalchemy import (
    Select,
    Text,
    asc,
    case,
    cast,
    delete,
    desc,
    false,
    func,
    insert,
    null,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session

from activities.persistence import find_assistant
from api.errors import ApiError, unprocessable
from api.schemas import CallFilters
from models.common import canonical_number, typed_number, without_separators
from models.tables import (
    AssistantRecord,
    CallAttemptRecord,
    CallOrderRecord,
    CampaignRecord,
    Database,
    DeletedPhoneNumberRecord,
    Organization,
    PhoneNumberRecord,
    User,
    utcnow,
)

# --- call orders ----------------------------------------------------------------------------------------


def get_call(database: Database, organization_id: str, call_id: str) -> CallOrderRecord | None:
    record = find_call(database, call_id)
    return record if record and record.organization_id == organization_id else None


def find_call(database: Database, call_id: str) -> CallOrderRecord | None:
    """The row of `call_id`, whatever its organization (the caller compares it)."""
    with database.session() as session:
        return session.get(CallOrderRecord, call_id)


def get_call_by_key(database: Database, organization_id: str, key: str) -> CallOrderRecord | None:
    with database.session() as session:
        query = select(CallOrderRecord).where(
            CallOrderRecord.organization_id == organization_id, CallOrderRecord.idempotency_key == key
        )
        return session.scalars(query).first()


_INSERT_CALL = insert(CallOrderRecord)  # prebuilt: POST /call's hot path


def insert_call(database: Database, placeholder: dict[str, Any]) -> CallOrderRecord | None:
    """Insert the API's placeholder row (None when it was inserted). When the row is there already,
    the one that is: the call that used this idempotency key first, or (no key) the order's own row,
    stored first by its workflow when it was started alongside."""
    database.migrate()
    try:
        with database.engine.begin() as connection:
            connection.execute(_INSERT_CALL, placeholder)
        return None
    except IntegrityError:
        organization_id, key = placeholder["organization_id"], placeholder["idempotency_key"]
        if key is None:
            existing = get_call(database, organization_id, placeholder["id"])
        else:
            existing = get_call_by_key(database, organization_id, key)
        if existing is None:
            raise
        return existing


def keep_unstarted(database: Database, call_id: str, params: dict[str, Any]) -> None:
    """Keep an order whose start Temporal could not account for, with what starts it (if no workflow
    wrote to it): steering it then starts it with the signal (`api.calls.start_unstarted`)."""
    with database.session() as session:
        session.execute(
            update(CallOrderRecord)
            .where(CallOrderRecord.id == call_id, CallOrderRecord.seq == 0)
            .values(params=params)
        )
        session.commit()


def delete_placeholder(database: Database, call_id: str) -> None:
    """Forget an order whose workflow could not be started (only if no workflow wrote to it)."""
    with database.session() as session:
        session.execute(
            delete(CallOrderRecord).where(CallOrderRecord.id == call_id, CallOrderRecord.seq == 0)
        )
        session.commit()


_SORT_COLUMNS: dict[str, Any] = {
    "created_at": CallOrderRecord.created_at,
    "updated_at": CallOrderRecord.updated_at,
    "scheduled_at": CallOrderRecord.scheduled_at,
    "status": CallOrderRecord.status,
    "to_phone_number": CallOrderRecord.to_phone_number,
    "outcome": CallOrderRecord.outcome,
    "calls_count": CallOrderRecord.calls_count,
}


def _in_or_none(column: Any, values: Sequence[str]) -> ColumnElement[bool]:
    """`column IN values`, where the value "none" matches NULL."""
    named = [v for v in values if v != "none"]
    clauses = [column.in_(named)] if named else []
    if "none" in values:
        clauses.append(column.is_(None))
    return or_(*clauses)


def _filters(organization_id: str, filters: CallFilters) -> list[ColumnElement[bool]]:
    row = CallOrderRecord
    where: list[ColumnElement[bool]] = [row.organization_id == organization_id]
    if filters.assignee_ids:
        where.append(false())  # outdial has no assignees: nothing matches
    if filters.campaign_ids:
        where.append(row.campaign_id.in_(filters.campaign_ids))  # type: ignore[union-attr]
    if filters.assistant_ids:
        assistant_ids = [assistant_id.lower() for assistant_id in filters.assistant_ids]  # ids in any case
        where.append(row.assistant_id.in_(assistant_ids))  # type: ignore[union-attr]
    if filters.directions:
        where.append(row.direction.in_(filters.directions))  # type: ignore[attr-defined]
    if filters.from_phone_numbers:
        numbers = [named for number in filters.from_phone_numbers for named in _numbers_named(number)]
        where.append(row.from_phone_number.in_(numbers))  # type: ignore[attr-defined]
    if filters.outcomes:
        where.append(_in_or_none(row.outcome, filters.outcomes))
    if filters.results:
        where.append(_in_or_none(row.last_result, filters.results))
    if filters.statuses:
        where.append(row.status.in_(filters.statuses))  # type: ignore[attr-defined]
    if filters.call_ids is not None:
        where.append(row.id.in_([canonical_call_id(i) for i in filters.call_ids]))  # type: ignore[attr-defined]
    if filters.to_phone_number:
        where.append(row.to_phone_number.in_(_numbers_named(filters.to_phone_number)))  # type: ignore[attr-defined]
    if filters.query:
        matches = [row.search_text.contains(n, autoescape=True) for n in _needles(filters.query)]  # type: ignore[attr-defined]
        where.append(or_(*matches))
    return where


@functools.lru_cache(maxsize=1024)
def _numbers_named(value: str) -> tuple[str, ...]:
    """The numbers (as stored: E.164) a number filter's value names: the one it is, written
    internationally (`+33 6 12 34 56 78`); written nationally (`06 12 34 56 78`, `(212) 555-0100`),
    the valid number it is in each country, since it does not say which (as the free-text query)."""
    typed = typed_number(value)
    if typed.startswith("+") or not without_separators(value).isdigit():
        return (typed,)
    national = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        try:
            number = phonenumbers.parse(value, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            national.append(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    return tuple(dict.fromkeys([typed, *national]))


_DIALLED = re.compile(r"\+?[0-9]{6,}")


def _needles(query: str) -> list[str]:
    """What a free-text query looks for in the search text: itself and, when it is a phone number
    however written, the number as stored (E.164): `+33 6 12 34 99 99` as `+33612349999`, the national
    `06 12 34 99 99` (or `089 12345`, `0612349999`) as its digits after the trunk's 0 (`612349999`, in
    `+33612349999`); a run of digits shorter than a national number, written without separators
    (`012345`, a reference), keeps its 0."""
    needles = [query.lower()]
    dialled = without_separators(query)
    if _DIALLED.fullmatch(dialled):
        if dialled.startswith("+"):
            needles.append(canonical_number(dialled))
        else:
            needles.append(dialled)
            written = dialled != query.strip()  # with spaces, dashes, dots: a phone number as people write it
            if dialled.startswith("0") and (written or len(dialled) >= 9):  # national: its trunk 0 dialled
                needles.append(dialled[1:])
    return list(dict.fromkeys(needles))


def canonical_call_id(value: str) -> str:
    """A call id as stored (a lowercase UUID), as `GET /call/{id}` reads it; anything else as given."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return value


def _order(filters: CallFilters) -> list[Any]:
    column = _SORT_COLUMNS[filters.sort_by or "created_at"]
    direction = asc if filters.sort_direction == "asc" else desc
    ordered = direction(column)
    if column.nullable:  # calls without it (no outcome yet) last either way, on every database:
        ordered = ordered.nulls_last()  # PostgreSQL and SQLite put NULL at opposite ends by default
    # (and only there: NULLS LAST on created_at would keep PostgreSQL from reading its index backwards)
    return [ordered, direction(CallOrderRecord.id)]


def search_calls(
    database: Database, organization_id: str, filters: CallFilters
) -> tuple[list[CallOrderRecord], int]:
    where = _filters(organization_id, filters)
    with database.snapshot() as session:  # the count and the page of one moment
        total = session.scalar(select(func.count()).select_from(CallOrderRecord).where(*where)) or 0
        return list(session.scalars(search_page(organization_id, filters))), total


def search_page(organization_id: str, filters: CallFilters) -> Select[tuple[CallOrderRecord]]:
    """The query of a search's page (by default, read in the order of ix_call_orders_search_order)."""
    return (
        select(CallOrderRecord)
        .where(*_filters(organization_id, filters))
        .order_by(*_order(filters))
        .offset((filters.page - 1) * filters.page_size)
        .limit(filters.page_size)
    )


EXPORT_LIMIT = 100_000


@dataclass(frozen=True)
class ExportedCall:
    """What an export reads of a call: its columns and two values of its Call. Reading whole Calls
    (about 4 KB each) took an API to 3.5 GB for 100,000 calls."""

    id: str
    to_phone_number: str
    from_phone_number: str
    status: str
    outcome: str | None
    assistant_id: str | None
    created_at: datetime
    scheduled_at: datetime | None
    outcome_summary: str | None
    metadata: dict[str, Any] | None


def export_calls(
    database: Database, organization_id: str, filters: CallFilters
) -> list[tuple[ExportedCall, list[CallAttemptRecord]]]:
    """The matching calls (all pages) with their attempts, oldest attempt first. More than
    EXPORT_LIMIT calls is a 422 saying so: the export was cut there without a word."""
    where = _filters(organization_id, filters)
    call = CallOrderRecord
    with database.snapshot() as session:  # each call's status and its attempts of one moment
        total = session.scalar(select(func.count()).select_from(call).where(*where)) or 0
        if total > EXPORT_LIMIT:
            raise unprocessable(
                "filters",
                f"{total:,} calls match; an export holds at most {EXPORT_LIMIT:,}: narrow the filters "
                "(campaign_ids, statuses, outcomes, assistant_ids, ...)",
            )
        # A Call holding a NUL (`\u0000`, kept as sent) is read whole and picked from here: PostgreSQL's
        # json operators refuse it, SQLite's cut a string at it. The rest are picked by the database
        # (read whole, 100,000 calls took the API to 3.5 GB).
        nul = cast(call.call, Text).contains("\\u0000", autoescape=True)
        summary = case((nul, null()), else_=call.call["outcome_summary"].as_string())  # type: ignore[index]
        metadata = case((nul, null()), else_=call.call["metadata"])  # type: ignore[index]
        whole = case((nul, cast(call.call, Text)), else_=null())
        columns = (
            call.id,
            call.to_phone_number,
            call.from_phone_number,
            call.status,
            call.outcome,
            call.assistant_id,
            call.created_at,
            call.scheduled_at,
            summary,
            metadata,
            whole,
        )
        query = select(*columns).where(*where).order_by(*_order(filters))
        calls = [_exported(*row) for row in session.execute(query)]
        attempts: dict[str, list[CallAttemptRecord]] = {exported.id: [] for exported in calls}
        ids = list(attempts)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = session.scalars(
                select(CallAttemptRecord)
                .where(CallAttemptRecord.call_id.in_(chunk))  # type: ignore[attr-defined]
                .order_by(CallAttemptRecord.call_id, CallAttemptRecord.number)
            )
            for row in rows:
                attempts[row.call_id].append(row)
        return [(exported, attempts[exported.id]) for exported in calls]


def _exported(*row: Any) -> ExportedCall:
    *columns, whole = row
    if whole is not None:
        stored = json.loads(whole)
        columns[-2:] = [stored.get("outcome_summary"), stored.get("metadata")]
    return ExportedCall(*columns)


def phone_history_rows(
    database: Database, organization_id: str
) -> tuple[
    list[tuple[str, str | None, str | None, str | None]], list[tuple[str, str | None, datetime | None]]
]:
    """(to_phone_number, outcome, campaign id, campaign name) per call, oldest update first;
    (to_phone_number, result, started_at) per attempt."""
    with database.session() as session:
        calls = session.execute(
            select(
                CallOrderRecord.to_phone_number,
                CallOrderRecord.outcome,
                CampaignRecord.id,
                CampaignRecord.name,
            )
            .outerjoin(CampaignRecord, CampaignRecord.id == CallOrderRecord.campaign_id)
            .where(CallOrderRecord.organization_id == organization_id)
            .order_by(CallOrderRecord.updated_at)
        ).all()
        attempts = session.execute(
            select(CallOrderRecord.to_phone_number, CallAttemptRecord.result, CallAttemptRecord.started_at)
            .join(CallOrderRecord, CallOrderRecord.id == CallAttemptRecord.call_id)
            .where(CallAttemptRecord.organization_id == organization_id)
        ).all()
        return [tuple(row) for row in calls], [tuple(row) for row in attempts]  # type: ignore[misc]


# --- assistants --------------------------------------------------------------------------------------------


get_assistant = find_assistant  # one lookup, shared with the activities that resolve assistant_id


def list_assistants(database: Database, organization_id: str) -> list[AssistantRecord]:
    with database.session() as session:
        query = (
            select(AssistantRecord)
            .where(AssistantRecord.organization_id == organization_id)
            .order_by(AssistantRecord.created_at, AssistantRecord.id)
        )
        return list(session.scalars(query))


def save_assistant(database: Database, record: AssistantRecord) -> AssistantRecord:
    with database.session() as session:
        if session.get(Organization, record.organization_id) is None:
            session.add(Organization(id=record.organization_id, name=record.organization_id))
            session.flush()
        record = session.merge(record)
        session.commit()
        return record


UPDATE_ATTEMPTS = 5


Versioned = TypeVar("Versioned", AssistantRecord, CampaignRecord)


def update_if_unchanged(database: Database, read: Versioned, values: dict[str, Any]) -> Versioned | None:
    """Write `values` to the row `read` came from if nobody wrote it since (its `updated_at`): a partial
    update merged into a stale read would undo a concurrent one's changes, or bring a deleted row back.
    The updated row, or None when it changed or went meanwhile (read it again: `updating`)."""
    now = max(utcnow(), read.updated_at + timedelta(microseconds=1))  # always a new version
    return _write_row(database, read, {**values, "updated_at": now}, type(read).updated_at == read.updated_at)


Row = TypeVar("Row", AssistantRecord, CampaignRecord, PhoneNumberRecord)


def _write_row(
    database: Database,
    read: Row,
    values: dict[str, Any],
    *only_if: Any,
    first: Callable[[Session], None] | None = None,
) -> Row | None:
    """Write `values` to the organization's row `read` came from (and `only_if` holds); the row as
    written, or None when no row matched: it went meanwhile (or changed, for `only_if`). `first` runs
    in the same transaction before the write (a check that may refuse it)."""
    model = type(read)
    with database.session() as session:
        if first is not None:
            first(session)
        written = session.execute(
            update(model)
            .where(model.id == read.id, model.organization_id == read.organization_id, *only_if)
            .values(**values)
        )
        session.commit()
        if not written.rowcount:  # type: ignore[attr-defined]
            return None
        return session.get(model, read.id, populate_existing=True)


def updating(
    read: Callable[[], Versioned], write: Callable[[Versioned], Versioned | None], what: str
) -> Versioned:
    """Read, merge and write until the write finds the row as read (`update_if_unchanged`); a row
    that went meanwhile is the read's 404."""
    for _ in range(UPDATE_ATTEMPTS):
        if (updated := write(read())) is not None:
            return updated
    raise ApiError(409, "conflict", f"the {what} kept changing during this update: send it again")


def delete_assistant(database: Database, organization_id: str, assistant_id: str) -> bool:
    assistant_id = assistant_id.lower()  # in any case, as `find_assistant` reads it
    with database.session() as session:
        deleted = session.execute(
            delete(AssistantRecord).where(
                AssistantRecord.id == assistant_id, AssistantRecord.organization_id == organization_id
            )
        )
        session.execute(
            update(PhoneNumberRecord)
            .where(
                PhoneNumberRecord.organization_id == organization_id,
                PhoneNumberRecord.inbound_assistant_id == assistant_id,
            )
            .values(inbound_assistant_id=None)
        )
        session.commit()
        return bool(deleted.rowcount)  # type: ignore[attr-defined]


def new_id() -> str:
    return str(uuid.uuid4())


# --- phone numbers ---------------------------------------------------------------------------------------


def get_phone_number(database: Database, organization_id: str, number_id: str) -> PhoneNumberRecord | None:
    with database.session() as session:
        record = session.get(PhoneNumberRecord, number_id)
        return record if record and record.organization_id == organization_id else None


# The registrations of caller ids take turns (PostgreSQL: this advisory lock; SQLite: its write lock), so
# two organizations registering one number at once are not both told it is theirs.
NUMBERS_LOCK = 0x6F75_6E6D  # "ounm"


def _numbers_take_turns(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": NUMBERS_LOCK})
    else:  # a write that changes nothing: the database's write lock, until commit
        session.execute(update(Organization).where(Organization.id == "").values(name=Organization.name))


def held_elsewhere(
    session: Session, organization_id: str, number: str | None, trunk: str | None
) -> str | None:
    """Why another organization holds this caller id, or this LiveKit trunk, or None: registered by a
    second organization, a number or a trunk dialled its calls with the first one's caller id, through
    its carrier (the operator's LIVEKIT_SIP_TRUNKS too, which maps numbers to trunks)."""
    others = select(PhoneNumberRecord.phone_number).where(
        PhoneNumberRecord.organization_id != organization_id
    )
    if number and session.execute(others.where(PhoneNumberRecord.phone_number == number).limit(1)).first():
        return f"{number} is another organization's number"
    if (
        trunk
        and session.execute(
            others.where(PhoneNumberRecord.livekit_outbound_trunk_id == trunk).limit(1)
        ).first()
    ):
        return f"trunk {trunk} dials another organization's numbers"
    return None


def add_phone_number(
    database: Database, record: PhoneNumberRecord, *, shared: tuple[str | None, str | None] = (None, None)
) -> PhoneNumberRecord | None:
    """Insert a caller id; None if the organization already has that number; a 409 when another
    organization holds it or its trunk (but the platform's `shared` default number and trunk, everyone's)."""
    number = None if record.phone_number == shared[0] else record.phone_number
    trunk = None if record.livekit_outbound_trunk_id == shared[1] else record.livekit_outbound_trunk_id
    try:
        with database.session() as session:
            _numbers_take_turns(session)
            if why := held_elsewhere(session, record.organization_id, number, trunk):
                raise ApiError(409, "conflict", why)
            if session.get(Organization, record.organization_id) is None:
                session.add(Organization(id=record.organization_id, name=record.organization_id))
                session.flush()
            session.add(record)
            session.commit()
            return record
    except IntegrityError:
        return None


def update_phone_number(
    database: Database, record: PhoneNumberRecord, changes: dict[str, Any], *, shared_trunk: str | None = None
) -> PhoneNumberRecord | None:
    """Write `changes` (the fields given, each replacing its own) to the organization's number; None
    when it was deleted meanwhile (a 404, not a 500 from an update that found no row). A trunk another
    organization's numbers dial through is a 409 (but the platform's `shared_trunk`), checked in turn
    with registrations, so that one of two at once is refused."""
    trunk = changes.get("livekit_outbound_trunk_id")

    def trunk_free(session: Session) -> None:
        _numbers_take_turns(session)
        if why := held_elsewhere(session, record.organization_id, None, trunk):
            raise ApiError(409, "conflict", why)

    check = trunk_free if trunk and trunk != shared_trunk else None
    return _write_row(database, record, {**changes, "updated_at": utcnow()}, first=check)


def delete_phone_number(database: Database, organization_id: str, number_id: str) -> bool:
    """Delete it, remembering its trunk for the orders and campaign rows accepted with it."""
    with database.session() as session:
        deleted = session.execute(
            delete(PhoneNumberRecord)
            .where(PhoneNumberRecord.id == number_id, PhoneNumberRecord.organization_id == organization_id)
            .returning(PhoneNumberRecord.phone_number, PhoneNumberRecord.livekit_outbound_trunk_id)
        ).first()
        if deleted is None:
            return False
        number, trunk = deleted
        session.merge(
            DeletedPhoneNumberRecord(
                organization_id=organization_id,
                phone_number=number,
                livekit_outbound_trunk_id=trunk,
                deleted_at=utcnow(),
            )
        )
        session.commit()
        return True


# --- account -----------------------------------------------------------------------------------------------


def get_user(
    database: Database, organization_id: str, user_id: str | None
) -> tuple[User | None, Organization | None]:
    with database.session() as session:
        user = session.get(User, user_id) if user_id else None
        return user, session.get(Organization, organization_id)


def now() -> datetime:
    return datetime.now(UTC)
