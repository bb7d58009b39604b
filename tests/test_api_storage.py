"""Storage: the Alembic schema matches the tables; the persistence activity's upsert is idempotent and
monotonic under concurrent writes; `prepare_order` and `dial` resolve assistants, caller ids and trunks
from the organization's records. On SQLite, and on PostgreSQL when OUTDIAL_TEST_POSTGRES_URL is set."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, Table, bindparam, text
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from sqlmodel import SQLModel, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.calls import INVALID_ORDER, CallActivities
from activities.compliance import DoNotContactEntry
from activities.persistence import (
    NOT_STORABLE,
    CallSnapshot,
    DatabaseDoNotContactRegistry,
    PersistenceActivities,
    call_columns,
    phone_numbers_of,
    write_call,
)
from activities.simulated import SimulatedAnalyzer
from api import campaign_store
from api.auth import ensure_phone_number, issue_api_key
from api.store import insert_call
from models import Assistant, Call, CallAttempt, call_assistant_from
from models.campaign import CampaignContact, CampaignCreateParams
from models.tables import (
    AssistantRecord,
    CallAttemptRecord,
    CallOrderRecord,
    CampaignRecord,
    CampaignRowRecord,
    Database,
    PhoneNumberRecord,
    ensure_organization,
    utcnow,
)
from models.workflow_io import DialRequest, DialResult, PrepareRequest
from tests.helpers import settings_for_tests

POSTGRES_URL = os.environ.get("OUTDIAL_TEST_POSTGRES_URL")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Database:
    if request.param == "postgresql":
        if not POSTGRES_URL:
            pytest.skip("OUTDIAL_TEST_POSTGRES_URL is not set")
        return Database.for_url(POSTGRES_URL)
    return Database.for_url(f"sqlite:///{tmp_path_factory.mktemp('storage') / 'outdial.db'}")


def test_the_migrations_create_exactly_the_tables(database: Database) -> None:
    database.migrate()
    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert differences == []


def test_a_search_page_reads_the_calls_in_order_instead_of_sorting_them(database: Database) -> None:
    """On SQLite a page sorted every call of the organization, whole rows (3.6 s deep in 61,000)."""
    from api.schemas import CallFilters
    from api.store import search_page

    database.migrate()
    query = search_page("org", CallFilters(page=5_000, page_size=20)).compile(
        database.engine, compile_kwargs={"literal_binds": True}
    )
    explain = "EXPLAIN QUERY PLAN " if database.dialect == "sqlite" else "EXPLAIN "
    with database.engine.connect() as connection:
        plan = " | ".join(str(row) for row in connection.execute(text(explain + str(query))))
    if database.dialect == "sqlite":
        assert "ix_call_orders_search_order" in plan and "TEMP B-TREE" not in plan, plan


def test_a_search_finds_a_call_by_its_numbers_however_they_are_written(database: Database) -> None:
    """Numbers are stored as E.164 writes them (`+33612345678`); a search by what the user typed (the
    trunk's 0 kept, spaces, the national form) found nothing."""
    from api.schemas import CallFilters
    from api.store import search_calls

    organization = f"org_typed_{uuid.uuid4().hex[:6]}"
    assert write_call(database, snapshot(f"call-typed-{organization}", organization, 1), 1)

    def found(**filters: Any) -> int:
        calls, total = search_calls(database, organization, CallFilters(**filters))
        assert total == len(calls)
        return total

    for typed in ("+33612345678", "+330612345678", "+33 6 12 34 56 78", "+33 (0)6-12-34-56-78"):
        assert found(to_phone_number=typed) == 1, typed
        assert found(query=typed) == 1, typed
    for national in ("06 12 34 56 78", "06.12.34.56.78", "0612345678", "612345678"):
        assert found(query=national) == 1, national
    for national in ("06 12 34 56 78", "06.12.34.56.78", "0612345678"):  # filters too (README)
        assert found(to_phone_number=national) == 1, national
    assert found(from_phone_numbers=["+33 1 59 00 00 00"]) == 1
    assert found(from_phone_numbers=["01 59 00 00 00"]) == found(query="01 59 00 00 00") == 1
    assert found(to_phone_number="07 12 34 56 78") == found(from_phone_numbers=["01 59 00 00 01"]) == 0
    assert found(to_phone_number="+33 6 12 34 56 79") == found(query="06 12 34 56 79") == 0
    assert found(query="+33 6 12 34") == 1  # a number begun
    assert found(query="012345") == 0  # a reference, not a national number: its 0 is kept
    munich = snapshot(f"call-munich-{organization}", organization, 1).model_copy(
        update={"to_phone_number": "+498912345"}
    )
    assert write_call(database, munich, 1)
    assert found(query="089 12345") == 1  # a short national number, written as one


def test_a_search_counts_the_calls_of_the_moment_it_reads_its_page(database: Database) -> None:
    """A call that changed state between the count and the page gave a total one off the calls beside
    it: a client paging until it holds `total_count` calls stopped early or never."""
    from sqlalchemy import event

    from api.schemas import CallFilters
    from api.store import search_calls

    organization = f"org_moment_{uuid.uuid4().hex[:6]}"
    for n in range(3):
        assert write_call(database, snapshot(f"call-moment-{organization}-{n}", organization, 1), 1)
    other = Database(database.url)  # a connection of its own: another process finishing a call

    finished: list[bool] = []

    def finish_one_after_the_count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "count(" in statement and "call_orders" in statement and not finished:
            finished.append(write_call(other, snapshot(f"call-moment-{organization}-0", organization, 2), 2))

    event.listen(database.engine, "after_cursor_execute", finish_one_after_the_count)
    try:
        calls, total = search_calls(database, organization, CallFilters(statuses=["calling"]))
    finally:
        event.remove(database.engine, "after_cursor_execute", finish_one_after_the_count)
        other.engine.dispose()
    assert finished == [True]
    assert (total, len(calls)) == (3, 3)
    calls, total = search_calls(database, organization, CallFilters(statuses=["calling"]))
    assert (total, len(calls)) == (2, 2)  # the change is read by the next search


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database with no tables yet: a new SQLite file, or a new PostgreSQL schema (dropped after)."""
    if request.param == "sqlite":
        yield Database.for_url(f"sqlite:///{tmp_path / 'old.db'}")
        return
    if not POSTGRES_URL:
        pytest.skip("OUTDIAL_TEST_POSTGRES_URL is not set")
    schema = f"empty_{uuid.uuid4().hex}"
    with Database.for_url(POSTGRES_URL).engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield Database.for_url(f"{POSTGRES_URL}?options=-csearch_path%3D{schema}")
    finally:
        with Database.for_url(POSTGRES_URL).engine.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))


def test_a_database_a_newer_version_migrated_is_used_as_it_is(
    empty_database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A rolling upgrade: an older worker starting on a database a newer one migrated failed every
    database step ("Can't locate revision"), a dial losing its attempt without a ring."""
    empty_database.migrate()
    with empty_database.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    again = Database(empty_database.url)  # another process: it migrates on first use
    with again.session() as session:
        assert session.scalars(select(CallOrderRecord)).all() == []
    assert "revision 9999, which this version does not know" in caplog.text
    again.engine.dispose()


def test_a_user_that_may_not_create_the_tables_is_told_so_at_once(
    empty_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL 15 gives CREATE on schema public to the database's owner only: a user that is not was
    tried six times over 31 s, then a traceback of hundreds of lines (and `outdial worker` started)."""
    import migrations
    from models.settings import ConfigError

    class InsufficientPrivilege(Exception):
        sqlstate = "42501"

    def refused(*args: Any, **kwargs: Any) -> None:
        raise ProgrammingError(
            "CREATE TABLE", {}, InsufficientPrivilege("permission denied for schema public")
        )

    slept: list[float] = []
    monkeypatch.setattr(migrations.command, "upgrade", refused)
    monkeypatch.setattr(migrations.time, "sleep", slept.append)
    with pytest.raises(ConfigError) as told:
        empty_database.migrate()
    assert str(told.value).startswith(
        "the database user may not create outdial's tables (permission denied for schema public): grant it "
        "CREATE on the schema"
    )
    assert slept == []


def test_a_database_migrated_by_a_newer_version_while_waiting_for_the_lock_is_used_as_it_is(
    empty_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The older process read a revision it knew, waited for the migration lock while a newer one
    migrated, then Alembic refused the new revision: its first database step failed."""
    import migrations

    empty_database.migrate()
    with empty_database.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    newer_than_known = migrations._newer_than_known
    checks: list[bool] = []

    def read_before_the_newer_one_wrote(*args: Any) -> bool:
        checks.append(newer_than_known(*args) if checks else False)
        return checks[-1]

    monkeypatch.setattr(migrations, "_newer_than_known", read_before_the_newer_one_wrote)
    monkeypatch.setattr(migrations.time, "sleep", lambda seconds: None)
    again = Database(empty_database.url)
    with again.session() as session:
        assert session.scalars(select(CallOrderRecord)).all() == []
    assert checks == [False, True]
    again.engine.dispose()


def test_calls_stored_before_the_search_text_column_are_searchable_after_the_migration(
    empty_database: Database,
) -> None:
    """A NUL in a stored call's values (PostgreSQL's json holds it, its text cannot) is left out of the
    search text, as the model writes it: the migration does not fail on it."""
    from alembic import command

    from migrations import alembic_config

    call = snapshot("call-old", "org-old", 1).model_copy(
        update={"metadata": {"crm_id": "C-77", "note": "a\x00b"}}
    )
    with empty_database.engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0004")  # the schema before the column
        before = Table(  # the table as 0004 left it
            "call_orders",
            MetaData(),
            *(c._copy() for c in CallOrderRecord.__table__.columns if c.name != "search_text"),  # type: ignore[attr-defined]
        )
        values = {k: v for k, v in call_columns(call, 1).items() if k != "search_text"}
        connection.execute(before.insert().values(id=call.id, **values))
    empty_database.migrate()
    order, _ = stored(empty_database, call.id)
    assert "c-77" in order.search_text.split("\n") and "crm_id" not in order.search_text
    assert "ab" in order.search_text.split("\n")


def test_numbers_stored_before_0008_are_rewritten_as_e164_for_history_search_and_launch(
    empty_database: Database,
) -> None:
    """0008 rewrote the do-not-contact list and the caller ids: an order's and a campaign row's number with
    the trunk's 0 (`+330…`) kept it, so phone history and search split one person in two, and the row
    was launched though its number was on the list."""
    from alembic import command

    from migrations import alembic_config

    call = snapshot("call-old", "org-old", 1).model_copy(update={"to_phone_number": "+330612345678"})
    campaign = CampaignRecord(
        id="k-old",
        organization_id="org-old",
        name="Old",
        assistant_id="a",
        max_concurrent_calls=1,
        metadata_keys=[],
    )
    row = CampaignRowRecord(
        id="r-old", campaign_id="k-old", organization_id="org-old", row_index=0, phone_number="+330612345670",
        input_data={},
    )  # fmt: skip
    with empty_database.engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0008")
        connection.execute(CallOrderRecord.__table__.insert().values(id=call.id, **call_columns(call, 1)))  # type: ignore[attr-defined]
        connection.execute(CampaignRecord.__table__.insert().values(**campaign.model_dump()))  # type: ignore[attr-defined]
        connection.execute(CampaignRowRecord.__table__.insert().values(**row.model_dump()))  # type: ignore[attr-defined]
        repeat = row.model_copy(  # the same number, already called: the first row is the repeat now
            update={"id": "r-again", "row_index": 1, "phone_number": "+33612345670", "state": "launched"}
        )
        connection.execute(CampaignRowRecord.__table__.insert().values(**repeat.model_dump()))  # type: ignore[attr-defined]
    empty_database.migrate()
    order, _ = stored(empty_database, call.id)
    assert (order.to_phone_number, order.call["to_phone_number"]) == ("+33612345678", "+33612345678")
    assert {"+33612345678", "+330612345678"} <= set(order.search_text.split("\n"))  # found by both
    with empty_database.session() as session:
        first = session.get(CampaignRowRecord, "r-old")  # the same number twice: it was called twice
        assert first is not None and first.phone_number == "+33612345670"
        assert (first.state, first.skip_reason, first.skip_message) == (
            "skipped",
            "duplicate_phone_number",
            "the same number as row 1",
        )
        assert session.get(CampaignRowRecord, "r-again").state == "launched"  # type: ignore[union-attr]


def test_caller_ids_stored_before_0008_are_rewritten_as_e164_for_the_filter(empty_database: Database) -> None:
    """0009 rewrote the orders' recipients' numbers, not their caller ids: an order placed from
    `+330159000001` kept it, and the `from_phone_numbers` filter found it under no form."""
    from alembic import command

    from api.schemas import CallFilters
    from api.store import search_calls
    from migrations import alembic_config

    call = snapshot("call-old-caller", "org-old", 1).model_copy(update={"from_phone_number": "+330159000001"})
    with empty_database.engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0010")
        connection.execute(CallOrderRecord.__table__.insert().values(id=call.id, **call_columns(call, 1)))  # type: ignore[attr-defined]
    empty_database.migrate()
    order, _ = stored(empty_database, call.id)
    assert (order.from_phone_number, order.call["from_phone_number"]) == ("+33159000001", "+33159000001")
    for written in ("+330159000001", "+33159000001", "+33 1 59 00 00 01", "01 59 00 00 01"):
        calls, _ = search_calls(empty_database, "org-old", CallFilters(from_phone_numbers=[written]))
        assert [c.id for c in calls] == [call.id], written
    # Its workflow, still running, holds the number as it was: its next write keeps the stored form.
    assert write_call(empty_database, call.model_copy(update={"status": "completed"}), 2)
    order, _ = stored(empty_database, call.id)
    assert (order.status, order.from_phone_number, order.call["from_phone_number"]) == (
        "completed",
        "+33159000001",
        "+33159000001",
    )


def test_processes_upgrading_one_sqlite_file_together_all_succeed(tmp_path: Path) -> None:
    """An API and a worker started together after an upgrade: on SQLite an ADD COLUMN took effect at
    once while its revision was written last (0005 fills every call's search text first), so a second
    process read the old revision, failed to add the column again, and gave up, reporting a schema
    race as the database unavailable. Processes now take turns."""
    import subprocess
    import sys

    from alembic import command
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine

    from migrations import alembic_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    with create_engine(url).begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0004")
        before = Table(
            "call_orders",
            MetaData(),
            *(c._copy() for c in CallOrderRecord.__table__.columns if c.name != "search_text"),  # type: ignore[attr-defined]
        )
        rows = []
        for i in range(3_000):  # for 0005 to fill: its revision is written well after its column
            call = snapshot(f"call-{i}", "org-old", 1)
            rows.append(
                {"id": call.id} | {k: v for k, v in call_columns(call, 1).items() if k != "search_text"}
            )
        connection.execute(before.insert(), rows)
    go = tmp_path / "go"
    script = (
        "import sys, time, pathlib\n"
        "from models.tables import Database\n"
        f"while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.01)\n"
        f"Database.for_url({url!r}).migrate()\n"
    )
    root = Path(__file__).resolve().parent.parent
    processes = [
        subprocess.Popen([sys.executable, "-c", script], cwd=root, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    go.touch()
    failures = [p.communicate(timeout=120)[1] for p in processes if p.wait(timeout=120) != 0]
    assert failures == []
    database = Database.for_url(url)
    with database.engine.connect() as connection:
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
        assert (
            connection.execute(text("SELECT count(*) FROM call_orders WHERE search_text != ''")).scalar()
            == 3_000
        )


def test_numbers_stored_before_they_were_canonical_are_rewritten(empty_database: Database) -> None:
    """A do-not-contact entry stored as `+330698765400` (the trunk's 0 kept) no longer matched once
    numbers are compared as E.164 writes them: the callee would have been called (the third review)."""
    from alembic import command

    from migrations import alembic_config

    listing = "INSERT INTO do_not_contact (organization_id, phone_number, call_id, recorded_at) "
    with empty_database.engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0007")
        organization = "INSERT INTO organizations (id, name, created_at) VALUES ('o', 'o', '2026-01-01')"
        connection.execute(text(organization))
        for number in ("+330698765400", "+330611111111", "+33611111111"):  # the last two: one number twice
            connection.execute(text(listing + "VALUES ('o', :n, 'c', '2026-01-01')"), {"n": number})
        owned = PhoneNumberRecord(id="p", organization_id="o", phone_number="+330159000001")  # all columns
        connection.execute(PhoneNumberRecord.__table__.insert().values(owned.model_dump()))  # type: ignore[attr-defined]
    empty_database.migrate()
    with empty_database.engine.connect() as connection:
        listed = {n for (n,) in connection.execute(text("SELECT phone_number FROM do_not_contact"))}
        owned = {n for (n,) in connection.execute(text("SELECT phone_number FROM phone_numbers"))}
    assert listed == {"+33698765400", "+33611111111"} and owned == {"+33159000001"}


async def test_a_call_the_database_cannot_hold_fails_its_write_at_once(database: Database) -> None:
    """A call id past the column's 64 characters (an order started outside the API): PostgreSQL refuses
    it, and retrying could not change that, so the write is not retried for an hour."""
    call = snapshot("c" * 70, "org-long", 1)
    activities = PersistenceActivities(settings_for_tests(database_url=database.url))
    write = ActivityEnvironment().run(activities.persist_call, CallSnapshot(call=call, seq=1))
    if database.dialect == "sqlite":  # SQLite does not enforce a VARCHAR's length
        assert await write
        return
    with pytest.raises(ApplicationError) as refused:
        await write
    assert (refused.value.type, refused.value.non_retryable) == (NOT_STORABLE, True)
    assert "too long" in refused.value.message


def snapshot(call_id: str, organization_id: str, step: int) -> Call:
    """The order after `step` changes: one more attempt every 2 steps, updated a minute later each time."""
    attempts = [
        CallAttempt(
            id=f"{call_id}-a{n}",
            phone_number="+33612345678",
            status="completed" if n < step // 2 else "ringing",
            result="voicemail" if n < step // 2 else None,
            started_at=T0 + timedelta(minutes=n),
        )
        for n in range(step // 2 + 1)
    ]
    return Call(
        id=call_id,
        call_attempts=list(reversed(attempts)),
        created_at=T0,
        from_phone_number="+33159000000",
        organization_id=organization_id,
        status="calling" if step % 2 else "scheduled",
        to_phone_number="+33612345678",
        updated_at=T0 + timedelta(minutes=step),
    ).with_derived_fields()


def stored(database: Database, call_id: str) -> tuple[CallOrderRecord, list[CallAttemptRecord]]:
    with database.session() as session:
        order = session.get(CallOrderRecord, call_id)
        assert order is not None
        attempts = session.scalars(
            select(CallAttemptRecord)
            .where(CallAttemptRecord.call_id == call_id)
            .order_by(CallAttemptRecord.number)
        )
        return order, list(attempts)


def test_a_failed_statement_never_shows_its_values(database: Database) -> None:
    """Database errors reach logs (the API's catch-all logs them): the values bound, such as an
    assistant's tool headers or a webhook secret, must not be in them."""
    with pytest.raises(DBAPIError) as failure, database.session() as session:
        session.connection().execute(text("INSERT INTO no_such_table VALUES (:v)"), {"v": "sk-live-123"})
    assert "no_such_table" in str(failure.value) and "sk-live-123" not in str(failure.value)


def test_racing_and_retried_writes_never_move_a_call_backwards(database: Database) -> None:
    call_id = str(uuid.uuid4())
    writes = [(step, snapshot(call_id, "org_race", step)) for step in range(1, 31)]
    writes += random.Random(7).sample(writes, 10)  # retries of some writes, late
    random.Random(11).shuffle(writes)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda w: write_call(database, w[1], w[0]), writes))
    assert any(results) and not all(results)  # some writes were stale and skipped

    order, attempts = stored(database, call_id)
    newest = snapshot(call_id, "org_race", 30)
    assert (order.seq, order.updated_at, order.status) == (30, newest.updated_at, "scheduled")
    assert order.call == newest.model_dump(mode="json")
    assert [a.number for a in attempts] == list(range(1, 17))
    assert [a.status for a in attempts] == ["completed"] * 15 + ["ringing"]

    assert write_call(database, newest, 30)  # the same write again: idempotent
    assert stored(database, call_id)[0].call == newest.model_dump(mode="json")
    assert not write_call(database, snapshot(call_id, "org_race", 29), 29)


def test_an_attempt_the_order_dropped_goes_from_the_stored_rows(database: Database) -> None:
    """A dial that started after its window closed rang nobody: the order drops that attempt, and its
    row (written while it was `calling`) goes too; else the export, the phone history and the campaign
    statistics counted a ring that never was."""
    call_id = str(uuid.uuid4())
    issue_api_key(database, "org_dropped")
    calling = snapshot(call_id, "org_dropped", 3)  # a voicemail, then attempt 2 ringing
    assert write_call(database, calling, 3)
    waiting = snapshot(call_id, "org_dropped", 4)
    waiting.call_attempts = calling.call_attempts[1:]  # attempt 2 dropped: waiting for the next window
    assert write_call(database, waiting.with_derived_fields(), 4)
    assert [(a.number, a.status) for a in stored(database, call_id)[1]] == [(1, "completed")]
    none_left = snapshot(call_id, "org_dropped", 5).model_copy(update={"call_attempts": []})
    assert write_call(database, none_left.with_derived_fields(), 5)
    assert stored(database, call_id)[1] == []


def test_the_apis_placeholder_is_superseded_by_the_workflow_whatever_the_clocks(database: Database) -> None:
    call_id = str(uuid.uuid4())
    placeholder = snapshot(call_id, "org_clock", 0).model_copy(update={"updated_at": T0 + timedelta(hours=1)})
    assert write_call(database, placeholder, 0)
    assert write_call(database, snapshot(call_id, "org_clock", 1), 1)  # workflow time is earlier
    assert stored(database, call_id)[0].seq == 1


def test_a_placeholder_written_after_the_workflows_first_state_changes_nothing(database: Database) -> None:
    """The API writes its placeholder while the workflow starts: the workflow may store the order first."""
    call_id = str(uuid.uuid4())
    issue_api_key(database, "org_late")
    assert write_call(database, snapshot(call_id, "org_late", 1), 1)
    late = {"id": call_id, **call_columns(snapshot(call_id, "org_late", 0), 0)}
    late |= {"params": None, "idempotency_key": None, "request_hash": None}
    existing = insert_call(database, late)
    assert existing is not None and existing.seq == 1
    assert stored(database, call_id)[0].seq == 1
    fresh_id = str(uuid.uuid4())
    assert insert_call(database, late | {"id": fresh_id}) is None  # no row yet: inserted
    assert stored(database, fresh_id)[0].seq == 0


class RecordingTelephony:
    name = "recording"

    def __init__(self) -> None:
        self.dialled: list[DialRequest] = []

    async def dial(self, request: DialRequest) -> DialResult:
        self.dialled.append(request)
        return DialResult(answered=False, dial_error="no_answer")

    async def converse(self, request: Any) -> Any:
        raise NotImplementedError


async def test_prepare_order_resolves_from_the_organizations_records(database: Database) -> None:
    settings = settings_for_tests(database_url=database.url, default_from_phone_number="+33159000000")
    telephony = RecordingTelephony()
    activities = CallActivities(settings, telephony, SimulatedAnalyzer())  # type: ignore[arg-type]
    ours, theirs, bare = (f"org_{uuid.uuid4().hex[:8]}" for _ in range(3))
    for org in (ours, theirs, bare):
        issue_api_key(database, org)
    ensure_phone_number(database, ours, "+33159000010", "ST_ours")
    ensure_phone_number(database, ours, "+33159000011", None)
    assistant_id = str(uuid.uuid4())
    with database.session() as session:
        config = Assistant(prompt="Sell.", from_phone_number="+33159000011").model_dump(
            mode="json", exclude_none=True
        )
        session.add(AssistantRecord(id=assistant_id, organization_id=ours, name="Seller", config=config))
        session.commit()

    def prepare(org: str, **fields: Any) -> Any:
        return activities._prepare(
            PrepareRequest(
                call_id=str(uuid.uuid4()), organization_id=org, to_phone_number="+33612345678", **fields
            )
        )

    stored_one = prepare(ours, assistant_id=assistant_id)
    assert stored_one.assistant.id == assistant_id and stored_one.assistant.name == "Seller"
    assert stored_one.assistant.prompt == "Sell." and stored_one.from_phone_number == "+33159000011"
    default = prepare(ours)
    assert (default.from_phone_number, default.livekit_outbound_trunk_id) == ("+33159000010", "ST_ours")
    assert prepare(bare).from_phone_number == "+33159000000"  # no numbers: the default trunk's

    for org, fields, field in [
        (theirs, {"assistant_id": assistant_id}, "assistant_id"),  # another organization's assistant
        (ours, {"from_phone_number": "+33159000099"}, "from_phone_number"),
        (bare, {"from_phone_number": "+33159000010"}, "from_phone_number"),  # someone else's number
    ]:
        with pytest.raises(ApplicationError) as refused:
            prepare(org, **fields)
        assert refused.value.type == INVALID_ORDER and refused.value.non_retryable
        assert refused.value.message.startswith(field)

    request = DialRequest(
        call_id="c",
        attempt_id="a",
        attempt_number=1,
        to_phone_number="+33612345678",
        from_phone_number="+33159000010",
        organization_id=ours,
    )
    await activities.dial(request)
    await activities.dial(request.model_copy(update={"livekit_outbound_trunk_id": "ST_given"}))
    # Another organization registering our trunkless number with its trunk does not route our calls.
    ensure_phone_number(database, theirs, "+33159000011", "ST_theirs")
    await activities.dial(request.model_copy(update={"from_phone_number": "+33159000011"}))
    await activities.dial(request.model_copy(update={"organization_id": None}))  # scheduled by older code
    # The trunk the order was accepted with: kept once its number is deleted, not once it is changed.
    await activities.dial(
        request.model_copy(update={"from_phone_number": "+33159000077", "accepted_trunk_id": "ST_kept"})
    )
    await activities.dial(request.model_copy(update={"accepted_trunk_id": "ST_before"}))
    # Its trunk cleared since (PATCH null): none, as for a new order (it dialled the accepted one)
    await activities.dial(
        request.model_copy(update={"from_phone_number": "+33159000011", "accepted_trunk_id": "ST_cleared"})
    )
    dialled = [d.livekit_outbound_trunk_id for d in telephony.dialled]
    assert dialled == ["ST_ours", "ST_given", None, None, "ST_kept", "ST_ours", None]


async def test_a_number_deleted_before_its_orders_first_step_is_dialled_through_its_own_trunk(
    database: Database,
) -> None:
    """A campaign row (or an order) accepted with a number deleted before its first step keeps the number
    (README), and dialled it through the default trunk, which does not own it: the number's own trunk.
    An order accepted after the deletion (the default caller id, no number left) gets none."""
    from api.store import delete_phone_number

    settings = settings_for_tests(database_url=database.url)
    telephony = RecordingTelephony()
    activities = CallActivities(settings, telephony, SimulatedAnalyzer())  # type: ignore[arg-type]
    org = f"org_{uuid.uuid4().hex[:8]}"
    issue_api_key(database, org)
    ensure_phone_number(database, org, "+14155550120", "ST_campaign")
    ensure_phone_number(database, org, "+33159000020", None)  # what is left

    def accepted(created_at: datetime) -> str:
        call_id = str(uuid.uuid4())
        call = Call(
            id=call_id,
            organization_id=org,
            from_phone_number="+14155550120",
            to_phone_number="+33612345678",
            status="initializing",
            created_at=created_at,
            updated_at=created_at,
        )
        insert_call(
            database, {"id": call_id, **call_columns(call, 0), "params": None, "idempotency_key": None}
        )
        return call_id

    before = accepted(datetime.now(UTC) - timedelta(minutes=1))
    with database.session() as session:
        number = session.scalars(
            select(PhoneNumberRecord).where(
                PhoneNumberRecord.organization_id == org, PhoneNumberRecord.phone_number == "+14155550120"
            )
        ).one()
    assert delete_phone_number(database, org, number.id)
    assert not delete_phone_number(database, org, number.id)
    after = accepted(datetime.now(UTC) + timedelta(minutes=1))

    def prepared(call_id: str) -> Any:
        return activities._prepare(
            PrepareRequest(
                call_id=call_id, organization_id=org, to_phone_number="+33612345678", accepted=True
            )
        )

    assert (prepared(before).from_phone_number, prepared(before).livekit_outbound_trunk_id) == (
        "+14155550120",
        "ST_campaign",
    )
    assert prepared(after).livekit_outbound_trunk_id is None
    request = DialRequest(
        call_id=before,
        attempt_id="a",
        attempt_number=1,
        to_phone_number="+33612345678",
        from_phone_number="+14155550120",
        organization_id=org,
        accepted_trunk_id=prepared(before).livekit_outbound_trunk_id,
    )
    await activities.dial(request)
    ensure_phone_number(database, org, "+14155550120", "ST_again")  # added again: its trunk now
    await activities.dial(request)
    assert [d.livekit_outbound_trunk_id for d in telephony.dialled] == ["ST_campaign", "ST_again"]


async def test_a_dial_whose_trunk_the_database_cannot_say_goes_through_the_accepted_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database down or locked: the read failed the dial (three tries in seconds), and the attempt
    was lost without a ring; with one attempt the order ended so."""
    import threading

    import activities.calls

    telephony = RecordingTelephony()
    activities_ = CallActivities(settings_for_tests(), telephony, SimulatedAnalyzer())  # type: ignore[arg-type]
    request = DialRequest(
        call_id="c",
        attempt_id="a",
        attempt_number=1,
        to_phone_number="+33612345678",
        from_phone_number="+14155550120",
        organization_id="org",
        accepted_trunk_id="ST_accepted",
    )
    released = threading.Event()

    def down(*_: Any) -> str:
        raise OperationalError("SELECT", None, Exception("connection refused"))

    def locked(*_: Any) -> str:
        released.wait(10)
        return "ST_late"

    monkeypatch.setattr(activities.calls, "TRUNK_READ_SECONDS", 0.2)
    for failing in (down, locked):
        monkeypatch.setattr(activities.calls, "trunk_of", failing)
        await activities_.dial(request)
    released.set()
    assert [d.livekit_outbound_trunk_id for d in telephony.dialled] == ["ST_accepted", "ST_accepted"]


def test_an_accepted_order_keeps_the_caller_id_it_was_accepted_with_once_deleted(database: Database) -> None:
    """Accepted by the API (its memo says so) from a number deleted before it was prepared (its worker
    down, say): it calls from that number, asked for or the default then, even once its own first write
    (an inline assistant's order) replaced the API's row. An order started past the API gets no such
    credit: the number it asks for is checked."""
    settings = settings_for_tests(database_url=database.url, default_from_phone_number="+33159000000")
    activities = CallActivities(settings, RecordingTelephony(), SimulatedAnalyzer())  # type: ignore[arg-type]
    org = f"org_{uuid.uuid4().hex[:8]}"
    issue_api_key(database, org)
    ensure_phone_number(database, org, "+33159000020", None)  # what is left

    def accepted_then_written(from_number: str) -> str:
        """A row as the API wrote it, then the workflow's first write over it (seq 1, naming no number
        for an order that asked for none): keep_resolution keeps the API's."""
        call_id = str(uuid.uuid4())
        accepted = Call(
            id=call_id,
            organization_id=org,
            from_phone_number=from_number,
            to_phone_number="+33612345678",
            status="initializing",
            created_at=datetime(2026, 1, 5, 9, tzinfo=UTC),
            updated_at=datetime(2026, 1, 5, 9, tzinfo=UTC),
        )
        row = {"id": call_id, **call_columns(accepted, 0), "params": None, "idempotency_key": None}
        insert_call(database, row)
        later = datetime(2026, 1, 5, 9, 0, 1, tzinfo=UTC)
        first = accepted.model_copy(update={"from_phone_number": "", "updated_at": later})
        assert write_call(database, first, 1)
        return call_id

    def prepare(call_id: str, *, accepted: bool, **fields: Any) -> Any:
        request = PrepareRequest(
            call_id=call_id, organization_id=org, to_phone_number="+33612345678", accepted=accepted, **fields
        )
        return activities._prepare(request)

    asked = accepted_then_written("+33159000021")
    assert prepare(asked, accepted=True, from_phone_number="+33159000021").from_phone_number == "+33159000021"
    default = accepted_then_written("+33159000022")  # the default when accepted
    assert prepare(default, accepted=True).from_phone_number == "+33159000022"
    with pytest.raises(ApplicationError) as refused:  # started past the API: nobody checked it
        prepare(asked, accepted=False, from_phone_number="+33159000021")
    assert refused.value.type == INVALID_ORDER
    assert prepare(default, accepted=False).from_phone_number == "+33159000020"


async def test_the_do_not_contact_registry_is_shared_through_the_database(database: Database) -> None:
    settings = settings_for_tests(database_url=database.url)
    first, second = DatabaseDoNotContactRegistry(settings), DatabaseDoNotContactRegistry(settings)
    org = f"org_{uuid.uuid4().hex[:8]}"
    entry = DoNotContactEntry(organization_id=org, phone_number="+33612345678", call_id="c1", recorded_at=T0)
    later = entry.model_copy(update={"call_id": "c2", "recorded_at": T0 + timedelta(days=1)})
    await first.add(entry)
    await first.add(later)
    await first.add(entry)  # a retry of the first request, late
    # Another worker sees it; the latest request stands (an override is weighed against it).
    assert await second.get(org, "+33612345678") == later
    assert await second.get("org_other", "+33612345678") is None
    await second.remove(org, "+33612345678")
    assert await first.get(org, "+33612345678") is None


def test_fetch_reads_what_a_connection_reads(database: Database) -> None:
    """`Database.fetch` (the driver-level read of POST /call's checks) returns a Connection's rows: the
    same values in the same order, datetimes as aware UTC; a statement it cannot render is refused."""
    org = f"org_{uuid.uuid4().hex[:8]}"
    with database.session() as session:
        ensure_organization(session, org)
        for i, number in enumerate(["+33612345679", "+33612345678", "+33612345677"]):
            session.add(
                PhoneNumberRecord(
                    id=f"pn_{org}_{i}",
                    organization_id=org,
                    phone_number=number,
                    created_at=T0 + timedelta(minutes=i % 2),
                )
            )
        session.commit()
    statement = (
        select(PhoneNumberRecord.phone_number, PhoneNumberRecord.label, PhoneNumberRecord.created_at)
        .where(PhoneNumberRecord.organization_id == bindparam("organization_id"))
        .order_by(PhoneNumberRecord.created_at, PhoneNumberRecord.id)
    )
    with database.engine.connect() as connection:
        expected = [tuple(row) for row in connection.execute(statement, {"organization_id": org})]
    assert database.fetch(statement, organization_id=org) == expected
    assert [row[2] for row in expected] == [T0, T0, T0 + timedelta(minutes=1)]
    assert database.fetch(statement, organization_id="org_other") == []
    at = statement.where(PhoneNumberRecord.created_at == bindparam("at"))  # converted by the column's type
    assert database.fetch(at, organization_id=org, at=T0 + timedelta(minutes=1)) == expected[2:]
    expanding = select(PhoneNumberRecord.id).where(PhoneNumberRecord.id.in_(bindparam("ids", expanding=True)))
    with pytest.raises(ValueError, match="expanding"):
        database.fetch(expanding, ids=["pn_1"])


def test_an_unprepared_state_keeps_what_the_placeholder_resolved(database: Database) -> None:
    """An assistant_id order knows its assistant only once prepared: its first states (and a failure
    while initializing) must not blank the assistant and caller id POST /call answered with."""
    call_id = str(uuid.uuid4())
    resolved = snapshot(call_id, "org_resolved", 0).model_copy(
        update={
            "assistant": call_assistant_from(
                Assistant(prompt="Hi"), id="asst-1", organization_id="org_resolved", now=T0
            ),
            "from_phone_number": "+33159000001",
        }
    )
    assert write_call(database, resolved, 0)
    unprepared = snapshot(call_id, "org_resolved", 1).model_copy(
        update={"status": "errored", "from_phone_number": ""}
    )
    assert write_call(database, unprepared, 1)
    order, _ = stored(database, call_id)
    kept = Call.model_validate(order.call)
    assert (order.seq, kept.status, kept.from_phone_number) == (1, "errored", "+33159000001")
    assert kept.assistant is not None and kept.assistant.id == "asst-1"


def test_concurrent_partial_updates_keep_each_others_changes(database: Database) -> None:
    """Two PATCHes of different fields, at once, twenty times over: both changes are kept every time,
    for an assistant and for a campaign (each merged its change into its own read and wrote every field
    back, so one undid the other)."""
    from api.assistants import _create, _update
    from api.campaign_store import get_campaign, update_campaign
    from api.schemas import AssistantCreateParams

    settings = settings_for_tests(database_url=database.url)
    org = f"org-{uuid.uuid4()}"
    assistant = _create(database, settings, org, AssistantCreateParams(name="a", prompt="p"))
    params = CampaignCreateParams(
        name="c", assistant_id=assistant.id, contacts=[CampaignContact(to_phone_number="+33612345678")]
    )
    campaign, _ = campaign_store.create_campaign(database, settings, org, params)
    with ThreadPoolExecutor(4) as pool:
        for n in range(20):
            changes = [
                pool.submit(_update, database, settings, org, assistant.id, {"name": f"name {n}"}),
                pool.submit(_update, database, settings, org, assistant.id, {"prompt": f"prompt {n}"}),
                pool.submit(update_campaign, database, settings, org, campaign.id, {"name": f"name {n}"}),
                pool.submit(
                    update_campaign, database, settings, org, campaign.id, {"max_concurrent_calls": n + 1}
                ),
            ]
            for change in changes:
                change.result()
            stored = store_of_assistant(database, org, assistant.id)
            assert (stored.name, stored.config["prompt"]) == (f"name {n}", f"prompt {n}")
            kept = get_campaign(database, org, campaign.id)
            assert (kept.name, kept.max_concurrent_calls) == (f"name {n}", n + 1)


def test_an_update_read_before_a_delete_does_not_bring_the_row_back(database: Database) -> None:
    from api import store
    from api.assistants import _create, _update
    from api.errors import ApiError
    from api.schemas import AssistantCreateParams

    settings = settings_for_tests(database_url=database.url)
    org = f"org-{uuid.uuid4()}"
    assistant = _create(database, settings, org, AssistantCreateParams(name="a", prompt="p"))
    read = store_of_assistant(database, org, assistant.id)
    assert store.delete_assistant(database, org, assistant.id)
    assert store.update_if_unchanged(database, read, {"name": "back"}) is None
    assert store.get_assistant(database, org, assistant.id) is None
    with pytest.raises(ApiError) as refused:
        _update(database, settings, org, assistant.id, {"name": "back"})
    assert refused.value.status == 404


def store_of_assistant(database: Database, org: str, assistant_id: str) -> AssistantRecord:
    from api import store

    record = store.get_assistant(database, org, assistant_id)
    assert record is not None
    return record


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_calls_without_the_sorted_value_come_last_on_every_database(
    database: Database, direction: str
) -> None:
    """Sorted by outcome, calls with none are last both ways, on SQLite as on PostgreSQL (whose defaults
    put NULL at opposite ends: the same search paged differently on each)."""
    from api.schemas import CallFilters
    from api.store import search_calls

    org = f"org-{uuid.uuid4()}"
    outcomes = [None, "interested", None, "not_interested"]
    for outcome in outcomes:
        call = snapshot(f"call-{uuid.uuid4()}", org, 1).model_copy(update={"outcome": outcome})
        write_call(database, call, 1)
    filters = CallFilters(sort_by="outcome", sort_direction=direction)  # type: ignore[arg-type]
    found, total = search_calls(database, org, filters)
    expected = ["interested", "not_interested"] if direction == "asc" else ["not_interested", "interested"]
    assert (total, [c.outcome for c in found]) == (4, [*expected, None, None])


def test_rows_a_concurrent_launch_took_are_counted_active(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two launches at once: each row is launched once, and the launch that lost a row to the other
    counts it `active`, as a later launch would (it answered launched 0 and skipped nothing at all)."""
    from api.assistants import _create
    from api.schemas import AssistantCreateParams
    from models.campaign import CampaignLaunchParams

    settings = settings_for_tests(database_url=database.url)
    org = f"org-{uuid.uuid4()}"
    assistant = _create(database, settings, org, AssistantCreateParams(name="a", prompt="p"))
    contacts = [CampaignContact(to_phone_number=f"+3361234560{n}") for n in range(3)]
    params = CampaignCreateParams(name="c", assistant_id=assistant.id, contacts=contacts)
    campaign, _ = campaign_store.create_campaign(database, settings, org, params)
    launch = CampaignLaunchParams(mode="ai_first")
    read_rows = campaign_store.rows_with_calls
    other: list[Any] = []

    def read_then_the_other_launch_runs(*args: Any, **kwargs: Any) -> Any:
        rows = read_rows(*args, **kwargs)
        if not other:  # the other launch marks every row between this one's read and its marking
            other.append(None)  # (the other launch reads the rows too: it must not start a third)
            other[0] = campaign_store.select_for_launch(database, org, campaign.id, launch)
        return rows

    monkeypatch.setattr(campaign_store, "rows_with_calls", read_then_the_other_launch_runs)
    this = campaign_store.select_for_launch(database, org, campaign.id, launch)
    assert (other[0].launched, other[0].skipped.active) == (3, 0)
    assert (this.launched, this.skipped.active) == (0, 3)


async def test_rows_of_orders_a_killed_api_never_started_are_forgotten(
    database: Database, time_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`POST /call` writes its row while the workflow starts: killed in between, it leaves a row that
    said `initializing` for ever and that no signal could reach. Such a row, old enough that no start
    can still be on its way and with no workflow in Temporal, is deleted; every other row is kept."""
    from api import orphans
    from api.context import ApiContext

    settings = settings_for_tests(database_url=database.url)
    org = f"org-{uuid.uuid4()}"
    old = utcnow() - orphans.ORPHANED_AFTER - timedelta(seconds=1)

    def placeholder(written: datetime, **columns: Any) -> str:
        call_id = str(uuid.uuid4())
        call = Call(
            id=call_id,
            created_at=written,
            updated_at=written,
            organization_id=org,
            status="initializing",
            to_phone_number="+33612345678",
            from_phone_number="+33159000000",
        ).with_derived_fields()
        row = {
            "id": call_id,
            **call_columns(call, 0),
            "params": None,
            "idempotency_key": None,
            "request_hash": None,
        }
        assert insert_call(database, row | columns) is None
        return call_id

    orphan = placeholder(old)  # its time shared by the rows that stay: the pages' cursor breaks ties by id
    young = placeholder(utcnow())
    keyed = placeholder(
        old, idempotency_key="retry-me", request_hash="h", params={"phone_number": "+33612345678"}
    )
    kept = placeholder(old, params={"phone_number": "+33612345678"})  # a start Temporal could not account for
    started = [placeholder(old) for _ in range(5)]  # no worker has written them yet: they stay
    for call_id in started:
        await time_env.client.start_workflow(
            "CallOrderWorkflow",
            {"phone_number": "+33612345678"},
            id=f"call-{call_id}",
            task_queue=f"idle-{org}",
        )
    monkeypatch.setattr(orphans, "PAGE", 2)  # rows that stay fill pages: the orphan is found past them
    context = ApiContext(settings, database, time_env.client)
    forgotten = await orphans.forget_orphans(context)  # (the database's other tests' rows are theirs)
    assert orphan in forgotten
    with database.session() as session:
        left = set(session.scalars(select(CallOrderRecord.id).where(CallOrderRecord.organization_id == org)))
    assert left == {young, keyed, kept, *started}
    for call_id in started:
        await time_env.client.get_workflow_handle(f"call-{call_id}").terminate("test over")


def test_a_phone_number_deleted_while_it_is_updated_is_a_404(database: Database) -> None:
    """The update read the number, then a DELETE went first: a 404, not a 500 (an update that found no
    row failed an assertion), and the number stays gone."""
    from api import store
    from api.errors import ApiError
    from api.phone_numbers import _update
    from api.schemas import PhoneNumberUpdateParams

    org = f"org-{uuid.uuid4()}"
    ensure_phone_number(database, org, "+33159000001", "ST_trunk", label="main")
    [number] = phone_numbers_of(database, org)
    read = store.get_phone_number(database, org, number.id)
    assert read is not None
    assert store.delete_phone_number(database, org, number.id)
    assert store.update_phone_number(database, read, {"label": "back"}) is None
    with pytest.raises(ApiError) as gone:
        _update(database, settings_for_tests(), org, number.id, PhoneNumberUpdateParams(label="back"))
    assert gone.value.status == 404 and store.get_phone_number(database, org, number.id) is None


def test_deleting_a_campaign_removes_the_calls_it_never_started(database: Database) -> None:
    """Rows launched but not started yet (or cancelled before they were) had their placeholder calls
    left in the call history; only rows never launched lost theirs."""
    from api.assistants import _create
    from api.schemas import AssistantCreateParams
    from models.campaign import CampaignLaunchParams, Selection, SelectionRows

    settings = settings_for_tests(database_url=database.url)
    org = f"org-{uuid.uuid4()}"
    assistant = _create(database, settings, org, AssistantCreateParams(name="a", prompt="p"))
    contacts = [CampaignContact(to_phone_number=f"+3361234561{n}") for n in range(3)]
    campaign, _ = campaign_store.create_campaign(
        database, settings, org, CampaignCreateParams(name="c", assistant_id=assistant.id, contacts=contacts)
    )
    calls = [call.id for _, call in campaign_store.rows_with_calls(database, campaign.id) if call]
    only_first = Selection(rows=SelectionRows(mode="only", call_ids=calls[:1]))
    campaign_store.select_for_launch(
        database, org, campaign.id, CampaignLaunchParams(mode="ai_first", selection=only_first)
    )
    campaign_store.delete_campaign(database, campaign_store.get_campaign(database, org, campaign.id))
    with database.session() as session:
        left = session.scalars(select(CallOrderRecord.id).where(CallOrderRecord.id.in_(calls)))  # type: ignore[attr-defined]
        assert list(left) == []


def test_a_campaigns_pauses_and_resumes_are_numbered_as_they_are_stored(database: Database) -> None:
    """A pause and a resume sent together could be stored in one order and signalled in the other:
    the campaign said paused while its orders called. Each is numbered by its write, and its signal
    carries the number (the workflow applies the latest: `tests/test_campaign.py`)."""
    from api.assistants import _create
    from api.schemas import AssistantCreateParams

    settings = settings_for_tests(database_url=database.url)
    org = f"org-{uuid.uuid4()}"
    assistant = _create(database, settings, org, AssistantCreateParams(name="a", prompt="p"))
    contacts = [CampaignContact(to_phone_number="+33612345610")]
    campaign, _ = campaign_store.create_campaign(
        database, settings, org, CampaignCreateParams(name="c", assistant_id=assistant.id, contacts=contacts)
    )
    with ThreadPoolExecutor(8) as pool:  # concurrent writes each get their own number
        steerings = list(
            pool.map(lambda n: campaign_store.set_flags(database, campaign, paused=n % 2 == 0), range(40))
        )
    assert sorted(s.steered for s in steerings) == list(range(1, 41))
    latest = max(steerings, key=lambda s: s.steered)
    stored = campaign_store.get_campaign(database, org, campaign.id)
    assert (stored.steered, stored.paused) == (40, latest.paused)
    cancelled = campaign_store.set_flags(database, stored, cancelled=True)
    assert cancelled.is_cancelled and cancelled.steered == 40  # a cancel needs no number: it is final


def test_an_export_reads_a_call_holding_a_nul_as_any_other(database: Database) -> None:
    """PostgreSQL's json operators refuse a document holding `\\u0000`, which a Call keeps as sent: one
    such call made every export it matched a 422, for the whole organization."""
    from api.schemas import CallFilters
    from api.store import export_calls

    org = f"org-nul-{uuid.uuid4().hex[:8]}"
    plain, held = snapshot(str(uuid.uuid4()), org, 1), snapshot(str(uuid.uuid4()), org, 1)
    held = held.model_copy(update={"metadata": {"note": "a\x00b"}, "outcome_summary": "Said \x00 yes"})
    plain = plain.model_copy(update={"metadata": {"note": "plain"}, "outcome_summary": "Said yes"})
    for call in (plain, held):
        assert write_call(database, call, 1)
    exported = {row.id: row for row, _ in export_calls(database, org, CallFilters())}
    assert (exported[held.id].metadata, exported[held.id].outcome_summary) == (
        {"note": "a\x00b"},
        "Said \x00 yes",
    )
    assert (exported[plain.id].metadata, exported[plain.id].outcome_summary) == (
        {"note": "plain"},
        "Said yes",
    )


def test_a_write_waits_for_a_locked_table_only_so_long(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call_orders table locked for minutes (a newer version's migration) held `POST /call`'s write
    past the client's timeout, and its retries placed the order again: the write gives up instead, as
    SQLite's busy timeout makes it."""
    if database.dialect != "postgresql":
        pytest.skip("SQLite's busy timeout (30 s) is its own")
    from models import tables

    monkeypatch.setattr(tables, "LOCK_TIMEOUT", "200ms")
    impatient = Database(f"{POSTGRES_URL}?application_name=impatient")
    impatient.migrate()
    call = snapshot(str(uuid.uuid4()), "org-locked", 1)
    with database.engine.connect() as holder, holder.begin():
        holder.execute(text("LOCK TABLE call_orders IN SHARE MODE"))
        with pytest.raises(OperationalError, match="lock timeout"):
            write_call(impatient, call, 1)
    assert write_call(impatient, call, 1)  # once the lock is gone


def test_a_read_on_the_driver_fails_as_sqlalchemys_does_when_the_database_is_gone() -> None:
    """`POST /call`'s checks read on the driver: its own error was no OperationalError the API answers
    503 for, but a 500 with a traceback."""
    gone = Database("postgresql://outdial:outdial@127.0.0.1:9/outdial")  # nothing listens on port 9
    gone._migrated = True  # as in an API that migrated before the database went away
    with pytest.raises(OperationalError):
        gone.fetch(select(CallOrderRecord.id).where(CallOrderRecord.id == bindparam("id")), id="x")
