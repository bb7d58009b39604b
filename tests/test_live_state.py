"""Reads of a running order while nobody answers queries (every worker down, or Temporal): one read
waits out the query's timeout, the next ones answer at once from the stored state, and live answers
come back with a worker; `outdial status` shows the stored state, even with Temporal unreachable. The
real dev server and client."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from activities.persistence import call_columns
from api import store
from api.calls import current_call
from api.context import ApiContext
from api.live_state import LiveState
from models import Call, CallCreateParams
from models.settings import SOURCES, ConfigError, Settings
from models.tables import Database
from tests.helpers import eventually, free_ports, settings_for_tests
from workers import cli, create_worker
from workflows.call_order import CallOrderWorkflow


def counting_queries(client: Client, monkeypatch: Any) -> list[str]:
    """The workflow ids of the query RPCs `client` sends from now on."""
    sent: list[str] = []
    service = client.workflow_service
    query_workflow = service.query_workflow

    async def counted(request: Any, **options: Any) -> Any:
        sent.append(request.execution.workflow_id)
        return await query_workflow(request, **options)

    monkeypatch.setattr(service, "query_workflow", counted)
    return sent


async def test_reads_answer_at_once_while_no_worker_answers_and_live_again_with_one(
    dev_env: WorkflowEnvironment, task_queue: str, monkeypatch: Any
) -> None:
    client, settings = dev_env.client, settings_for_tests()
    order = CallCreateParams(phone_number="+33612345678", scheduled_at=datetime(2099, 1, 5, 9, tzinfo=UTC))
    async with create_worker(client, task_queue=task_queue, settings=settings):
        handle = await client.start_workflow(
            CallOrderWorkflow.run, order, id=f"call-{uuid.uuid4()}", task_queue=task_queue
        )
        scheduled = await eventually(
            lambda: handle.query("call", result_type=Call), lambda call: call.status == "scheduled"
        )
        database = Database.for_url(settings.database_url)  # and stored: the query may see it first
        await eventually(
            lambda: asyncio.to_thread(store.get_call, database, scheduled.organization_id, scheduled.id),
            lambda record: record is not None and record.status == "scheduled",
        )

    # `outdial status` with no worker: the stored state and a note, rather than a wait for the server.
    monkeypatch.setattr(cli, "QUERY_TIMEOUT", timedelta(seconds=1))
    env = {
        "OUTDIAL_CONFIG": "/dev/null",
        "OUTDIAL_CODEC_KEY": "plaintext",
        "OUTDIAL_DATABASE_URL": settings.database_url,
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": client.namespace,
    }
    shown = await asyncio.to_thread(CliRunner().invoke, cli.app, ["status", handle.id], env=env)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["status"] == "scheduled" and "unanswered" in shown.stderr

    now = [0.0]
    live = LiveState(timeout=timedelta(seconds=1), ask_again_after=10, clock=lambda: now[0])
    context = ApiContext(settings, Database.for_url(settings.database_url), client)
    context.live = live
    record = store.get_call(context.database, scheduled.organization_id, scheduled.id)
    assert record is not None
    sent = counting_queries(client, monkeypatch)
    # No worker: the API's first read waits out the timeout, the next ones do not ask; all answer the
    # order's stored state.
    assert [(await current_call(context, record)).status for _ in range(4)] == ["scheduled"] * 4
    assert not live.answering and len(sent) == 1

    async with create_worker(client, task_queue=task_queue, settings=settings):
        assert await live.call(handle) is None and len(sent) == 1  # not yet time to ask again

        async def read() -> Call | None:
            now[0] += 10  # time passes: a read may ask again, in the background
            return await live.call(handle)

        # The first background queries may go unanswered too: the order's sticky queue is the old
        # worker's until the server gives up on it. Reads answer from the database meanwhile.
        call = await eventually(read, lambda call: call is not None, timeout=40)
        assert call is not None and call.status == "scheduled" and live.answering
        assert len(sent) >= 3  # the one unanswered, at least one in the background, this one
        await handle.cancel()


async def test_reads_answer_at_once_while_temporal_is_down(monkeypatch: Any) -> None:
    """The client retries a query to an unreachable server until its timeout (5-6 s each, measured):
    after one such read, the next ones answer from the database without asking."""
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=shutil.which("temporal"), ui=False)
    handle = env.client.get_workflow_handle(f"call-{uuid.uuid4()}")
    await env.shutdown()
    live = LiveState(timeout=timedelta(seconds=1), clock=lambda: 0.0)
    sent = counting_queries(env.client, monkeypatch)
    with pytest.raises(RPCError) as unanswered:
        await live.call(handle)
    assert unanswered.value.status == RPCStatusCode.UNAVAILABLE
    assert [await live.call(handle) for _ in range(3)] == [None] * 3 and len(sent) == 1


def stored_in_a_database(tmp_path: Any, status: str, seq: int) -> tuple[str, Call]:
    """A database of its own (its URL) holding one call in `status`, written at `seq` (0: a row the
    API or a campaign wrote, no workflow yet)."""
    database_url = f"sqlite:///{tmp_path}/outdial.db"
    database = Database.for_url(database_url)
    database.migrate()
    call = Call(
        id=str(uuid.uuid4()),
        organization_id="org",
        from_phone_number="+33612345670",
        to_phone_number="+33612345678",
        status=status,
        created_at=datetime(2026, 1, 5, 9, tzinfo=UTC),
        scheduled_at=datetime(2099, 1, 5, 9, tzinfo=UTC),
        updated_at=datetime(2026, 1, 5, 9, tzinfo=UTC),
    )
    row = {"id": call.id, **call_columns(call, seq), "params": None, "idempotency_key": None}
    store.insert_call(database, row)
    return database_url, call


async def terminated_order(env: WorkflowEnvironment, call_id: str, reason: str) -> None:
    """The order's workflow, closed by hand before any worker ran it (no worker polls its queue)."""
    handle = await env.client.start_workflow(
        "CallOrderWorkflow",
        {"phone_number": "+33612345678"},
        id=f"call-{call_id}",
        task_queue=f"idle-{call_id}",
    )
    await handle.terminate(reason=reason)


