"""CallOrderWorkflow in time-skipping mode: windows, retries, signals and queries over days, in seconds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from importlib.machinery import SourceFileLoader
from typing import Any

import pytest
import pytz
from sqlmodel import select
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.persistence import PERSIST_ACTIVITY, CallSnapshot
from activities.simulated import simulation_token
from api import store
from models import Call, CallAttempt, CallCreateParams
from models.retry import MOST_ATTEMPTS
from models.tables import CallAttemptRecord, Database
from tests.helpers import current_details, eventually, settings_for_tests
from workers import create_worker
from workflows.call_order import DEFAULT_ORGANIZATION, CallOrderWorkflow
from workflows.sandbox import compiled_snippet
from workflows.schedule import describe_instant

PARIS = pytz.timezone("Europe/Paris")
ALWAYS_OPEN = {
    "timezone": "UTC",
    "allowed_days": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"],
    "calling_windows": [
        {"calling_window_start_time": "00:00", "calling_window_end_time": "23:59", "retry_delay_seconds": 600}
    ],
}


def order(simulation: str, *, retry: dict[str, Any] | None = None, **fields: Any) -> CallCreateParams:
    return CallCreateParams.model_validate(
        {
            "phone_number": fields.pop("phone_number", "+33612345678"),
            "assistant": {"prompt": "Offer {{name}} a demo.", "call_retry_config": retry or ALWAYS_OPEN},
            "prompt_variables": {"name": "Claire"},
            "metadata": {"simulation": simulation, **fields.pop("metadata", {})},
            **fields,
        }
    )


async def start(
    env: WorkflowEnvironment, task_queue: str, params: CallCreateParams
) -> WorkflowHandle[Any, Call]:
    return await env.client.start_workflow(
        CallOrderWorkflow.run, params, id=f"call-{uuid.uuid4()}", task_queue=task_queue
    )


async def status_of(handle: WorkflowHandle[Any, Call]) -> str:
    return await handle.query(CallOrderWorkflow.status)


async def signal_until(handle: WorkflowHandle[Any, Call], signal: Any, status: str) -> None:
    """Send a signal and wait until the order shows the status it leads to."""
    await handle.signal(signal)
    await eventually(lambda: status_of(handle), lambda s: s == status)


def started(attempt: CallAttempt) -> datetime:
    assert isinstance(attempt.started_at, datetime)
    return attempt.started_at


def ended(attempt: CallAttempt) -> datetime:
    assert isinstance(attempt.ended_at, datetime)
    return attempt.ended_at


async def test_saturday_order_calls_monday_10_paris_then_retries_after_window_delay(time_env, task_queue):
    """The acceptance scenario: voicemail, voicemail, human; windows 10:00-18:00 Europe/Paris."""
    now = await time_env.get_current_time()
    saturday = PARIS.normalize(
        now.astimezone(PARIS) + timedelta(days=(5 - now.astimezone(PARIS).weekday()) % 7 or 7)
    )
    saturday = PARIS.localize(datetime(saturday.year, saturday.month, saturday.day, 15, 0))
    await time_env.sleep(saturday - now)
    retry = {
        "timezone": "Europe/Paris",
        "calling_windows": [
            {
                "calling_window_start_time": "10:00",
                "calling_window_end_time": "18:00",
                "retry_delay_seconds": 5400,
            }
        ],
    }
    params = order(
        "voicemail,voicemail,human:interested", retry=retry, metadata={"simulation.call_seconds": "45"}
    )
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await start(time_env, task_queue, params)
        call = await handle.result()

    assert call.status == "completed" and call.calls_count == 3
    attempts = list(reversed(call.call_attempts))  # the Call lists them most recent first
    assert [a.result for a in attempts] == ["voicemail", "voicemail", "human"]
    first = started(attempts[0]).astimezone(PARIS)
    assert (first.strftime("%A %H:%M"), (first.date() - saturday.date()).days) == ("Monday 10:00", 2)
    for previous, following in zip(attempts, attempts[1:], strict=False):
        assert timedelta(seconds=45) <= ended(previous) - started(previous) < timedelta(seconds=46)
        gap = started(following) - ended(previous)
        assert timedelta(seconds=5400) <= gap < timedelta(seconds=5401)
    assert call.outcome == "interested" and "simulated" in (call.outcome_summary or "")
    assert call.last_call_attempt == call.call_attempts[0]
    assert call.last_call_attempt.transcript and call.last_call_attempt.transcript[0].content


async def test_an_order_started_with_a_body_the_api_refuses_fails_at_once_naming_the_fields(
    time_env, task_queue
):
    """Started past the API (the Temporal CLI or Web UI, a client of its own), an invalid order is a
    typed, non-retryable workflow failure naming its fields, not a workflow task failing forever; the
    failure repeats no value it was given (a tool's header is often a secret)."""
    tool = {
        "name": "crm",
        "url": "crm.example/?token=sk-live-in-url",
        "headers": [{"value": "sk-live-do-not-show"}],
    }
    body = {"phone_number": "0612345678", "assistant": {"prompt": "Hi", "custom_tools": [tool]}}
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await time_env.client.start_workflow(
            "CallOrderWorkflow",
            body,
            id=f"call-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), 30)  # a task failing forever would never end
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    assert (cause.type, cause.non_retryable) == ("InvalidCallOrder", True)
    assert "phone_number" in cause.message and "custom_tools.0.headers.0.key" in cause.message
    assert "custom_tools.0.url" in cause.message
    assert "sk-live" not in str(cause.details) + cause.message
    async for event in handle.fetch_history_events():
        assert event.event_type != EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED


async def test_force_now_calls_at_once_outside_windows(time_env, task_queue):
    closed = {"allowed_days": ["monday"], "timezone": "Pacific/Kiritimati"}
    now = await time_env.get_current_time()
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        call = await (
            await start(time_env, task_queue, order("human", retry=closed, skip_calling_window=True))
        ).result()
    assert call.calls_count == 1
    assert started(call.call_attempts[0]) - now < timedelta(minutes=1)


async def test_an_order_whose_transcript_would_pass_temporals_payload_limit_completes(time_env, task_queue):
    """A first sentence speaking a long prompt variable twenty times made a transcript of over 1 MB, carried
    twice by the order's next step: past Temporal's 2 MB, its workflow task failed for good and the order
    stayed `calling` (a cancel unheard). The transcript is cut to 256 KB, its start and end kept."""
    from models.call import TRANSCRIPT_MAX_BYTES

    blob = "Nous rappelons les conditions. " * 2000  # 62 KB: within what an order may carry
    params = order(
        "human:interested", prompt_variables={"name": "Claire", "blob": blob}, skip_calling_window=True
    )
    assert params.assistant is not None
    params.assistant.first_sentence = " ".join(["{{blob}}"] * 20)
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await start(time_env, task_queue, params)
        call = await asyncio.wait_for(handle.result(), 60)
    assert call.status == "completed" and call.outcome == "interested"
    transcript = call.call_attempts[0].transcript or []
    assert sum(len(e.model_dump_json().encode()) for e in transcript) <= TRANSCRIPT_MAX_BYTES
    assert transcript[0].content.startswith("Nous rappelons") and " […] " in transcript[0].content
    assert transcript[-1] == (call.last_call_attempt.transcript or [])[-1]  # the call's end, kept


async def test_no_answer_until_attempts_run_out(time_env, task_queue):
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        call = await (await start(time_env, task_queue, order("no_answer"))).result()
    assert call.status == "completed" and call.calls_count == 3 and call.outcome is None
    assert {(a.status, a.dial_error) for a in call.call_attempts} == {("error", "no_answer")}


async def test_attempts_beyond_the_most_an_order_makes_are_held_to_it(time_env, task_queue):
    """The seed allows max_retry_attempts up to 2**53; every attempt adds to every state the order
    writes, so some 250 would outgrow Temporal's history limit and end the order unfinished. It makes
    at most MOST_ATTEMPTS, as its Call's call_retry_config says, and its history stays small."""
    retry = {**ALWAYS_OPEN, "max_retry_attempts": 10_000}
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await start(time_env, task_queue, order("no_answer", retry=retry))
        call = await handle.result()
        history = await handle.fetch_history()
    assert call.status == "completed" and call.calls_count == MOST_ATTEMPTS == 50
    assert call.call_retry_config.max_retry_attempts == MOST_ATTEMPTS
    assert sum(event.ByteSize() for event in history.events) < 5_000_000  # of 50 MB


async def test_state_writes_leave_out_the_transcripts_the_row_holds_but_the_last(time_env, task_queue):
    """Every state write held every earlier attempt's transcript: 50 attempts of 10 KB (a voicemail
    message, an IVR menu) took the history past Temporal's 50 MB, and Temporal terminated the order at
    attempt 46. The writes leave out the transcripts the row holds already, but the last (complete,
    whatever version the worker storing it runs)."""
    message = "Hello {{name}}, this is Camille from outdial, about your demo. " * 64  # about 4 KB
    retry = {**ALWAYS_OPEN, "max_retry_attempts": 50}
    assistant = {"prompt": "Offer a demo.", "voicemail_message": message, "call_retry_config": retry}
    settings = settings_for_tests()
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings):
        handle = await start(time_env, task_queue, order("voicemail", assistant=assistant))
        call = await handle.result()
        history = await handle.fetch_history()
    assert call.status == "completed" and call.calls_count == 50
    assert sum(event.ByteSize() for event in history.events) < 6_000_000  # 24.7 MB before, of 50 MB
    database = Database.for_url(settings.database_url)
    stored = store.get_call(database, DEFAULT_ORGANIZATION, call.id)
    assert stored is not None and Call.model_validate(stored.call).model_dump() == call.model_dump()
    with database.session() as session:  # the export's rows too
        rows = session.scalars(select(CallAttemptRecord).where(CallAttemptRecord.call_id == call.id)).all()
    assert len(rows) == 50 and all("Camille from outdial" in json.dumps(row.transcript) for row in rows)


async def test_state_writes_leave_out_the_assistant_once_its_row_holds_it(time_env, task_queue):
    """Every state change writes the Call: once a write holding the prepared assistant has completed,
    the later ones leave it out (a long prompt is not repeated in history) and the row keeps it."""
    prompt = "Offer {{name}} a demo. " + "Answer every question precisely. " * 700  # about 23 KB
    settings = settings_for_tests()
    params = order(
        "voicemail,human:interested", assistant={"prompt": prompt, "call_retry_config": ALWAYS_OPEN}
    )
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings):
        handle = await start(time_env, task_queue, params)
        call = await handle.result()
        history = await handle.fetch_history()
    names: dict[int, str] = {}  # the activity scheduled, by event id
    writes: dict[int, CallSnapshot] = {}  # the persist inputs, by the event id of their scheduling
    prepared_at = stored_at = 0  # event ids: the assistant prepared, then first written
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled = event.activity_task_scheduled_event_attributes
            names[event.event_id] = scheduled.activity_type.name
            if scheduled.activity_type.name == PERSIST_ACTIVITY:
                inputs = await pydantic_data_converter.decode(scheduled.input.payloads, [CallSnapshot])
                writes[event.event_id] = inputs[0]
        elif event.HasField("activity_task_completed_event_attributes"):
            of = event.activity_task_completed_event_attributes.scheduled_event_id
            if names[of] == "prepare_order":
                prepared_at = event.event_id
            elif of in writes and of > prepared_at > 0 and not stored_at and writes[of].call.assistant:
                stored_at = event.event_id
    # Which writes are scheduled before that first one completes depends on timing; none after it.
    assert stored_at > prepared_at > 0
    later = [write for event_id, write in writes.items() if event_id > stored_at]
    assert len(later) >= 4 and all(write.call.assistant is None for write in later), later
    writes = list(writes.values())
    assert writes[-1].call.assistant is None and writes[-1].call.status == "completed"
    stored = store.get_call(Database.for_url(settings.database_url), DEFAULT_ORGANIZATION, call.id)
    assert stored is not None and stored.seq == writes[-1].seq
    assert Call.model_validate(stored.call).model_dump() == call.model_dump()  # the assistant included


