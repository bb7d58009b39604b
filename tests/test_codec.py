"""Payload encryption: secrets of a call order never appear in clear in Temporal's history (checked with
`temporal workflow show` on the real dev server), and the codec server lets key holders read it."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from rich.console import Console
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    ActivitySerializationContext,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)
from typer.testing import CliRunner

from activities.notify import verify_signature
from models import Call, CallCreateParams
from models.settings import PLAINTEXT_HISTORY, Settings
from tests.helpers import eventually, free_ports, settings_for_tests
from tests.http_fakes import serve, serve_app
from workers import create_worker
from workers.cli import app
from workers.codec import (
    ENCODING,
    CodecKeyError,
    EncryptionCodec,
    codec_app,
    data_converter,
    ensure_dev_codec_key,
    generate_key,
    parse_keys,
    web_ui_origins,
)
from workers.devserver import temporal_cli
from workers.local_stack import local_stack
from workflows import workflow_runner
from workflows.call_order import CallOrderWorkflow
from workflows.notify import NotificationsReport, notifications_workflow_id

LLM_KEY = "sk-custom-llm-key-7f3a9c1e5b2d"
TOOL_TOKEN = "Bearer tool-token-4e8b2a6c0d1f"
WEBHOOK_SECRET = "whsec_history_test_9d7c5b3a1e"
REPO = Path(__file__).resolve().parent.parent
SECRETS = (LLM_KEY, TOOL_TOKEN, WEBHOOK_SECRET)


def payload(value: object) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode())


async def test_codec_round_trip_hides_the_plaintext_and_passes_old_payloads_through() -> None:
    codec = EncryptionCodec(parse_keys(generate_key()))
    [sealed] = await codec.encode([payload(LLM_KEY)])
    assert sealed.metadata["encoding"] == ENCODING
    assert LLM_KEY.encode() not in sealed.data and LLM_KEY.encode() not in sealed.SerializeToString()
    [opened] = await codec.decode([sealed])
    assert opened == payload(LLM_KEY)
    plain = payload("written before encryption was turned on")
    assert await codec.decode([plain]) == [plain]
    [again] = await codec.encode([payload(LLM_KEY)])
    assert again.data != sealed.data  # a fresh nonce every time


class ContextAsked:
    """A workflow instance as the worker's payload passes see it, counting the contexts asked of it."""

    def __init__(self, context: SerializationContext | None) -> None:
        self.context, self.asked = context, 0

    def get_serialization_context(self, command_info: object) -> SerializationContext | None:
        self.asked += 1
        return self.context

    def get_external_store_context(self, command_info: object) -> None:
        self.asked += 1