def cli_env(database_url: str, env: WorkflowEnvironment) -> dict[str, str]:
    return {
        "OUTDIAL_CONFIG": "/dev/null",
        "OUTDIAL_CODEC_KEY": "plaintext",
        "OUTDIAL_DATABASE_URL": database_url,
        "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
    }


def test_the_cli_with_temporal_unreachable_shows_the_stored_state_or_says_so_in_one_line(
    tmp_path: Any,
) -> None:
    """`outdial status` prints the order's stored state with a note; steering it, placing one, or the
    status of an order the database does not hold is one line naming Temporal (exit 1), no traceback."""
    database_url, call = stored_in_a_database(tmp_path, "scheduled", 1)
    [closed] = free_ports(1)  # a port nothing listens on
    env = {
        "OUTDIAL_CONFIG": "/dev/null",
        "OUTDIAL_CODEC_KEY": "plaintext",
        "OUTDIAL_DATABASE_URL": database_url,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{closed}",
    }
    shown = CliRunner().invoke(cli.app, ["status", call.id], env=env)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["status"] == "scheduled" and "Temporal is unreachable" in shown.stderr
    upper = CliRunner().invoke(cli.app, ["status", call.id.upper()], env=env)  # as the API takes it
    assert upper.exit_code == 0 and json.loads(upper.stdout)["id"] == call.id, upper.output
    nulls = tmp_path / "nulls.json"  # the API takes these nulls; the flags fill them in (a TypeError before)
    nulls.write_text(json.dumps({"phone_number": "+33612345678", "metadata": None, "assistant": None}))
    flagged = ["call", "--json", str(nulls), "--simulation", "human", "--prompt", "Hi"]
    for command in (
        ["cancel", call.id],
        ["status", str(uuid.uuid4())],
        ["call", "--to", "+33612345678"],
        flagged,
    ):
        failed = CliRunner().invoke(cli.app, command, env=env)
        assert failed.exit_code == 1 and "unreachable" in failed.stderr, (command, failed.output)
        assert "Traceback" not in failed.output and len(failed.stderr.strip().splitlines()) <= 4, command