async def test_a_worker_compiles_the_order_workflow_once_for_all_its_runs(time_env, task_queue, monkeypatch):
    """The sandbox imports call_order.py afresh for every run; with PYTHONDONTWRITEBYTECODE, a
    read-only install or a stale .pyc, Python would compile it every time (8-13 ms a run)."""
    loaded: list[str] = []
    get_code = SourceFileLoader.get_code

    def counted(loader: SourceFileLoader, fullname: str) -> Any:
        loaded.append(fullname)
        return get_code(loader, fullname)

    monkeypatch.setattr(SourceFileLoader, "get_code", counted)
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        loaded.clear()  # the worker has read it to make its build id
        calls = [await (await start(time_env, task_queue, order("human"))).result() for _ in range(3)]
    assert [call.status for call in calls] == ["completed"] * 3
    assert loaded.count("workflows.call_order") <= 1, loaded  # at the first run, if no earlier test's


async def test_a_run_imports_its_workflow_module_afresh_and_the_pure_logic_it_passes_through_never(
    time_env, task_queue, monkeypatch
):
    """call_order.py imports schedule.py (its calling-window maths, which loads every pytz zone at
    import) and search_attributes.py through `imports_passed_through`: the sandbox must take them from
    the worker, not import them again for each run. `from workflows import schedule` slipped past the
    passthrough (the submodule came in by the package's fromlist) and cost every run about 1.5 ms."""
    executed: list[str] = []
    exec_module = SourceFileLoader.exec_module

    def counted(loader: SourceFileLoader, module: Any) -> None:
        executed.append(module.__name__)
        exec_module(loader, module)

    monkeypatch.setattr(SourceFileLoader, "exec_module", counted)
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        executed.clear()  # the worker has checked its workflows in the sandbox
        calls = [await (await start(time_env, task_queue, order("human"))).result() for _ in range(3)]
    assert [call.status for call in calls] == ["completed"] * 3
    assert executed.count("workflows.call_order") == 3, executed  # the sandbox's isolation: each run its own
    assert not {"workflows.schedule", "workflows.search_attributes"} & set(executed), executed