class ContextTakingCodec(PayloadCodec, WithSerializationContext):
    def __init__(self, context: SerializationContext | None = None) -> None:
        self.context = context

    def with_context(self, context: SerializationContext) -> ContextTakingCodec:
        return ContextTakingCodec(context)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [Payload(metadata={"context": repr(self.context).encode()}, data=p.data) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


async def test_a_workers_payloads_pass_the_codec_without_asking_the_sandbox_for_an_unused_context() -> None:
    """The worker asks the sandbox for each payload's serialization context before each codec pass
    (an `exec` in the sandbox per payload and pass). The encryption codec takes no context, so
    `workflows.sandbox` skips the asking, with the same result; a codec that takes contexts still gets
    each one. If the SDK moves that code, the import or the count fails here: the skip went inert."""
    from temporalio.worker._workflow import _CommandAwareDataConverter

    workflow_runner()  # what every outdial worker and replayer is built with
    ours = WorkflowSerializationContext(namespace="default", workflow_id="call-1")
    encrypted = data_converter(Settings(codec_key=generate_key()))
    instance = ContextAsked(ours)
    converter = _CommandAwareDataConverter.create(instance, encrypted, encrypted.with_context(ours), ours)  # type: ignore[arg-type]
    sealed = await converter._encode_payload_sequence([payload(LLM_KEY)])
    assert sealed[0].metadata["encoding"] == ENCODING
    assert await converter._external_store_payload_sequence(sealed) == sealed
    assert await converter._decode_payload_sequence(sealed) == [payload(LLM_KEY)]
    assert instance.asked == 0

    activity = ActivitySerializationContext(
        namespace="default", workflow_id="call-1", workflow_type="CallOrderWorkflow",
        activity_type="persist_call", activity_task_queue="call-orders", is_local=False, activity_id="1",
    )  # fmt: skip
    taking = dataclasses.replace(pydantic_data_converter, payload_codec=ContextTakingCodec())
    instance = ContextAsked(activity)
    converter = _CommandAwareDataConverter.create(instance, taking, taking.with_context(ours), ours)  # type: ignore[arg-type]
    [encoded] = await converter._encode_payload_sequence([payload("hello")])
    assert encoded.metadata["context"] == repr(activity).encode() and instance.asked == 1


async def test_key_rotation_new_key_encrypts_old_keys_still_decrypt() -> None:
    old, new = generate_key(), generate_key()
    [sealed_with_old] = await EncryptionCodec(parse_keys(old)).encode([payload("x")])
    rotated = EncryptionCodec(parse_keys(f"{new},{old}"))
    assert await rotated.decode([sealed_with_old]) == [payload("x")]
    [sealed_with_new] = await rotated.encode([payload("x")])
    with pytest.raises(ValueError, match="unknown key id"):
        await EncryptionCodec(parse_keys(old)).decode([sealed_with_new])
    tampered = Payload()
    tampered.CopyFrom(sealed_with_new)
    tampered.data = sealed_with_new.data[:-1] + bytes([sealed_with_new.data[-1] ^ 1])
    with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidTag: integrity, not just secrecy
        await rotated.decode([tampered])


def test_keys_are_32_bytes_in_base64_or_hex() -> None:
    raw = bytes(range(32))
    assert parse_keys(raw.hex()) == [raw]
    assert parse_keys(base64.b64encode(raw).decode()) == [raw]
    assert parse_keys(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == [raw]
    for bad in ("", "short", base64.b64encode(bytes(16)).decode()):
        with pytest.raises(CodecKeyError):
            parse_keys(bad)


def test_codec_is_opt_in_and_the_dev_stack_keeps_its_key(tmp_path: Path) -> None:
    assert data_converter(settings_for_tests()) is pydantic_data_converter
    converter = data_converter(settings_for_tests(codec_key=generate_key()))
    assert isinstance(converter.payload_codec, EncryptionCodec)
    assert converter.payload_converter_class is pydantic_data_converter.payload_converter_class
    first = ensure_dev_codec_key(settings_for_tests(), tmp_path / "codec.key")
    second = ensure_dev_codec_key(settings_for_tests(), tmp_path / "codec.key")
    assert first.codec_key and first.codec_key == second.codec_key
    assert (tmp_path / "codec.key").stat().st_mode & 0o777 == 0o600
    assert "codec_key" not in repr(first) or first.codec_key not in repr(first)


async def test_codec_server_decodes_for_the_web_ui_origin_only_with_auth_and_masks_secrets() -> None:
    codec = EncryptionCodec(parse_keys(generate_key()))
    order = {
        "phone_number": "+33612345678",
        "assistant": {
            "llm_model": {"type": "custom", "api_key": LLM_KEY},
            "custom_tools": [
                {
                    "name": "crm",
                    "headers": [{"key": "Authorization", "value": TOOL_TOKEN}],
                    "query_params": [{"key": "token", "value": TOOL_TOKEN}],
                }
            ],
        },
    }
    [sealed] = await codec.encode([payload(order)])
    body = json.dumps(
        {
            "payloads": [
                {
                    "metadata": {k: base64.b64encode(v).decode() for k, v in sealed.metadata.items()},
                    "data": base64.b64encode(sealed.data).decode(),
                }
            ]
        }
    )
    ui = "http://localhost:8233"
    app = codec_app(codec, allowed_origins=[ui], auth="Bearer operator")
    async with serve_app(app) as base, aiohttp.ClientSession() as http:
        preflight = await http.options(f"{base}/decode", headers={"Origin": ui})
        assert preflight.headers["Access-Control-Allow-Origin"] == ui
        foreign = await http.options(f"{base}/decode", headers={"Origin": "http://evil.example"})
        assert "Access-Control-Allow-Origin" not in foreign.headers
        anonymous = await http.post(f"{base}/decode", data=body, headers={"Origin": ui})
        assert anonymous.status == 401
        decoded = await http.post(
            f"{base}/decode", data=body, headers={"Origin": ui, "Authorization": "Bearer operator"}
        )
        assert decoded.status == 200
        [item] = (await decoded.json())["payloads"]
    shown = json.loads(base64.b64decode(item["data"]))
    assert contains_secret(json.dumps(shown)) == []
    assert shown["phone_number"] == "+33612345678"  # the rest reads as it was
    assert shown["assistant"]["llm_model"] == {"type": "custom", "api_key": f"…{LLM_KEY[-4:]}"}
    [header] = shown["assistant"]["custom_tools"][0]["headers"]
    assert header == {"key": "Authorization", "value": f"…{TOOL_TOKEN[-4:]}"}
    [param] = shown["assistant"]["custom_tools"][0]["query_params"]
    assert param == {"key": "token", "value": f"…{TOOL_TOKEN[-4:]}"}
    [opened] = await codec.decode([sealed])  # a worker's own codec decodes in full
    assert json.loads(opened.data) == order


async def test_codec_server_decodes_an_order_of_two_mb_and_admits_the_configured_web_ui() -> None:
    """An order near Temporal's 2 MB payload limit is some 2.7 MB of base64: aiohttp's default request
    limit (1 MiB) refused it, and the Web UI showed it encrypted. A Web UI other than the dev server's
    (OUTDIAL_TEMPORAL_UI_URL: self-hosted, Temporal Cloud) is admitted too."""
    codec = EncryptionCodec(parse_keys(generate_key()))
    [sealed] = await codec.encode(
        [payload({"phone_number": "+33612345678", "metadata": {"k": "x" * 1_900_000}})]
    )
    item = {
        "metadata": {k: base64.b64encode(v).decode() for k, v in sealed.metadata.items()},
        "data": base64.b64encode(sealed.data).decode(),
    }
    # as written in the setting; the browser sends the origin in lower case, without the default port
    settings = settings_for_tests(temporal_ui_url="https://Temporal.Example.com:443/namespaces/default")
    origins = web_ui_origins(settings)
    assert "https://temporal.example.com" in origins and "http://localhost:8233" in origins
    idn = settings.model_copy(update={"temporal_ui_url": "https://bücher.example/temporal"})
    assert "https://xn--bcher-kva.example" in web_ui_origins(idn)  # its Origin header, as browsers send it
    async with serve_app(codec_app(codec, allowed_origins=origins)) as base, aiohttp.ClientSession() as http:
        decoded = await http.post(f"{base}/decode", json={"payloads": [item]})
        assert decoded.status == 200, await decoded.text()
        preflight = await http.options(f"{base}/decode", headers={"Origin": "https://temporal.example.com"})
        assert preflight.headers["Access-Control-Allow-Origin"] == "https://temporal.example.com"


# --- the history on the real dev server -------------------------------------------------------------


def secret_order(webhook_url: str) -> CallCreateParams:
    """An order whose assistant carries every kind of user secret."""
    return CallCreateParams.model_validate(
        {
            "phone_number": "+33612345678",
            "force_now": True,
            "metadata": {"simulation": "human:interested"},
            "assistant": {
                "prompt": "Offer a demo.",
                "webhook_url": webhook_url,
                "email_notification_address": "ops@example.com",
                "email_notification_outcomes": ["interested"],
                "llm_model": {
                    "type": "custom",
                    "api_url": "https://llm.example.com/v1",
                    "api_key": LLM_KEY,
                    "model_name": "acme/llama",
                },
                "custom_tools": [
                    {
                        "name": "crm_lookup",
                        "description": "Look the callee up in the CRM",
                        "method": "GET",
                        "url": "https://crm.example.com/contacts",
                        "headers": [{"key": "Authorization", "value": TOOL_TOKEN}],
                        "query_params": [],
                        "input_schema": [],
                    }
                ],
            },
        }
    )


async def workflow_show(client: Client, workflow_id: str, *extra: str) -> str:
    """`temporal workflow show` as an operator runs it, JSON and table output both."""
    address = client.service_client.config.target_host
    outputs = []
    for output in (["--output", "json"], ["--detailed"]):
        process = await asyncio.create_subprocess_exec(
            temporal_cli(),
            "workflow",
            "show",
            "--workflow-id",
            workflow_id,
            "--address",
            address,
            "--namespace",
            client.namespace,
            *output,
            *extra,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 0, stderr.decode()
        outputs.append(stdout.decode())
    return "\n".join(outputs)


def contains_secret(text: str) -> list[str]:
    """Secrets in clear, or base64 of their JSON (what the CLI prints for payloads it cannot decode)."""
    found = []
    for secret in SECRETS:
        encoded = [base64.b64encode(json.dumps(secret)[i:].encode()).decode()[4:20] for i in range(3)]
        if secret in text or any(fragment in text for fragment in encoded):
            found.append(secret)
    return found


def like_the_local_stack(tmp_path: Path) -> Settings:
    """temporal-dev.yaml as `outdial dev` reads it, OUTDIAL_WEBHOOK_SECRET set, on free ports."""
    shutil.copy(REPO / "temporal-dev.yaml", tmp_path)  # beside the stack's files (./.outdial)
    settings = Settings.load(
        config_file=tmp_path / "temporal-dev.yaml", env={"OUTDIAL_WEBHOOK_SECRET": WEBHOOK_SECRET}
    )
    port, ui_port, api_port, smtp_port, codec_port = free_ports(5)
    return settings.model_copy(
        update={
            "temporal_address": f"127.0.0.1:{port}",
            "database_url": f"sqlite:///{tmp_path / 'outdial.db'}",
            "dev_server": settings.dev_server.model_copy(update={"port": port, "ui_port": ui_port}),
            "local_stack": settings.local_stack.model_copy(
                update={"api_port": api_port, "smtp_sink_port": smtp_port, "codec_server_port": codec_port}
            ),
        }
    )


async def run_order(client: Client, task_queue: str, base: str) -> tuple[str, Call, NotificationsReport]:
    """The secret order to completion, then its notifications (an abandoned child of the order)."""
    call_id = str(uuid.uuid4())
    call = await client.execute_workflow(
        CallOrderWorkflow.run, secret_order(f"{base}/hook"), id=f"call-{call_id}", task_queue=task_queue
    )
    report = await client.get_workflow_handle(
        notifications_workflow_id(call_id), result_type=NotificationsReport
    ).result()
    return call_id, call, report


async def test_the_local_stack_encrypts_history_and_its_web_ui_decodes_through_the_codec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dev-stack default path: no OUTDIAL_CODEC_KEY, so `outdial dev` makes a key in .outdial/,
    starts the codec server and tells the Web UI; `temporal workflow show` shows no secret in clear."""
    monkeypatch.chdir(tmp_path)  # the stack keeps its files in ./.outdial
    for name in ("OUTDIAL_CODEC_KEY", "OUTDIAL_DEV_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = like_the_local_stack(tmp_path)
    received: list[tuple[str, bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((request.headers["Outdial-Signature"], await request.read()))
        return web.Response(status=204)

    async with (
        serve(lambda app: app.router.add_post("/hook", hook)) as base,
        local_stack(settings, Console(quiet=True)) as stack,
        aiohttp.ClientSession() as http,
    ):
        key_file = tmp_path / ".outdial" / "codec.key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert stack.settings.codec_key == key_file.read_text().strip()
        # Every outdial command run beside temporal-dev.yaml (status, call, a second worker) uses it too.
        assert (
            Settings.load(config_file=tmp_path / "temporal-dev.yaml", env={}).codec_key
            == stack.settings.codec_key
        )
        # The Web UI was started with the codec endpoint, and the codec server admits its origin.
        ui = f"http://localhost:{settings.dev_server.ui_port}"

        async def ui_settings() -> dict:
            try:
                async with http.get(f"{ui}/api/v1/settings") as response:
                    return await response.json() if response.status == 200 else {}
            except aiohttp.ClientError:
                return {}

        shown_to_ui = await eventually(ui_settings, lambda body: bool(body))
        assert shown_to_ui["Codec"]["Endpoint"] == stack.codec_url
        async with http.options(f"{stack.codec_url}/decode", headers={"Origin": ui}) as preflight:
            assert preflight.headers["Access-Control-Allow-Origin"] == ui

        # Control: a client and worker without the codec on the same server do show the secrets in
        # history (so the check below can fail) — but never the webhook secret, looked up at send time.
        plain = Client(
            stack.client.service_client,
            namespace=stack.client.namespace,
            data_converter=pydantic_data_converter,
        )
        plain_settings = stack.settings.model_copy(update={"codec_key": None})
        async with create_worker(plain, task_queue="plain", settings=plain_settings):
            plain_id, _, _ = await run_order(plain, "plain", base)
        shown_plain = await workflow_show(stack.client, f"call-{plain_id}")
        assert set(contains_secret(shown_plain)) == {LLM_KEY, TOOL_TOKEN}

        # The stack's own client and worker: ciphertext only, in the order and in its notifications.
        call_id, call, report = await run_order(stack.client, stack.settings.task_queue, base)
        assert call.status == "completed"
        assert sorted((r.channel, r.status) for r in report.results) == [
            ("email", "sent"),
            ("webhook", "sent"),
        ]
        for workflow_id in (f"call-{call_id}", notifications_workflow_id(call_id)):
            shown = await workflow_show(stack.client, workflow_id)
            assert "binary/encrypted" in shown
            assert contains_secret(shown) == [], workflow_id
        # An operator holding the key reads the history through the stack's codec server.
        # Its secrets stay masked there too: the Web UI shows what this shows.
        decoded = await workflow_show(stack.client, f"call-{call_id}", "--codec-endpoint", stack.codec_url)
        assert "+33612345678" in decoded and f"…{LLM_KEY[-4:]}" in decoded
        assert contains_secret(decoded) == []
        # And so does `outdial status`, which decodes with the key itself.
        env = {
            "TEMPORAL_ADDRESS": stack.settings.temporal_address,
            "OUTDIAL_CODEC_KEY": stack.settings.codec_key,
        }
        printed = await asyncio.to_thread(CliRunner().invoke, app, ["status", call_id], env=env)
        assert printed.exit_code == 0, printed.output
        assert f"…{TOOL_TOKEN[-4:]}" in printed.output and contains_secret(printed.output) == []
        shown_call = Call.model_validate_json(printed.output)  # piped: plain JSON, long lines unwrapped
        assert shown_call.call_attempts[0].transcript == call.call_attempts[0].transcript
        for command in (["status", "no-such-call"], ["cancel", "no-such-call"]):
            unknown = await asyncio.to_thread(CliRunner().invoke, app, command, env=env)
            assert unknown.exit_code == 2 and "no call order no-such-call" in unknown.output, unknown.output
        ended = await asyncio.to_thread(CliRunner().invoke, app, ["cancel", call_id], env=env)
        assert ended.exit_code == 2, ended.output  # as the API's 409
        assert f"call {call_id} is completed; it can no longer be cancelled" in ended.output
        # Without the workers' key (another directory, another machine): one line, not a traceback.
        for command in (["status", call_id], ["pause", call_id]):
            for key in ("plaintext", generate_key()):
                alien = {**env, "OUTDIAL_CODEC_KEY": key, "OUTDIAL_CONFIG": "/dev/null"}
                keyless = await asyncio.to_thread(CliRunner().invoke, app, command, env=alien)
                assert keyless.exit_code == 1, keyless.output
                assert keyless.output.strip().splitlines() == [
                    f"call order {call_id}'s payloads are encrypted with a key this process does not have "
                    f"({keyless.output.split('(', 1)[1].split(')', 1)[0]}): set OUTDIAL_CODEC_KEY to the "
                    "workers' (beside temporal-dev.yaml, the CLI reads the one `outdial dev` made)"
                ], keyless.output
        # The outcome email reached the stack's SMTP sink.
        assert stack.mail is not None
        [*_, mail] = stack.mail.messages
        assert (mail["To"], mail["Subject"]) == (
            "ops@example.com",
            "[outdial] interested: call to +33612345678",
        )

    # The receiver got a signed event (OUTDIAL_WEBHOOK_SECRET signs the local organization's webhooks),
    # and the webhook itself carries no secret of the assistant.
    assert stack.webhook_secret == WEBHOOK_SECRET
    signature, body = received[-1]
    assert verify_signature(WEBHOOK_SECRET, signature, body)
    assert contains_secret(body.decode()) == []


@pytest.mark.parametrize("command", [["worker"], ["api"], ["call", "--to", "+33612345678"]])
def test_a_worker_api_or_order_without_a_key_refuses_to_write_secrets_in_clear(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTDIAL_CONFIG", "/dev/null")  # no local stack key beside it
    monkeypatch.delenv("OUTDIAL_CODEC_KEY", raising=False)
    refused = CliRunner().invoke(app, command)
    assert refused.exit_code == 2 and "OUTDIAL_CODEC_KEY is not set" in refused.output
    assert f"OUTDIAL_CODEC_KEY={PLAINTEXT_HISTORY}" in refused.output


@pytest.mark.parametrize(("content", "says"), [(None, "does not exist"), ("{not json", "is not JSON")])
def test_an_order_file_missing_or_not_json_is_a_one_line_refusal(
    content: str | None, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTDIAL_CONFIG", "/dev/null")
    monkeypatch.setenv("OUTDIAL_CODEC_KEY", PLAINTEXT_HISTORY)
    order = tmp_path / "order.json"
    if content is not None:
        order.write_text(content)
    refused = CliRunner().invoke(app, ["call", "--json", str(order)])
    assert refused.exit_code == 2 and says in " ".join(refused.output.split()), refused.output
    assert refused.exception is None or isinstance(refused.exception, SystemExit)


def test_outdial_codec_keygen_prints_a_key_the_settings_take() -> None:
    printed = CliRunner().invoke(app, ["codec", "keygen"])
    assert printed.exit_code == 0, printed.output
    key = printed.output.strip()
    settings = Settings.load(config_file="/nonexistent", env={"OUTDIAL_CODEC_KEY": key})
    assert settings.codec_key == key and data_converter(settings).payload_codec is not None


def test_plaintext_history_is_an_explicit_choice() -> None:
    chosen = Settings.load(config_file="/nonexistent", env={"OUTDIAL_CODEC_KEY": "plaintext"})
    assert (chosen.codec_key, chosen.plaintext_history) == (None, True)
    assert data_converter(chosen).payload_codec is None
    keyed = Settings.load(config_file="/nonexistent", env={"OUTDIAL_CODEC_KEY": generate_key()})
    assert keyed.codec_key and not keyed.plaintext_history


def beside(dev_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **update: Any) -> Settings:
    """The local stack's settings for a Temporal already running (the tests' dev server)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OUTDIAL_DEV_API_KEY", raising=False)
    return like_the_local_stack(tmp_path).model_copy(
        update={
            "temporal_address": dev_env.client.service_client.config.target_host,
            "temporal_namespace": dev_env.client.namespace,
            "task_queue": f"stack-{uuid.uuid4()}",
            **update,
        }
    )


async def test_a_stack_on_a_temporal_already_running_links_no_web_ui_it_does_not_know(
    dev_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`outdial dev` beside a Temporal already running printed the dev server's UI port, where no UI
    answers (that server has its own), and notifications linked there: unless OUTDIAL_TEMPORAL_UI_URL
    says where it is, no link."""
    settings = beside(dev_env, tmp_path, monkeypatch)
    async with local_stack(settings, Console(quiet=True)) as stack:
        assert stack.settings.temporal_ui_url is None
        assert stack.ui_url().startswith("that of the Temporal already running (set OUTDIAL_TEMPORAL_UI_URL")
    given = settings.model_copy(update={"temporal_ui_url": "http://ui.example:8080/"})
    async with local_stack(given, Console(quiet=True)) as stack:
        assert stack.ui_url() == f"http://ui.example:8080/namespaces/{dev_env.client.namespace}/workflows"


async def test_the_local_stack_warns_when_the_openai_analyzer_has_no_default_key(
    dev_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`outdial dev` with OUTDIAL_ANALYZER=openai and no key started without a word, as the worker did,
    and every answered call ended without its outcome."""
    no_key = {"analyzer": "openai", "openai_api_key": None, "openai_base_url": None}
    console = Console(record=True, width=400)
    async with local_stack(beside(dev_env, tmp_path, monkeypatch, **no_key), console):
        pass
    assert "the openai analyzer has no OPENAI_API_KEY (nor OPENAI_BASE_URL)" in console.export_text()