def test_the_cli_refuses_an_invalid_order_in_one_line_naming_the_field(tmp_path: Any) -> None:
    """As the API's 422 says it (exit 2, before any connection): not pydantic's report of several lines
    with a link to its documentation."""
    order = tmp_path / "order.json"
    order.write_text(json.dumps({"phone_number": "+33612345678", "metadata": {"n": 1}}))
    misplaced = tmp_path / "misplaced.json"  # webhook_url belongs in the assistant: not dropped in silence
    text = tmp_path / "text.json"
    text.write_text('"+33612345678"')
    named = tmp_path / "named.json"
    named.write_text(json.dumps({"phone_number": "+33612345678", "assistant": "asst_1"}))
    misplaced.write_text(json.dumps({"phone_number": "+33612345678", "webhook_url": "https://example.com/h"}))
    heavy = tmp_path / "heavy.json"  # as POST /call's 413: more than each attempt can carry
    heavy.write_text(json.dumps({"phone_number": "+33612345678", "prompt_variables": {"k": "x" * 70_000}}))
    env = {"OUTDIAL_CONFIG": "/dev/null", "TEMPORAL_ADDRESS": "127.0.0.1:1", "COLUMNS": "60"}
    for command, problem in (
        (
            ["call", "--to", "bad"],
            "phone_number: Value error, 'bad' is not an E.164 phone number (e.g. +33612345678)",
        ),
        (["call", "--json", str(order)], "metadata.n: Input should be a valid string"),
        (["call", "--json", str(misplaced)], "webhook_url: Extra inputs are not permitted"),
        (
            ["call", "--json", str(heavy)],
            "the call order is too large: its prompt_variables and metadata are 70009 bytes of JSON, at "
            "most 65536 together (each attempt carries them through Temporal many times, whose histories "
            "stop at 50 MB)",
        ),
        (["call", "--json", str(text), "--to", "+33612345678"], f"{text} is not a JSON object"),
        (  # a flag on a field of the wrong kind: named by validation (a TypeError before)
            ["call", "--json", str(named), "--prompt", "Hi"],
            "assistant: Input should be a valid dictionary or instance of AssistantBody",
        ),
        (  # Kaliningrad to Kamchatka: the order could never be called
            ["call", "--to", "+79161234567", "--prompt", "Hi"],
            "assistant.call_retry_config.timezone: +79161234567 may be in 13 timezones (Asia/Anadyr … "
            "Europe/Samara) that share no calling window; set call_retry_config.timezone to the recipient's",
        ),
    ):
        refused = CliRunner().invoke(cli.app, command, env=env)
        assert refused.exit_code == 2, refused.output
        assert refused.output.strip().splitlines() == [f"invalid call order: {problem}"]
        assert refused.stdout == ""  # on stderr: stdout is the Call's alone (`> call.json`)