async def test_a_worker_compiles_the_sandboxs_code_strings_once(time_env, task_queue):
    """The SDK's sandbox runs each activation and each payload's serialization context as `exec` of a
    code string: compiled every time, that was 14% of a worker's Python per order. If the SDK stops
    running them through its runner module's `exec`, this fails: the compile-once hook went inert."""
    compiled_snippet.cache_clear()
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        calls = [await (await start(time_env, task_queue, order("human"))).result() for _ in range(2)]
    assert [call.status for call in calls] == ["completed"] * 2
    compiled = compiled_snippet.cache_info()
    # 6 and 33; when each payload still asked the sandbox for its serialization context, 8 and 299
    assert compiled.misses <= 16 and compiled.hits >= 3 * compiled.misses, compiled


async def test_call_twice_in_a_row_skips_only_the_first_delay(time_env, task_queue):
    retry = {**ALWAYS_OPEN, "call_twice_in_a_row": True}
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        call = await (await start(time_env, task_queue, order("busy", retry=retry))).result()
    first, second, third = reversed(call.call_attempts)
    assert started(second) - ended(first) < timedelta(seconds=1)
    assert started(third) - ended(second) >= timedelta(seconds=600)


async def test_a_retry_delay_of_zero_retries_as_soon_as_the_window_allows(time_env, task_queue):
    """As the official client documents it (the seed's minimum excluded it: it was a 422)."""
    window = {**ALWAYS_OPEN["calling_windows"][0], "retry_delay_seconds": 0}  # type: ignore[index]
    retry = {**ALWAYS_OPEN, "calling_windows": [window]}
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        call = await (await start(time_env, task_queue, order("voicemail,human", retry=retry))).result()
    first, second = reversed(call.call_attempts)
    assert (first.result, second.result) == ("voicemail", "human")
    assert started(second) - ended(first) < timedelta(seconds=1)


