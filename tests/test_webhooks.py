"""Webhooks: the retry bound of delivery, and secrets per organization — made with the organization (and
by the migration for older ones), looked up at send time, rotated with a grace period, pinned by
OUTDIAL_WEBHOOK_SECRET for the local organization, readable through `outdial webhook-secret` and
`GET /webhook-secret`.

The retry-bound test lives here, in a module of its own time-skipping server: an order that starts its
abandoned notifications child leaves the test server's time skipping slowed for later tests."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from aiohttp import web
from alembic import command
from fastapi.testclient import TestClient
from sqlmodel import select
from temporalio.testing import ActivityEnvironment
from typer.testing import CliRunner

from activities.notify import SIGNATURE_HEADER, NotifyActivities, NotifyRequest, sign, verify_signature
from activities.sms import SimulatedSmsOutbox, TemplateSmsWriter
from activities.webhook_secrets import (
    ROTATION_GRACE,
    WebhookSecretPinned,
    rotate_webhook_secret,
    show_webhook_secret,
    signing_secrets,
)
from api import create_app
from api.auth import issue_api_key, seed_dev_organization
from migrations import alembic_config
from models.settings import Settings
from models.tables import Database, Organization, PhoneNumberRecord
from tests.helpers import settings_for_tests
from tests.http_fakes import final_call, serve
from tests.test_notify import SECRET, Receiver
from workers import create_worker
from workers.cli import app as cli
from workers.local_stack import local_settings
from workflows.notify import CallNotificationsWorkflow, notifications_workflow_id

REPO = Path(__file__).resolve().parent.parent


async def deliver(settings: Settings, organization_id: str) -> tuple[str, bytes]:
    """One webhook of `organization_id` through the real activity; what the receiver got."""
    received: list[tuple[str, bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((request.headers[SIGNATURE_HEADER], await request.read()))
        return web.Response(status=204)

    async with serve(lambda app: app.router.add_post("/hook", hook)) as base:
        call = final_call(webhook_url=f"{base}/hook").model_copy(update={"organization_id": organization_id})
        acts = NotifyActivities(settings, SimulatedSmsOutbox(), TemplateSmsWriter())
        result = await ActivityEnvironment().run(acts.deliver_webhook, NotifyRequest(call=call))
    assert result.status == "sent"
    [delivery] = received
    return delivery


async def test_webhook_retries_for_24_hours_then_gives_up(time_env, task_queue) -> None:  # type: ignore[no-untyped-def]
    """The retry bound: backoff from 10 s doubling to 1 h, for 24 h in all (schedule_to_close), then a
    `failed` report (the order is never held meanwhile: test_notify's dead-receiver test)."""
    receiver = Receiver(fail_first=1_000)
    settings = settings_for_tests(webhook_secret=SECRET, allow_private_urls=True)
    async with (
        serve(receiver.routes) as base,
        create_worker(time_env.client, task_queue=task_queue, settings=settings),
    ):
        notify = await time_env.client.start_workflow(
            CallNotificationsWorkflow.run,
            NotifyRequest(call=final_call(webhook_url=f"{base}/hooks/outdial")),
            id=notifications_workflow_id(str(uuid.uuid4())),
            task_queue=task_queue,
        )
        report = await notify.result()
        described = await notify.describe()

    [result] = report.results
    assert (result.channel, result.status) == ("webhook", "failed")
    assert result.detail and result.detail.endswith("answered HTTP 503")
    # 1 + 9 doubling retries (10 s ... 2560 s, 5110 s in all) + 22 hourly ones fit in 24 h: 32 deliveries.
    assert len(receiver.deliveries) == 32
    assert described.close_time is not None
    assert timedelta(hours=23) < described.close_time - described.start_time <= timedelta(hours=24)


async def test_each_organization_signs_with_its_own_secret_looked_up_at_send_time() -> None:
    settings = settings_for_tests(allow_private_urls=True)  # no OUTDIAL_WEBHOOK_SECRET
    database = Database.for_url(settings.database_url)
    issue_api_key(database, "org_a")
    issue_api_key(database, "org_b")
    secret_a = show_webhook_secret(settings, database, "org_a").webhook_secret
    secret_b = show_webhook_secret(settings, database, "org_b").webhook_secret
    assert secret_a.startswith("whsec_") and secret_b.startswith("whsec_") and secret_a != secret_b

    header, body = await deliver(settings, "org_a")
    assert verify_signature(secret_a, header, body) and not verify_signature(secret_b, header, body)
    # Rotated between two deliveries: the next one is signed with the new secret, and the old one too
    # during the grace period, so a receiver still holding the old secret keeps accepting.
    rotated = rotate_webhook_secret(settings, database, "org_a")
    header, body = await deliver(settings, "org_a")
    assert header.count("v1=") == 2
    assert verify_signature(rotated.webhook_secret, header, body) and verify_signature(secret_a, header, body)
    assert rotated.previous_secret_valid_until == rotated.rotated_at + ROTATION_GRACE  # type: ignore[operator]
    with database.session() as session:  # the grace period is over
        row = session.get(Organization, "org_a")
        assert row is not None and row.webhook_secret_rotated_at is not None
        row.webhook_secret_rotated_at -= ROTATION_GRACE + timedelta(seconds=1)
        session.commit()
    assert signing_secrets(settings, database, "org_a") == [rotated.webhook_secret]
    assert signing_secrets(settings, database, "org_unknown") == []


def test_the_local_stack_never_hands_out_a_revoked_key(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`outdial dev` printed its kept key after `outdial apikey revoke`, a key every request refused."""
    from api.auth import _revoked, api_keys_of, revoke_api_key
    from models.settings import ConfigError

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OUTDIAL_DEV_API_KEY", raising=False)
    settings = settings_for_tests()
    database = Database.for_url(settings.database_url)
    first = seed_dev_organization(settings)
    assert seed_dev_organization(settings) == first  # kept across runs
    for key in api_keys_of(database, "org_local"):
        revoke_api_key(database, "org_local", key.id)
    second = seed_dev_organization(settings)
    assert second != first and not _revoked(database, second)
    assert (tmp_path / ".outdial" / "dev-api-key").read_text().strip() == second
    monkeypatch.setenv("OUTDIAL_DEV_API_KEY", first)  # a chosen key that was revoked: said, not printed
    with pytest.raises(ConfigError, match="OUTDIAL_DEV_API_KEY was revoked"):
        seed_dev_organization(settings)


def test_a_dev_key_chosen_with_spaces_around_is_the_key_a_client_sends(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Copied with a trailing space into an env file, OUTDIAL_DEV_API_KEY was stored and printed with
    it: a key no client could send (curl trims it, httpx refuses the header)."""
    from api.keys import lookup_key

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OUTDIAL_DEV_API_KEY", " odk_spacey_key_123 \n")
    settings = settings_for_tests()
    assert seed_dev_organization(settings) == "odk_spacey_key_123"
    assert lookup_key(Database.for_url(settings.database_url), "odk_spacey_key_123") is not None
    monkeypatch.setenv("OUTDIAL_DEV_API_KEY", " ")  # blank: none chosen, so one made and kept across runs
    made = seed_dev_organization(settings)
    assert seed_dev_organization(settings) == made != "odk_spacey_key_123"


def test_the_local_stack_hands_out_a_key_of_its_own_organization_only(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The key kept by a run as another organization (organization.id changed since), or one chosen in
    OUTDIAL_DEV_API_KEY that another organization holds, was printed as this organization's; the kept
    file was readable by all until its chmod."""
    from api.keys import lookup_key
    from models.settings import ConfigError

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OUTDIAL_DEV_API_KEY", raising=False)
    settings = settings_for_tests()
    database = Database.for_url(settings.database_url)
    local = seed_dev_organization(settings)
    kept = tmp_path / ".outdial" / "dev-api-key"
    assert kept.stat().st_mode & 0o777 == 0o600
    acme = seed_dev_organization(settings.model_copy(update={"organization_id": "acme"}))
    assert acme != local and lookup_key(database, acme).organization_id == "acme"  # type: ignore[union-attr]
    assert kept.read_text().strip() == acme and kept.stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("OUTDIAL_DEV_API_KEY", local)
    with pytest.raises(ConfigError, match="OUTDIAL_DEV_API_KEY: the key is another organization's"):
        seed_dev_organization(settings.model_copy(update={"organization_id": "acme"}))


def test_the_local_organization_takes_outdial_webhook_secret(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)  # seed_dev_organization keeps the dev API key in ./.outdial
    monkeypatch.delenv("OUTDIAL_DEV_API_KEY", raising=False)
    settings = settings_for_tests(webhook_secret="whsec_from_environment")
    database = Database.for_url(settings.database_url)
    seed_dev_organization(settings)
    info = show_webhook_secret(settings, database, "org_local")
    assert (info.webhook_secret, info.pinned_by_environment) == ("whsec_from_environment", True)
    with database.session() as session:  # stored too, so the row agrees if the variable goes away
        assert session.get(Organization, "org_local").webhook_secret == "whsec_from_environment"  # type: ignore[union-attr]
    with pytest.raises(WebhookSecretPinned):
        rotate_webhook_secret(settings, database, "org_local")
    assert signing_secrets(settings, database, "org_other") == []  # the variable is not everyone's


def test_the_local_caller_id_is_on_the_configured_outbound_trunk(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The trunk comes from the settings (LIVEKIT_SIP_OUTBOUND_TRUNK_ID or temporal-dev.yaml's
    livekit.sip_outbound_trunk_id), not from the environment alone."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIVEKIT_SIP_OUTBOUND_TRUNK_ID", raising=False)
    (tmp_path / "temporal-dev.yaml").write_text("livekit:\n  sip_outbound_trunk_id: ST_from_yaml\n")
    settings = Settings.load(config_file=tmp_path / "temporal-dev.yaml", env={}).model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'outdial.db'}"}
    )
    Database.for_url(settings.database_url).migrate()
    seed_dev_organization(settings)
    with Database.for_url(settings.database_url).session() as session:
        numbers = session.exec(select(PhoneNumberRecord)).all()
    assert [(n.phone_number, n.livekit_outbound_trunk_id) for n in numbers] == [
        ("+33159000000", "ST_from_yaml")
    ]


@pytest.mark.parametrize(
    ("environment", "allowed"),
    [({}, True), ({"OUTDIAL_ALLOW_PRIVATE_URLS": "0"}, False), ({"OUTDIAL_ALLOW_PRIVATE_URLS": "1"}, True)],
)
def test_the_local_stack_allows_private_urls_unless_told_not_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], allowed: bool
) -> None:
    """`outdial dev` lets webhooks reach this machine by default; OUTDIAL_ALLOW_PRIVATE_URLS=0 (or
    notifications.allow_private_urls: false) turns that off, as for any worker. It could not."""
    monkeypatch.chdir(tmp_path)  # the stack keeps its codec key in ./.outdial, beside its config
    shutil.copy(REPO / "temporal-dev.yaml", tmp_path)
    settings = Settings.load(config_file=tmp_path / "temporal-dev.yaml", env=environment)
    assert local_settings(settings).allow_private_urls is allowed


def test_a_config_read_from_another_directory_keeps_its_state_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`OUTDIAL_CONFIG=<stack>/temporal-dev.yaml outdial webhook-secret show` run elsewhere used a new
    database (another webhook secret), codec key, dev API key and Temporal file in its own directory: the
    file's relative paths are its directory's, as `outdial dev` run beside it means them."""
    stack, elsewhere = tmp_path / "my%20stack?", tmp_path / "ops"  # no escape, no query: a folder's name
    stack.mkdir(), elsewhere.mkdir()
    shutil.copy(REPO / "temporal-dev.yaml", stack)
    (stack / ".outdial").mkdir()
    (stack / ".outdial" / "codec.key").write_text("the-stacks-key\n")
    monkeypatch.chdir(elsewhere)
    settings = Settings.load(config_file=stack / "temporal-dev.yaml", env={})
    Database.for_url(settings.database_url).migrate()
    monkeypatch.delenv("OUTDIAL_DEV_API_KEY", raising=False)
    key = seed_dev_organization(settings)
    assert (stack / ".outdial" / "outdial.db").is_file() and not list(elsewhere.iterdir())
    assert (stack / ".outdial" / "dev-api-key").read_text().strip() == key  # kept for the next run
    (stack / "temporal-dev.yaml").write_text("local_stack:\n  mail_dir: .outdial/mail\n")  # before the line
    assert Settings.load(config_file=stack / "temporal-dev.yaml", env={}).local_stack.api_key_file == str(
        stack / ".outdial" / "dev-api-key"
    )
    assert settings.codec_key == "the-stacks-key"
    assert settings.dev_server.db_filename == str(stack / ".outdial" / "temporal.db")
    assert settings.local_stack.mail_dir == str(stack / ".outdial" / "mail")
    (stack / "temporal-dev.yaml").write_text(
        "database_url: sqlite+pysqlite:///.outdial/app.db?timeout=5\n"
        "notifications:\n  sms_outbox: .outdial/sms.jsonl\n  slack_outbox: .outdial/slack.jsonl\n"
    )
    other = Settings.load(config_file=stack / "temporal-dev.yaml", env={})
    assert other.database_url == f"sqlite+pysqlite:///{quote(str(stack))}/.outdial/app.db?timeout=5"
    assert (other.sms_outbox, other.slack_outbox) == (
        str(stack / ".outdial" / "sms.jsonl"),
        str(stack / ".outdial" / "slack.jsonl"),
    )
    odd = tmp_path / os.fsdecode(b"lat\xe9")  # a folder's name in no encoding: as it is
    odd.mkdir()
    (odd / "temporal-dev.yaml").write_text("database_url: sqlite:///.outdial/outdial.db\n")
    assert Settings.load(config_file=odd / "temporal-dev.yaml", env={}).database_url == (
        f"sqlite:///{odd}/.outdial/outdial.db"
    )
    (stack / "temporal-dev.yaml").write_text("database_url: sqlite:///file:.outdial/ro.db?mode=ro&uri=true\n")
    uri = Settings.load(config_file=stack / "temporal-dev.yaml", env={}).database_url
    assert uri == "sqlite:///file:.outdial/ro.db?mode=ro&uri=true"  # a SQLite URI: as written
    shutil.copy(REPO / "temporal-dev.yaml", stack)
    monkeypatch.chdir(stack)  # beside it: as written
    assert Settings.load(config_file=stack / "temporal-dev.yaml", env={}).database_url == (
        "sqlite:///.outdial/outdial.db"
    )


def test_migration_0004_gives_existing_organizations_a_secret(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
        connection.execute(
            sa.text("INSERT INTO organizations (id, name, created_at) VALUES ('org_old', 'old', :t)"),
            {"t": "2026-01-01 00:00:00"},
        )
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        [secret] = connection.execute(sa.text("SELECT webhook_secret FROM organizations")).scalars()
    assert secret.startswith("whsec_") and len(secret) > 40


def test_the_secret_is_shown_and_rotated_by_the_cli_and_the_api(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'outdial.db'}"
    env = {"OUTDIAL_CONFIG": "/dev/null", "OUTDIAL_DATABASE_URL": database_url}
    runner = CliRunner()
    shown = runner.invoke(cli, ["webhook-secret", "show", "--org", "org_cli"], env=env)
    assert shown.exit_code == 0, shown.output
    secret = shown.stdout.strip().splitlines()[-1]
    assert secret.startswith("whsec_")

    settings = Settings.load(config_file="/nonexistent", env=env)
    key = issue_api_key(Database.for_url(database_url), "org_cli")
    with TestClient(create_app(settings)) as api:
        assert api.get("/webhook-secret").status_code == 401
        auth = {"Authorization": f"Bearer {key}"}
        assert api.get("/webhook-secret", headers=auth).json()["webhook_secret"] == secret
        rotated = api.post("/webhook-secret/rotate", headers=auth).json()
    assert rotated["webhook_secret"] != secret and rotated["previous_secret_valid_until"]
    again = runner.invoke(cli, ["webhook-secret", "rotate", "--org", "org_cli"], env=env)
    assert again.exit_code == 0 and rotated["webhook_secret"] not in again.stdout


def test_the_readmes_verify_accepts_a_delivery_and_refuses_garbled_headers_without_raising() -> None:
    """A receiver copies it: a forged or garbled header must be a refusal, not an exception (a 500)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    [snippet] = [block for block in readme.split("```python")[1:] if "def verify(" in block]
    namespace: dict[str, Any] = {}
    exec(snippet.split("```")[0], namespace)  # noqa: S102 — the README's own code
    verify = namespace["verify"]
    body = b'{"event":"call.completed"}'
    header = sign(["whsec_test"], body, int(time.time()))
    assert verify("whsec_test", header, body) and not verify("whsec_other", header, body)
    now = int(time.time())
    garbled_headers = ("", "v1=abc", "t=abc,v1=abc", "garbage", "t=1,t=2,v1=x", f"{header},t=1", "t=²,v1=00")
    for garbled in (*garbled_headers, f"t={now},v1=é"):  # latin-1 decoded, as servers decode headers
        assert verify("whsec_test", garbled, body) is False, garbled