def test_cli_commands_with_the_database_unreachable_say_so_in_one_line() -> None:
    """Every command that reads or writes it (keys, the webhook secret, campaigns, a stored order): exit
    1 and one line naming it, password hidden, and where to set it; before, a traceback of 430 lines."""
    [closed] = free_ports(1)  # a port nothing listens on
    env = {
        "PATH": os.environ.get("PATH", ""),
        "OUTDIAL_CONFIG": "/dev/null",
        "OUTDIAL_DATABASE_URL": f"postgresql://outdial:hunter2@127.0.0.1:{closed}/outdial",
        "TEMPORAL_ADDRESS": f"127.0.0.1:{closed}",
        "COLUMNS": "80",
    }
    outdial = str(Path(sys.executable).parent / "outdial")
    for command in (["apikey", "list"], ["webhook-secret", "show"], ["campaign", "status", "x"]):
        done = subprocess.run([outdial, *command], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, (command, done.stderr)
        [line] = done.stderr.strip().splitlines()
        where = f"postgresql://outdial:***@127.0.0.1:{closed}/outdial"
        assert line.startswith(f"the database at {where} is unavailable (connection failed"), line
        assert line.endswith(  # the environment's /dev/null: no file is read
            "; set OUTDIAL_DATABASE_URL or database_url in a config file (OUTDIAL_CONFIG is /dev/null: none "
            "is read)"
        ), line
    # libpq's other way of giving the password, hidden as well
    query = {
        **env,
        "OUTDIAL_DATABASE_URL": f"postgresql://outdial@127.0.0.1:{closed}/outdial?password=hunter2",
    }
    done = subprocess.run([outdial, "apikey", "list"], env=query, capture_output=True, text=True, timeout=60)
    where = f"postgresql://outdial@127.0.0.1:{closed}/outdial?password=***"
    assert done.stderr.startswith(f"the database at {where} is unavailable"), done.stderr
    assert "hunter2" not in done.stderr


def test_cli_commands_with_an_unusable_configuration_say_why_in_one_line(tmp_path: Any) -> None:
    """A setting of the wrong kind (named as written: its variable, or its key in temporal-dev.yaml), a
    file that is missing, not YAML or not UTF-8, a section that is not a mapping, a codec key of the
    wrong size, LiveKit unset for the voice agent: exit 1 and one line naming it; before, a traceback
    of 40 to 160 lines (and a missing file was no file: the defaults)."""
    not_yaml, wrong_port = tmp_path / "not.yaml", tmp_path / "port.yaml"
    not_yaml.write_text("temporal: [1, 2\n")
    wrong_port.write_text("temporal:\n  dev_server:\n    port: abc\n")
    empty_sections = tmp_path / "sections.yaml"  # an empty section is no settings; a list is a mistake
    empty_sections.write_text("temporal:\nproviders: [simulated]\n")
    misspelt = tmp_path / "misspelt.yaml"  # the default was used without a word (another port, server)
    misspelt.write_text("temporal:\n  adress: localhost:7299\n")
    dotted = tmp_path / "dotted.yaml"  # as the messages name a setting: read as no setting at all
    dotted.write_text("temporal.address: localhost:7299\n")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("organization:\n  id: société\n".encode("latin-1"))
    outdial = str(Path(sys.executable).parent / "outdial")
    base = {"PATH": os.environ.get("PATH", ""), "OUTDIAL_CONFIG": "/dev/null", "COLUMNS": "80"}
    livekit = {"LIVEKIT_URL": "ws://127.0.0.1:1", "LIVEKIT_API_KEY": "key", "LIVEKIT_API_SECRET": "secret"}
    for command, env, said in (
        (
            ["apikey", "list"],
            {"OUTDIAL_CONFIG": str(not_yaml)},
            f"{not_yaml} is not valid YAML: expected ',' or ']', but got '<stream end>' at line 2, column 1",
        ),
        (
            ["apikey", "list"],
            {"OUTDIAL_CONFIG": str(wrong_port)},
            f"invalid configuration (the environment, then {wrong_port}): temporal.dev_server.port: Input "
            "should be a valid integer, unable to parse string as an integer",
        ),
        (
            ["apikey", "list"],
            {"OUTDIAL_CONFIG": str(empty_sections)},
            f"providers in {empty_sections} is not a mapping of settings",
        ),
        (["apikey", "list"], {"OUTDIAL_CONFIG": str(latin1)}, f"{latin1} is not UTF-8 text"),
        (
            ["apikey", "list"],
            {"OUTDIAL_CONFIG": str(misspelt)},
            f"{misspelt}: temporal.adress is not a setting (did you mean temporal.address?)",
        ),
        (
            ["apikey", "list"],
            {"OUTDIAL_CONFIG": str(dotted)},
            f"{dotted}: temporal.address is read nested: write `temporal:`, then `address` under it",
        ),
        (
            ["apikey", "list"],  # was a traceback
            {"OUTDIAL_DATABASE_URL": "postgresql://outdial@127.0.0.1:notaport/outdial"},
            "OUTDIAL_DATABASE_URL is not a database outdial can use (sqlite:///path/outdial.db or "
            "postgresql://user:password@host/database): ValueError",
        ),
        (
            ["apikey", "list"],
            {"LIVEKIT_SIP_TRUNKS": "+33159000000=ST_paris,+14155550100"},  # was dropped without a word
            "LIVEKIT_SIP_TRUNKS: item 2 is not of the form name=value",
        ),
        (
            ["apikey", "list"],
            {"OUTDIAL_CONFIG": str(tmp_path / "prod.yml")},  # a typo would run on the defaults
            f"OUTDIAL_CONFIG names {tmp_path / 'prod.yml'}, which does not exist (/dev/null: no file)",
        ),
        (
            ["worker"],
            {"OUTDIAL_TELEPHONY": "bogus", "OUTDIAL_CODEC_KEY": "plaintext"},
            "invalid configuration (the environment): OUTDIAL_TELEPHONY: Input should be 'simulated' or "
            "'livekit'",
        ),
        (
            ["worker"],
            {"OUTDIAL_ALLOW_PRIVATE_URLS": "2", "OUTDIAL_CODEC_KEY": "plaintext"},
            "invalid configuration (the environment): OUTDIAL_ALLOW_PRIVATE_URLS: Input should be a valid "
            "boolean, unable to interpret input",
        ),
        (
            ["voice-agent"],
            {},
            "outdial voice-agent needs LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET",
        ),
        (
            ["voice-agent"],  # found by each call's job, after the phone rang: silence, then a retry
            {**livekit, "OUTDIAL_CODEC_KEY": "plaintext", "OUTDIAL_DEDICATED_BASE_URLS": "{'gpt': 1}"},
            "outdial voice-agent: OUTDIAL_DEDICATED_BASE_URLS: not JSON (Expecting property name enclosed "
            "in double quotes at character 1)",
        ),
        (
            ["voice-agent"],
            {**livekit, "OUTDIAL_CODEC_KEY": "plaintext", "OUTDIAL_AMD": "maybe"},
            "outdial voice-agent: OUTDIAL_AMD: Input should be a valid boolean, unable to interpret input",
        ),
        (
            ["voice-agent"],  # the workers' payloads would be unreadable to it
            livekit,
            "outdial voice-agent needs the workers' OUTDIAL_CODEC_KEY (beside temporal-dev.yaml, the key "
            "`outdial dev` made; OUTDIAL_CODEC_KEY=plaintext if they run unencrypted): it reads each order "
            "from Temporal's history",
        ),
        (
            ["worker"],  # was a traceback of 121 lines
            {"OUTDIAL_TELEPHONY": "livekit", "OUTDIAL_CODEC_KEY": "plaintext"},
            "OUTDIAL_TELEPHONY=livekit needs LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET",
        ),
        (
            ["worker"],
            {"OUTDIAL_SMS": "twilio", "OUTDIAL_CODEC_KEY": "plaintext"},
            "OUTDIAL_SMS=twilio needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
        ),
        (
            ["worker"],
            {"LIVEKIT_URL": "project.livekit.cloud", "OUTDIAL_CODEC_KEY": "plaintext"},
            "invalid configuration (the environment): LIVEKIT_URL: Value error, must start with wss:// (or "
            "ws://, https://, http://), e.g. wss://project.livekit.cloud",
        ),
        (
            ["worker"],
            {"OUTDIAL_CODEC_KEY": "too-short"},
            "OUTDIAL_CODEC_KEY: each key must be 32 bytes, base64 or hex "
            "(make one with `outdial codec keygen`)",
        ),
    ):
        done = subprocess.run([outdial, *command], env=base | env, capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stderr.strip().splitlines()) == (1, [said]), done.stderr


def test_cli_commands_against_a_namespace_temporal_does_not_have_say_so_in_one_line(
    dev_env: WorkflowEnvironment,
) -> None:
    """A mistyped TEMPORAL_NAMESPACE: exit 1 and one line saying where to set it or how to create it;
    before, a traceback of 120 to 160 lines (and `status` said the order did not exist)."""
    env = {
        "OUTDIAL_CONFIG": "/dev/null",
        "OUTDIAL_CODEC_KEY": "plaintext",
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": "mistyped",
    }
    call_id = str(uuid.uuid4())
    for command in (["call", "--to", "+33612345678"], ["cancel", call_id], ["status", call_id]):
        failed = CliRunner().invoke(cli.app, command, env=env)
        assert failed.exit_code == 1, (command, failed.output)
        [line] = failed.stderr.strip().splitlines()
        assert "has no namespace 'mistyped': set TEMPORAL_NAMESPACE" in line, line
        assert line.endswith("(temporal operator namespace create --namespace mistyped)"), line


def test_every_variable_the_settings_read_is_in_the_readme() -> None:
    """models.settings.SOURCES is where a setting is read; a variable added there and not to the README
    would be one no user can find."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [var for var, _ in SOURCES.values() if var and not re.search(rf"\b{var}\b", readme)]
    assert missing == []


def test_the_cli_shows_and_refuses_to_steer_a_campaign_row_not_yet_started(
    dev_env: WorkflowEnvironment, tmp_path: Any
) -> None:
    """A campaign's row has a call (`not_launched`) before it has a workflow: `status` prints it, as
    `GET /call` does, and a signal is refused saying why, as the API's 409; both said "no call order"."""
    database_url, call = stored_in_a_database(tmp_path, "not_launched", 0)
    env = {
        "OUTDIAL_CONFIG": "/dev/null",
        "OUTDIAL_CODEC_KEY": "plaintext",
        "OUTDIAL_DATABASE_URL": database_url,
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
    }
    shown = CliRunner().invoke(cli.app, ["status", call.id], env=env)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["status"] == "not_launched" and "not started" in shown.stderr
    for signal in ("pause", "cancel"):
        refused = CliRunner().invoke(cli.app, [signal, call.id], env=env)
        assert refused.exit_code == 2, refused.output
        assert f"call {call.id} is not_launched: its campaign has not started it" in refused.stderr


async def test_the_cli_shows_an_order_terminated_in_temporal_as_cancelled(
    dev_env: WorkflowEnvironment, tmp_path: Any
) -> None:
    """A terminated order's query replayed its history, so `status` said it was still scheduled. It is
    closed from its close event, as the API does (`api.closed_orders`), and stored so."""
    database_url, call = stored_in_a_database(tmp_path, "scheduled", 1)
    await terminated_order(dev_env, call.id, "wrong list")
    env = cli_env(database_url, dev_env)
    shown = await asyncio.to_thread(CliRunner().invoke, cli.app, ["status", call.id], env=env)
    assert shown.exit_code == 0, shown.output
    printed = json.loads(shown.stdout)
    assert (printed["status"], printed["outcome_summary"]) == (
        "cancelled",
        "terminated in Temporal: wrong list",
    )
    stored = store.get_call(Database.for_url(database_url), call.organization_id, call.id)
    assert stored is not None and stored.status == "cancelled"


async def test_the_cli_starts_a_never_started_order_when_steered_and_waits_out_a_terminated_one(
    dev_env: WorkflowEnvironment, tmp_path: Any
) -> None:
    """As the API does: an order whose `POST /call` died before its workflow started (its row kept with
    what starts it) is started by `pause` (it said "no call order"). `call --wait` on an order terminated
    in Temporal prints it closed (a traceback before); an order over Temporal's payload limit is one line."""
    database_url, call = stored_in_a_database(tmp_path, "initializing", 0)
    later = {"phone_number": "+33612345678", "scheduled_at": "2099-01-05T09:00:00Z"}
    store.keep_unstarted(Database.for_url(database_url), call.id, later)
    queue = f"cli-{uuid.uuid4().hex[:8]}"  # no worker polls it
    env = {**cli_env(database_url, dev_env), "OUTDIAL_TASK_QUEUE": queue}
    keyless = {**env, "OUTDIAL_CODEC_KEY": ""}  # its start would write the order's secrets in clear
    refused = await asyncio.to_thread(CliRunner().invoke, cli.app, ["pause", call.id], env=keyless)
    assert refused.exit_code == 2 and "OUTDIAL_CODEC_KEY is not set" in refused.stderr, refused.output
    paused = await asyncio.to_thread(CliRunner().invoke, cli.app, ["pause", call.id], env=env)
    assert paused.exit_code == 0, paused.output
    started = dev_env.client.get_workflow_handle(f"call-{call.id}")
    assert (await started.describe()).status == WorkflowExecutionStatus.RUNNING
    await started.terminate(reason="cleanup")

    order = tmp_path / "order.json"
    order.write_text(json.dumps(later))
    placing = ["call", "--json", str(order), "--wait"]
    config = tmp_path / "acme.yaml"  # the order is the configured organization's (it was org_local's)
    config.write_text("organization:\n  id: acme\n")
    acme = {**env, "OUTDIAL_CONFIG": str(config)}
    waiting = asyncio.ensure_future(asyncio.to_thread(CliRunner().invoke, cli.app, placing, env=acme))

    async def placed() -> list[str]:
        query = f"TaskQueue='{queue}' AND ExecutionStatus='Running'"
        return [execution.id async for execution in dev_env.client.list_workflows(query)]

    [placed_id] = await eventually(placed, lambda ids: len(ids) == 1)
    memo = await (await dev_env.client.get_workflow_handle(placed_id).describe()).memo()
    assert memo == {"organization_id": "acme"}
    await dev_env.client.get_workflow_handle(placed_id).terminate(reason="wrong list")
    waited = await asyncio.wait_for(waiting, timeout=60)  # no worker stored it: one line says what it became
    assert waited.exit_code == 1 and "Traceback" not in waited.output, waited.output
    said = f"call order {placed_id.removeprefix('call-')} was terminated in Temporal: wrong list"
    assert waited.stderr.strip().endswith(said), waited.stderr

    order.write_text(json.dumps({**later, "metadata": {"k": "x" * 2_500_000}}))
    large = await asyncio.to_thread(CliRunner().invoke, cli.app, ["call", "--json", str(order)], env=env)
    assert large.exit_code == 2 and "Traceback" not in large.output, large.output
    assert large.stderr.startswith("invalid call order: the call order is too large"), large.stderr


async def test_a_terminated_orders_end_is_announced_even_if_its_first_announcement_failed(
    dev_env: WorkflowEnvironment, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Call was stored closed before its notifications started: a start that failed (Temporal
    unavailable a moment) left it closed, and no later read or sweep announced it (the review)."""
    from activities.persistence import write_call
    from api.closed_orders import record_closed
    from models import CallAssistant

    database_url, call = stored_in_a_database(tmp_path, "scheduled", 1)
    database = Database.for_url(database_url)
    hook = {"id": "a", "organization_id": "org", "prompt": "p", "webhook_url": "https://example.com/h"}
    write_call(database, call.model_copy(update={"assistant": CallAssistant.model_validate(hook)}), 2)
    client = dev_env.client
    await terminated_order(dev_env, call.id, "wrong list")
    real_start, starts = client.start_workflow, []

    async def down_once(*args: Any, **kwargs: Any) -> Any:
        starts.append(kwargs["id"])
        if len(starts) == 1:
            raise RPCError("unavailable", RPCStatusCode.UNAVAILABLE, b"")
        return await real_start(*args, **kwargs)

    monkeypatch.setattr(client, "start_workflow", down_once)
    queue = f"idle-{call.id}"
    with pytest.raises(RPCError):
        await record_closed(client, database, queue, store.get_call(database, "org", call.id))
    assert store.get_call(database, "org", call.id).status == "scheduled"  # left open, to try again
    closed = await record_closed(client, database, queue, store.get_call(database, "org", call.id))
    assert closed is not None and closed.status == "cancelled"
    assert store.get_call(database, "org", call.id).status == "cancelled"
    assert starts == [f"notify-{call.id}"] * 2
    await client.get_workflow_handle(f"notify-{call.id}").terminate("test over")


@pytest.mark.parametrize(
    "url",
    ["foo://u:hunter2@h/db", "mysql://u:hunter2@h/db", "sqlite:/relative.db", "sqlite:////etc/passwd/x.db"],
)
def test_a_database_url_of_no_usable_kind_is_one_line(url: str) -> None:
    """A traceback of 60-83 lines (NoSuchModuleError, a missing MySQL driver, an unparsable URL)."""
    env = {"OUTDIAL_CONFIG": "/dev/null", "OUTDIAL_CODEC_KEY": "plaintext", "OUTDIAL_DATABASE_URL": url}
    for command in (["apikey", "list"], ["worker"]):  # a ConfigError: `cli.main` prints it in one line
        failed = CliRunner().invoke(cli.app, command, env=env)
        assert isinstance(failed.exception, ConfigError), (command, failed.output)
        message = str(failed.exception)
        assert message.startswith("OUTDIAL_DATABASE_URL"), message
        assert "\n" not in message and "hunter2" not in message


async def test_the_cli_shows_a_finished_order_from_its_row_with_no_worker_running(
    dev_env: WorkflowEnvironment, tmp_path: Any
) -> None:
    """Its row is final: the query of a closed workflow needs a worker to replay it, and without one the
    command failed ("no poller seen") where it printed the stored Call (the second review)."""
    database_url, call = stored_in_a_database(tmp_path, "completed", 3)
    await terminated_order(dev_env, call.id, "closed, as if it had completed")  # a closed workflow, no worker
    env = cli_env(database_url, dev_env)
    shown = await asyncio.to_thread(CliRunner().invoke, cli.app, ["status", call.id], env=env)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["status"] == "completed"


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ({"TEMPORAL_ADDRESS": "127.0.0.1:469020"}, "Temporal at 127.0.0.1:469020: invalid target URL"),
        (
            {
                "TEMPORAL_TLS_CLIENT_CERT_PATH": "/nonexistent.pem",
                "TEMPORAL_TLS_CLIENT_KEY_PATH": "/nonexistent.key",
            },
            "Temporal's client configuration (TEMPORAL_TLS_*, TEMPORAL_PROFILE): ",
        ),
    ],
)
def test_a_temporal_address_or_certificate_of_no_use_is_one_line(
    setting: dict[str, str], said: str, tmp_path: Any
) -> None:
    """A mistyped port or a missing certificate file: a traceback of 110-160 lines (ValueError,
    FileNotFoundError), where an unreachable server was one line."""
    env = {
        "OUTDIAL_CONFIG": "/dev/null",
        "OUTDIAL_CODEC_KEY": "plaintext",
        "OUTDIAL_DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
        **setting,
    }
    for command in (["worker"], ["status", str(uuid.uuid4())], ["call", "--to", "+33612345678"]):
        failed = CliRunner().invoke(cli.app, command, env=env)
        assert isinstance(failed.exception, ConfigError), (command, failed.output)
        assert str(failed.exception).startswith(said) and "\n" not in str(failed.exception), failed.exception


def test_the_organization_is_set_by_the_environment_too() -> None:
    """An environment-only deployment could not name its organization: `outdial campaign status` said
    "not found" of a campaign its API served (the key issued with `apikey create --org`)."""
    assert SOURCES["organization_id"][0] == "OUTDIAL_ORGANIZATION_ID"
    loaded = Settings.load(config_file="/dev/null", env={"OUTDIAL_ORGANIZATION_ID": "org_acme"})
    assert loaded.organization_id == "org_acme"
    with pytest.raises(ConfigError, match="OUTDIAL_ORGANIZATION_ID"):
        Settings.load(config_file="/dev/null", env={"OUTDIAL_ORGANIZATION_ID": "a:b"})