async def test_a_number_listed_do_not_contact_while_its_order_waits_is_not_called_again(time_env, task_queue):
    """Another call to the same number ended `do_not_contact` while this order waited for its retry after
    a voicemail: the retry dialled the number all the same (the API refused a new order to it)."""
    from activities.compliance import DoNotContactEntry
    from activities.persistence import DatabaseDoNotContactRegistry

    settings = settings_for_tests()
    params = order("voicemail,human:interested", phone_number=f"+33612{uuid.uuid4().int % 10**6:06d}")
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings):
        handle = await start(time_env, task_queue, params)
        await eventually(lambda: handle.query(CallOrderWorkflow.status), lambda s: s == "scheduled")
        assert len((await handle.query(CallOrderWorkflow.call)).call_attempts) == 1  # the voicemail
        listed = DoNotContactEntry(
            organization_id=settings.organization_id,
            phone_number=params.phone_number,
            call_id=str(uuid.uuid4()),
            reason="do_not_contact",
            recorded_at=await time_env.get_current_time(),
        )
        await DatabaseDoNotContactRegistry(settings).add(listed)
        call = await handle.result()
    assert (call.status, call.calls_count) == ("errored", 1)
    await DatabaseDoNotContactRegistry(settings).remove(settings.organization_id, params.phone_number)


async def test_an_override_stands_for_a_consent_before_the_order_not_against_a_request_since(
    time_env, task_queue
):
    """Placed with the override (the callee consented again after an old request), the order waited for
    its retry while another call's callee asked again not to be called: the retry dialled all the same,
    and the list kept the old request alone."""
    from activities.compliance import DoNotContactEntry
    from activities.persistence import DatabaseDoNotContactRegistry

    settings = settings_for_tests()
    registry = DatabaseDoNotContactRegistry(settings)
    number = f"+33612{uuid.uuid4().int % 10**6:06d}"
    now = await time_env.get_current_time()

    def request(days_ago: int) -> DoNotContactEntry:
        return DoNotContactEntry(
            organization_id=settings.organization_id,
            phone_number=number,
            call_id=str(uuid.uuid4()),
            recorded_at=now - timedelta(days=days_ago),
        )

    await registry.add(request(90))  # long ago
    overridden = order(
        "voicemail,human:interested", phone_number=number, metadata={"do_not_contact_override": "true"}
    )
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings):
        handle = await start(time_env, task_queue, overridden)
        await eventually(lambda: handle.query(CallOrderWorkflow.status), lambda s: s == "scheduled")
        assert len((await handle.query(CallOrderWorkflow.call)).call_attempts) == 1  # the voicemail
        await registry.add(request(-1))  # asked again, after the order was placed
        call = await handle.result()
    assert (call.status, call.calls_count) == ("errored", 1)
    listed = await registry.get(settings.organization_id, number)
    assert listed is not None and listed.recorded_at > now  # the latest request stands
    await registry.remove(settings.organization_id, number)


async def test_a_number_listed_do_not_contact_while_its_order_waits_for_a_permit_is_not_called(
    time_env, task_queue
):
    """A campaign's row waits for its key's permit, maybe for hours: another call to the same number
    ended `do_not_contact` meanwhile, and the permit, once granted, dialled the number all the same."""
    from activities.compliance import DoNotContactEntry
    from activities.persistence import DatabaseDoNotContactRegistry
    from tests.test_call_order_concurrency import semaphore_ended

    settings = settings_for_tests()
    key = {"key": f"trunk-{uuid.uuid4().hex[:8]}", "max": 1}
    number = f"+33612{uuid.uuid4().int % 10**6:06d}"
    busy = order("human", concurrency=key, metadata={"simulation.call_seconds": "600"})
    waiting = order("human:interested", phone_number=number, concurrency=key)
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings):
        first = await start(time_env, task_queue, busy)
        await eventually(lambda: status_of(first), lambda s: s == "calling")
        handle = await start(time_env, task_queue, waiting)
        await eventually(lambda: status_of(handle), lambda s: s == "queued_for_calling")
        listed = DoNotContactEntry(
            organization_id=settings.organization_id,
            phone_number=number,
            call_id=str(uuid.uuid4()),
            reason="do_not_contact",
            recorded_at=await time_env.get_current_time(),
        )
        await DatabaseDoNotContactRegistry(settings).add(listed)
        call = await handle.result()
        assert (await first.result()).status == "completed"
        await semaphore_ended(time_env, key["key"])  # a timer left behind would hold the test server's clock
    assert (call.status, call.calls_count) == ("errored", 0)
    await DatabaseDoNotContactRegistry(settings).remove(settings.organization_id, number)


async def test_a_do_not_contact_request_outlasts_a_database_outage(time_env, task_queue, monkeypatch):
    """It was given up after 10 tries (some 4 minutes), logged, and lost: the Call said do_not_contact
    while the list did not have the number, so every later order called it."""
    from activities.persistence import DatabaseDoNotContactRegistry

    real_add, tries = DatabaseDoNotContactRegistry.add, []

    async def flaky_add(self, entry):  # type: ignore[no-untyped-def]
        tries.append(entry)
        if len(tries) <= 12:
            raise ConnectionError("database restarting")
        return await real_add(self, entry)

    monkeypatch.setattr(DatabaseDoNotContactRegistry, "add", flaky_add)
    settings = settings_for_tests()
    number = f"+33612{uuid.uuid4().int % 10**6:06d}"
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings):
        call = await (
            await start(time_env, task_queue, order("human:do_not_contact", phone_number=number))
        ).result()
    registry = DatabaseDoNotContactRegistry(settings)
    assert call.outcome == "do_not_contact" and len(tries) == 13
    assert await registry.get(settings.organization_id, number) is not None
    await registry.remove(settings.organization_id, number)


async def test_a_check_of_the_number_that_outlasts_the_window_waits_for_the_next(
    time_env, task_queue, monkeypatch
):
    """The check before an attempt that waited may take a while (the database restarting): its window
    may close meanwhile, and the order then waits for the next instead of dialling (the third review)."""
    from activities.persistence import DatabaseDoNotContactRegistry

    real_get, asked = DatabaseDoNotContactRegistry.get, []

    async def flaky_get(self, organization_id, phone_number):  # type: ignore[no-untyped-def]
        asked.append(phone_number)
        if 2 <= len(asked) <= 5:  # the check on waking: some 15 s of retries
            raise ConnectionError("database restarting")
        return await real_get(self, organization_id, phone_number)

    monkeypatch.setattr(DatabaseDoNotContactRegistry, "get", flaky_get)
    window = {
        **ALWAYS_OPEN,
        "calling_windows": [{"calling_window_start_time": "10:00", "calling_window_end_time": "12:00"}],
    }
    day = (await time_env.get_current_time() + timedelta(days=1)).date()
    at = datetime(day.year, day.month, day.day, 11, 59, 55, tzinfo=UTC)
    params = order("human:interested", retry=window, scheduled_at=at)
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        call = await (await start(time_env, task_queue, params)).result()
    [attempt] = call.call_attempts
    next_window = at + timedelta(hours=22, seconds=5)  # 10:00 the next day
    assert next_window <= started(attempt) < next_window + timedelta(seconds=1)
    assert call.status == "completed" and len(asked) == 7  # checked again on waking the next day


@pytest.mark.parametrize("signal", ["pause", "cancel"])
async def test_a_pause_or_cancel_sent_while_the_number_is_checked_is_obeyed(
    time_env, task_queue, monkeypatch, signal
):
    """Sent while the check before a retry runs (the order still reads `scheduled`): the pause was
    ignored and the order dialled; the cancel recorded an attempt that was never dialled."""
    from activities.persistence import DatabaseDoNotContactRegistry

    real_get, asked, checking, released = (
        DatabaseDoNotContactRegistry.get,
        [],
        asyncio.Event(),
        asyncio.Event(),
    )

    async def slow_get(self, organization_id, phone_number):  # type: ignore[no-untyped-def]
        asked.append(phone_number)
        if len(asked) == 2:  # the check before the retry
            checking.set()
            await released.wait()
        return await real_get(self, organization_id, phone_number)

    monkeypatch.setattr(DatabaseDoNotContactRegistry, "get", slow_get)
    params = order("voicemail,human:interested", phone_number=f"+33612{uuid.uuid4().int % 10**6:06d}")
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await start(time_env, task_queue, params)
        await eventually(lambda: handle.query(CallOrderWorkflow.status), lambda s: s == "scheduled")
        # Time moved by hand (awaiting the result would let the server skip past the check's own
        # timeout while it is held): to the retry, 600 s after the voicemail, then until it is checked.
        await time_env.sleep(timedelta(seconds=595))
        for _ in range(10):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(checking.wait(), 0.5)
            if checking.is_set():
                break
            await time_env.sleep(timedelta(seconds=5))
        assert checking.is_set()
        await handle.signal(signal)  # in the history before the check's answer
        released.set()
        if signal == "pause":
            await eventually(lambda: handle.query(CallOrderWorkflow.status), lambda s: s == "paused")
            await handle.signal("cancel")
        call = await handle.result()
    assert (call.status, call.calls_count) == ("cancelled", 1)


async def test_unreachable_number_is_not_retried_and_errors(time_env, task_queue):
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        call = await (await start(time_env, task_queue, order("number_non_attributed"))).result()
    assert call.status == "errored" and call.calls_count == 1
    assert call.call_attempts[0].dial_error == "number_non_attributed"


async def test_human_reached_ends_retries_with_analysis(time_env, task_queue):
    params = order("voicemail,human:do_not_contact")
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        call = await (await start(time_env, task_queue, params)).result()
    assert call.calls_count == 2 and call.outcome == "do_not_contact" and call.is_completed


async def test_a_callee_asking_for_a_person_is_transferred_only_where_there_is_a_number(time_env, task_queue):
    """The simulated agent transfers as the real one does (warm here): the attempt was handled by the
    AI and a human. With no transfer number, nobody is available and the AI alone handled it."""
    warm = order("human:transfer")
    assert warm.assistant is not None
    warm.assistant.transfer_phone_number = "+33612345679"
    warm.assistant.human_transfer_mode = "warm"
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        transferred = await (await start(time_env, task_queue, warm)).result()
        alone = await (await start(time_env, task_queue, order("human:transfer"))).result()
    first = transferred.call_attempts[0]
    assert (first.end_reason, first.handled_by_ai, first.handled_by_human) == ("transfer", True, True)
    assert transferred.calls_count == 1 and transferred.status == "completed"
    last = alone.call_attempts[0]
    assert (last.end_reason, last.handled_by_ai, last.handled_by_human) == ("tool_end_call", True, False)
    assert last.transcript and "nobody is available" in last.transcript[-2].content
    assert alone.contact.first_name is None  # prompt_variables has only {{name}}


async def test_bad_simulation_token_errors_the_order_without_retrying(time_env, task_queue):
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await start(time_env, task_queue, order("dragons"))
        call = await handle.result()
    assert call.status == "errored"  # and says why, where the API and the webhook show it
    assert call.outcome_summary and "unknown token 'dragons'" in call.outcome_summary
    history = await handle.fetch_history()
    failures = [e for e in history.events if e.HasField("activity_task_failed_event_attributes")]
    assert (
        len(failures) == 1 and "dragons" in failures[0].activity_task_failed_event_attributes.failure.message
    )


def test_simulation_tokens_are_read_whatever_their_case():
    metadata = {"simulation": "Voicemail, HUMAN:Not_Interested"}
    assert [simulation_token(metadata, n) for n in (1, 2, 3)] == ["voicemail", *["human:not_interested"] * 2]


async def test_values_the_seed_allows_past_the_calendar_end_the_order_never_stall_it(time_env, task_queue):
    """The seed bounds retry_delay_seconds by 2**53 and sets no maximum for scheduled_at or
    max_call_duration_secs: an order using them ends (errored when it cannot be carried out), instead
    of failing its workflow task forever."""
    slow = {
        **ALWAYS_OPEN,
        "calling_windows": [{**ALWAYS_OPEN["calling_windows"][0], "retry_delay_seconds": 10**12}],
    }
    orders = {
        "retry in 31,700 years": order("busy", retry=slow),
        "scheduled for 9999": order("human", scheduled_at="9999-12-30T10:00:00Z"),
        "endless call allowed": order(
            "human",
            assistant={"prompt": "Hi", "max_call_duration_secs": 1e15, "call_retry_config": ALWAYS_OPEN},
        ),
        "endless simulated call": order("human", metadata={"simulation.call_seconds": "inf"}),
    }
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handles = {name: await start(time_env, task_queue, params) for name, params in orders.items()}
        ends = {name: await handle.result() for name, handle in handles.items()}
    assert {name: (call.status, call.calls_count) for name, call in ends.items()} == {
        "retry in 31,700 years": ("errored", 1),
        "scheduled for 9999": ("errored", 0),
        "endless call allowed": ("completed", 1),
        "endless simulated call": ("errored", 1),
    }


async def test_unknown_assistant_id_errors_with_the_reason(time_env, task_queue):
    params = CallCreateParams(phone_number="+33612345678", assistant_id=str(uuid.uuid4()))
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await start(time_env, task_queue, params)
        call = await handle.result()
        details = await current_details(handle)
    assert call.status == "errored" and call.calls_count == 0
    history = await handle.fetch_history()
    failures = [e for e in history.events if e.HasField("activity_task_failed_event_attributes")]
    assert (
        len(failures) == 1
        and "assistant_id" in failures[0].activity_task_failed_event_attributes.failure.message
    )
    assert details.startswith("**errored**: ") and "assistant_id" in details


async def test_the_web_ui_current_details_tell_the_order_in_a_sentence(time_env, task_queue):
    """Queued and calling: `test_temporal_cancellation_while_queued_for_a_permit_ends_it_cancelled`."""
    tomorrow = (await time_env.get_current_time()) + timedelta(days=1)
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await start(time_env, task_queue, order("human", scheduled_at=tomorrow.isoformat()))
        await eventually(lambda: status_of(handle), lambda s: s == "scheduled")
        scheduled = await current_details(handle)
        await signal_until(handle, CallOrderWorkflow.pause, "paused")
        paused = await current_details(handle)
        await handle.signal(CallOrderWorkflow.force_now)
        await handle.signal(CallOrderWorkflow.resume)
        call = await handle.result()
        completed = await current_details(handle)  # a closed order answers from its replayed history
    assert scheduled == f"**scheduled**: attempt 1/3 at {describe_instant(tomorrow, 'UTC')}"
    assert paused == "**paused**: waiting for `resume` (or `cancel`)"
    assert call.status == "completed" and call.outcome
    assert completed == f"**completed** after 1 attempt: outcome `{call.outcome}`"


async def test_cancel_while_waiting_for_window_ends_at_once(time_env, task_queue):
    tomorrow = (await time_env.get_current_time()) + timedelta(days=1)
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await start(time_env, task_queue, order("human", scheduled_at=tomorrow.isoformat()))
        await eventually(lambda: status_of(handle), lambda s: s == "scheduled")
        await handle.signal(CallOrderWorkflow.cancel)
        call = await handle.result()
    assert call.status == "cancelled" and call.calls_count == 0 and call.is_cancelled


async def test_a_call_longer_than_max_call_duration_is_cut_by_the_system(time_env, task_queue):
    params = order("human", metadata={"simulation.call_seconds": "3600"})
    assert params.assistant is not None
    params.assistant = params.assistant.model_copy(
        update={"max_call_duration_secs": 60, "max_duration_end_message": "Out of time, {{name}}, goodbye."}
    )
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        call = await (await start(time_env, task_queue, params)).result()
    [attempt] = call.call_attempts
    assert isinstance(attempt.answered_at, datetime)
    assert ended(attempt) - attempt.answered_at <= timedelta(seconds=61)
    assert (attempt.ended_by, attempt.end_reason) == ("system", "max_duration")
    assert attempt.transcript and attempt.transcript[-1].content == "Out of time, Claire, goodbye."


async def conversation_returned(handle: WorkflowHandle[Any, Call]) -> bool:
    """The converse activity completed: a simulated call now holds the line on the workflow's clock."""
    names: dict[int, str] = {}
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            names[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
        elif event.HasField("activity_task_completed_event_attributes"):
            if names[event.activity_task_completed_event_attributes.scheduled_event_id] == "converse":
                return True
    return False


@pytest.mark.parametrize("cancel", ["signal", "temporal"])
async def test_cancel_during_a_call_records_the_attempt(time_env, task_queue, cancel: str):
    """By the cancel signal or Temporal's cancellation alike: the attempt, what was said included."""
    params = order("human", metadata={"simulation.call_seconds": "3600"})
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await start(time_env, task_queue, params)
        # Cancel once the conversation holds the line (its result known), not while the converse
        # activity completes: the test server fails a workflow task that cancels an activity it has
        # just completed (ACTIVITY_UNKNOWN), and the order then stalled in two CI runs. A real server
        # records such a cancel request and takes no action (its handleCommandRequestCancelActivity).
        await eventually(lambda: conversation_returned(handle), bool)
        attempts = await handle.query(CallOrderWorkflow.attempts)
        assert attempts[0].status == "ongoing" and attempts[0].answered_at is not None
        assert attempts[0].transcript is None  # shown when the call is over, as a real one's
        await (handle.signal(CallOrderWorkflow.cancel) if cancel == "signal" else handle.cancel())
        call = await handle.result()
    assert call.call_attempts[0].result == "human" and call.call_attempts[0].transcript
    attempt = call.call_attempts[0]
    assert call.status == "cancelled"
    assert (attempt.status, attempt.ended_by, attempt.end_reason) == (
        "completed",
        "system",
        "participant_removed",
    )
    assert ended(attempt) - started(attempt) < timedelta(minutes=5)


async def test_temporal_cancellation_means_the_same_as_the_cancel_signal(time_env, task_queue):
    tomorrow = (await time_env.get_current_time()) + timedelta(days=1)
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await start(time_env, task_queue, order("human", scheduled_at=tomorrow.isoformat()))
        await eventually(lambda: status_of(handle), lambda s: s == "scheduled")
        await handle.cancel()
        call = await handle.result()
    assert call.status == "cancelled"


async def test_pause_holds_the_order_and_resume_schedules_afresh(time_env, task_queue):
    soon = (await time_env.get_current_time()) + timedelta(hours=1)
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await start(time_env, task_queue, order("human", scheduled_at=soon.isoformat()))
        await eventually(lambda: status_of(handle), lambda s: s == "scheduled")
        await signal_until(handle, CallOrderWorkflow.pause, "paused")
        await time_env.sleep(timedelta(hours=3))
        assert await handle.query(CallOrderWorkflow.attempts) == []
        assert await status_of(handle) == "paused"
        resumed_at = await time_env.get_current_time()
        await handle.signal(CallOrderWorkflow.resume)
        call = await handle.result()
    assert call.status == "completed"
    assert started(call.call_attempts[0]) - resumed_at < timedelta(minutes=1)
    # its scheduled_at is when it went ahead, once resumed: not a time it was paused and did not call
    assert resumed_at <= call.scheduled_at <= started(call.call_attempts[0])


async def test_resume_before_scheduled_at_still_waits_for_it(time_env, task_queue):
    """Pausing and resuming an order that has not dialed yet never moves its call earlier."""
    tomorrow = (await time_env.get_current_time()) + timedelta(days=1)
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await start(time_env, task_queue, order("human", scheduled_at=tomorrow.isoformat()))
        await eventually(lambda: status_of(handle), lambda s: s == "scheduled")
        await signal_until(handle, CallOrderWorkflow.pause, "paused")
        await signal_until(handle, CallOrderWorkflow.resume, "scheduled")
        call = await handle.result()
    assert call.status == "completed"
    assert timedelta(0) <= started(call.call_attempts[0]) - tomorrow < timedelta(minutes=1)


async def test_force_now_signal_calls_a_waiting_order_now(time_env, task_queue):
    next_week = (await time_env.get_current_time()) + timedelta(days=7)
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await start(time_env, task_queue, order("human", scheduled_at=next_week.isoformat()))
        await eventually(lambda: status_of(handle), lambda s: s == "scheduled")
        signalled_at = await time_env.get_current_time()
        await handle.signal(CallOrderWorkflow.force_now)
        call = await handle.result()
    assert started(call.call_attempts[0]) - signalled_at < timedelta(minutes=1)


async def test_force_now_signal_during_a_call_does_not_skip_the_retry_delay_after_it(time_env, task_queue):
    """ "Call now" is spent by the attempt under way: the retry still waits retry_delay_seconds."""
    params = order("voicemail,human", metadata={"simulation.call_seconds": "60"})
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await start(time_env, task_queue, params)
        await eventually(lambda: status_of(handle), lambda s: s == "calling")
        await handle.signal(CallOrderWorkflow.force_now)  # while attempt 1 talks
        call = await handle.result()
    first, second = reversed(call.call_attempts)
    assert first.result == "voicemail" and started(second) - ended(first) >= timedelta(seconds=600)


async def test_call_query_has_the_seed_shape_while_waiting(time_env, task_queue):
    tomorrow = (await time_env.get_current_time()) + timedelta(days=1)
    params = order("human", scheduled_at=tomorrow.isoformat(), concurrency={"key": "team-a", "max": 2})
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await start(time_env, task_queue, params)
        await eventually(lambda: status_of(handle), lambda s: s == "scheduled")
        call = await handle.query(CallOrderWorkflow.call)
        described = await handle.describe()
        await handle.signal(CallOrderWorkflow.cancel)
        await handle.result()
    assert call.id == handle.id.removeprefix("call-")
    assert call.to_phone_number == "+33612345678" and call.status == "scheduled" and call.calls_count == 0
    assert call.assistant is not None and call.assistant.prompt == "Offer {{name}} a demo."
    assert call.scheduled_at == tomorrow.astimezone(UTC).replace(microsecond=call.scheduled_at.microsecond)
    attributes = {key.name: value for key, value in described.typed_search_attributes}
    assert attributes["CallStatus"] == "scheduled" and attributes["ConcurrencyKey"] == "team-a"
    assert attributes["ToPhoneNumber"] == "+33612345678" and attributes["AttemptCount"] == 0
    assert abs((attributes["NextAttemptAt"] - tomorrow).total_seconds()) < 1


async def test_a_phone_menu_is_navigated_to_a_person_only_when_the_assistant_may(time_env, task_queue):
    """`ivr_navigation_enabled`: the simulated agent presses the menu's key and talks to the person who
    answers (a human reached: no retry); without it, the attempt ends `ivr_no_navigate` and is retried."""

    async def run(navigate: bool) -> Call:
        params = order("ivr,human")
        assert params.assistant is not None
        params.assistant = params.assistant.model_copy(update={"ivr_navigation_enabled": navigate})
        return await (await start(time_env, task_queue, params)).result()

    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        navigated, not_navigated = await run(True), await run(False)
    [attempt] = navigated.call_attempts
    assert (attempt.result, attempt.end_reason, navigated.outcome) == ("human", "tool_end_call", "interested")
    assert attempt.transcript is not None
    assert [t.tool_name for t in attempt.transcript if t.role == "tool"][:2] == ["send_dtmf", "human_reached"]
    first = not_navigated.call_attempts[-1]
    assert (not_navigated.calls_count, first.result, first.end_reason) == (2, "IVR", "ivr_no_navigate")


async def test_a_waiting_orders_scheduled_at_is_when_its_first_attempt_waits_for(time_env, task_queue):
    """The seed's Call.scheduled_at is "the time the call order is scheduled to start": for an order
    outside its window that is the window's opening, not the instant it was placed (nor a scheduled_at
    asked for in the night); a force_now start makes it the instant it dialed."""
    now = await time_env.get_current_time()
    night = (now + timedelta(days=3)).replace(hour=3, minute=0, second=0, microsecond=0)
    retry = {
        **ALWAYS_OPEN,
        "calling_windows": [{"calling_window_start_time": "10:00", "calling_window_end_time": "11:00"}],
    }
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        handle = await start(time_env, task_queue, order("human", retry=retry, scheduled_at=night))
        await eventually(lambda: status_of(handle), lambda s: s == "scheduled")
        waiting = await handle.query(CallOrderWorkflow.call)
        assert waiting.scheduled_at == night.replace(hour=10)
        await time_env.sleep(timedelta(days=1))
        await handle.signal(CallOrderWorkflow.force_now)
        call = await handle.result()
    assert call.calls_count == 1
    assert call.scheduled_at == started(call.call_attempts[0]) < night.replace(hour=10)
    # due at once: it keeps what POST /call answers (a past scheduled_at as asked; force_now: at once)
    past = order("human", scheduled_at=now - timedelta(days=3))
    forced = order("human", scheduled_at=now + timedelta(days=2), force_now=True)
    async with create_worker(time_env.client, task_queue=task_queue, settings=settings_for_tests()):
        called = await (await start(time_env, task_queue, past)).result()
        assert called.scheduled_at == past.scheduled_at
        called = await (await start(time_env, task_queue, forced)).result()
        assert called.scheduled_at == called.created_at <= started(called.call_attempts[0])
