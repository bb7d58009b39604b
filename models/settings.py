"""Runtime configuration: environment first, then temporal-dev.yaml, then built-in defaults (12-factor)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError

from models.common import error_summary

DEFAULT_CONFIG_FILE = "temporal-dev.yaml"

# The value of OUTDIAL_CODEC_KEY that turns encryption off on purpose.
PLAINTEXT_HISTORY = "plaintext"


class ConfigError(ValueError):
    """The configuration (environment, then temporal-dev.yaml) cannot be used; the message says why in a
    line, for the CLI to show instead of a traceback."""


def _read_config(path: Path) -> dict[str, Any]:
    """temporal-dev.yaml's settings ({} without the file); a ConfigError says what is wrong with it."""
    if not path.is_file():
        return {}
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{path} is not valid YAML: {getattr(err, 'problem', None) or err}{where}"
        ) from None
    if not isinstance(raw, dict | None):
        raise ConfigError(f"{path} is not a YAML mapping of settings")
    return raw or {}


class DevServerSettings(BaseModel):
    db_filename: str = ".outdial/temporal.db"
    ip: str = "127.0.0.1"
    port: int = 7233
    ui_port: int = 8233
    log_level: str = "error"
    headless: bool = False  # no Web UI (tests, benchmarks)


class LocalStackSettings(BaseModel):
    """What `outdial dev` / `make demo` run beside the dev server, on 127.0.0.1 (temporal-dev.yaml's
    `local_stack`); never used by `outdial worker` or `outdial api`."""

    api_port: int = 8000
    smtp_sink_port: int = 1025  # outcome emails land here, unless OUTDIAL_SMTP_HOST names a real server
    mail_dir: str = ".outdial/mail"
    codec_server_port: int = 8234  # the Web UI decodes payloads through it (--ui-codec-endpoint)
    codec_key_file: str = ".outdial/codec.key"  # made once (0600) unless OUTDIAL_CODEC_KEY is set
    allow_private_urls: bool = True  # webhooks and tools may reach local receivers


class Settings(BaseModel):
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = "call-orders"
    dev_server: DevServerSettings = Field(default_factory=DevServerSettings)
    local_stack: LocalStackSettings = Field(default_factory=LocalStackSettings)
    search_attributes: dict[str, str] = Field(default_factory=dict)
    telephony: Literal["simulated", "livekit"] = "simulated"
    analyzer: Literal["simulated", "openai"] = "simulated"
    database_url: str = "sqlite:///.outdial/outdial.db"
    organization_id: str = "org_local"
    default_from_phone_number: str = "+33159000000"
    # LiveKit telephony (OUTDIAL_TELEPHONY=livekit): livekit-api's own variable names, plus the outbound
    # SIP trunk per caller id (from-number -> trunk id; LIVEKIT_SIP_TRUNKS="+3315...=ST_a,+1...=ST_b").
    livekit_url: str | None = None
    livekit_api_key: str | None = None
    livekit_api_secret: SecretStr | None = None
    livekit_sip_outbound_trunk_id: str | None = None
    livekit_sip_trunks: dict[str, str] = Field(default_factory=dict)
    livekit_agent_name: str = "outdial-agent"
    livekit_ringing_timeout_secs: float = Field(default=30, gt=0, le=90)
    # After the call: analysis, notifications, payload encryption (see _post_call_values for env names).
    openai_api_key: str | None = Field(default=None, repr=False)
    openai_base_url: str | None = None
    analysis_model: str = "gpt-4.1"  # for assistants whose llm_model is not OpenAI-compatible
    analysis_max_invalid_replies: int = Field(default=3, ge=1)  # schema-invalid replies before giving up
    analysis_timeout_seconds: float = Field(default=45, gt=0)
    openrouter_api_key: str | None = Field(default=None, repr=False)
    openrouter_base_url: str = "https://openrouter.ai/api/v1"
    allow_private_urls: bool = False  # user URLs may reach loopback/private ranges (dev stack, tests)
    webhook_secret: str | None = Field(default=None, repr=False)
    smtp_host: str | None = None  # None: no outcome emails
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: str | None = Field(default=None, repr=False)
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    smtp_from: str = "outdial <notifications@outdial.localhost>"
    sms_provider: Literal["simulated", "twilio"] = "simulated"
    sms_from_phone_number: str | None = None  # None: the call's caller id
    sms_outbox: str | None = None  # simulated SMS: a JSON-lines file to append to (None: memory only)
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = Field(default=None, repr=False)
    twilio_base_url: str = "https://api.twilio.com"
    slack_provider: Literal["simulated", "slack"] = "simulated"
    slack_bot_token: str | None = Field(default=None, repr=False)  # for any connection_id not in slack_tokens
    slack_tokens: dict[str, str] = Field(default_factory=dict, repr=False)  # connection_id -> bot token
    slack_base_url: str = "https://slack.com/api/"
    slack_outbox: str | None = None  # simulated Slack: a JSON-lines file to append to (None: memory only)
    # Where a notification links a call (Slack's {{call_url}}): its workflow in this Temporal Web UI.
    temporal_ui_url: str | None = None
    codec_key: str | None = Field(default=None, repr=False)  # payload encryption; None: off
    # OUTDIAL_CODEC_KEY=plaintext: the operator's explicit choice to run `outdial worker`/`api` unencrypted.
    plaintext_history: bool = False
    # The simulated trunk's ring ledger: a JSON-lines file of every ring, shared by worker processes.
    simulated_ring_ledger: str | None = None
    # The worker's workflow cache (None: the SDK's default, 1000); bounds memory with many open orders.
    max_cached_workflows: int | None = Field(default=None, ge=0)
    # Campaigns: how fast a launch starts its rows' orders (token bucket, workflows/pacing.py).
    campaign_rows_per_second: float = Field(default=20.0, gt=0)
    campaign_burst: int = Field(default=50, ge=1)
    # The limit of a concurrency key no order gave a `max` for (the newer client sends only the key).
    concurrency_default_max: int = Field(default=1, ge=1)
    # How many orders may wait for one key's permits; more are deferred and ask again later.
    concurrency_max_waiters: int = Field(default=15_000, ge=1)

    @classmethod
    def load(cls, config_file: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
        """Read `config_file` (default: $OUTDIAL_CONFIG or ./temporal-dev.yaml, if present), then env."""
        env = dict(os.environ if env is None else env)
        path = Path(config_file or env.get("OUTDIAL_CONFIG") or DEFAULT_CONFIG_FILE)
        raw = _read_config(path)
        temporal = raw.get("temporal", {})
        providers = raw.get("providers", {})
        organization = raw.get("organization", {})
        livekit = raw.get("livekit", {})
        values: dict[str, Any] = {
            "temporal_address": env.get("TEMPORAL_ADDRESS") or temporal.get("address"),
            "temporal_namespace": env.get("TEMPORAL_NAMESPACE") or temporal.get("namespace"),
            "task_queue": env.get("OUTDIAL_TASK_QUEUE") or temporal.get("task_queue"),
            "dev_server": temporal.get("dev_server"),
            "local_stack": raw.get("local_stack"),
            "search_attributes": raw.get("search_attributes"),
            "telephony": env.get("OUTDIAL_TELEPHONY") or providers.get("telephony"),
            "analyzer": env.get("OUTDIAL_ANALYZER")
            or ("openai" if env.get("OPENAI_API_KEY") else None)
            or providers.get("analyzer"),
            "database_url": env.get("OUTDIAL_DATABASE_URL") or raw.get("database_url"),
            "organization_id": organization.get("id"),
            "default_from_phone_number": organization.get("default_from_phone_number"),
            "livekit_url": env.get("LIVEKIT_URL") or livekit.get("url"),
            "livekit_api_key": env.get("LIVEKIT_API_KEY") or livekit.get("api_key"),
            "livekit_api_secret": env.get("LIVEKIT_API_SECRET") or livekit.get("api_secret"),
            "livekit_sip_outbound_trunk_id": env.get("LIVEKIT_SIP_OUTBOUND_TRUNK_ID")
            or livekit.get("sip_outbound_trunk_id"),
            "livekit_sip_trunks": _pairs(env.get("LIVEKIT_SIP_TRUNKS")) or livekit.get("sip_trunks"),
            "livekit_agent_name": env.get("OUTDIAL_LIVEKIT_AGENT_NAME") or livekit.get("agent_name"),
            "livekit_ringing_timeout_secs": env.get("OUTDIAL_LIVEKIT_RINGING_TIMEOUT_SECS")
            or livekit.get("ringing_timeout_secs"),
            "simulated_ring_ledger": env.get("OUTDIAL_SIMULATED_RING_LEDGER"),
            "max_cached_workflows": env.get("OUTDIAL_MAX_CACHED_WORKFLOWS")
            or temporal.get("max_cached_workflows"),
            **_post_call_values(env, raw),
        }
        try:
            return cls.model_validate({k: v for k, v in values.items() if v is not None})
        except ValidationError as err:
            problems = error_summary(err.errors(include_url=False))
            sources = f"the environment, then {path}" if path.is_file() else "the environment"
            raise ConfigError(f"invalid configuration ({sources}): {problems}") from None


def _post_call_values(env: dict[str, str], raw: dict[str, Any]) -> dict[str, Any]:
    """Analysis, notification and codec settings: env first, then temporal-dev.yaml's `notifications`."""
    notifications = raw.get("notifications", {}) or {}
    private = env.get("OUTDIAL_ALLOW_PRIVATE_URLS")
    return {
        "openai_api_key": env.get("OPENAI_API_KEY"),
        "openai_base_url": env.get("OPENAI_BASE_URL"),
        "analysis_model": env.get("OUTDIAL_ANALYSIS_MODEL"),
        "openrouter_api_key": env.get("OPENROUTER_API_KEY"),
        "openrouter_base_url": env.get("OPENROUTER_BASE_URL"),
        "allow_private_urls": private.strip().lower() in ("1", "true", "yes", "on")
        if private is not None
        else notifications.get("allow_private_urls"),
        "webhook_secret": env.get("OUTDIAL_WEBHOOK_SECRET") or notifications.get("webhook_secret"),
        "smtp_host": env.get("OUTDIAL_SMTP_HOST") or notifications.get("smtp_host"),
        "smtp_port": env.get("OUTDIAL_SMTP_PORT") or notifications.get("smtp_port"),
        "smtp_username": env.get("OUTDIAL_SMTP_USERNAME"),
        "smtp_password": env.get("OUTDIAL_SMTP_PASSWORD"),
        "smtp_tls": env.get("OUTDIAL_SMTP_TLS") or notifications.get("smtp_tls"),
        "smtp_from": env.get("OUTDIAL_SMTP_FROM") or notifications.get("smtp_from"),
        "sms_provider": env.get("OUTDIAL_SMS") or notifications.get("sms_provider"),
        "sms_from_phone_number": env.get("OUTDIAL_SMS_FROM") or notifications.get("sms_from_phone_number"),
        "sms_outbox": env.get("OUTDIAL_SMS_OUTBOX") or notifications.get("sms_outbox"),
        "twilio_account_sid": env.get("TWILIO_ACCOUNT_SID"),
        "twilio_auth_token": env.get("TWILIO_AUTH_TOKEN"),
        "twilio_base_url": env.get("OUTDIAL_TWILIO_BASE_URL"),
        "slack_provider": env.get("OUTDIAL_SLACK") or notifications.get("slack_provider"),
        "slack_bot_token": env.get("SLACK_BOT_TOKEN"),
        "slack_tokens": _pairs(env.get("OUTDIAL_SLACK_TOKENS")),  # conn_a=xoxb-...,conn_b=xoxb-...
        "slack_base_url": env.get("OUTDIAL_SLACK_BASE_URL"),
        "slack_outbox": env.get("OUTDIAL_SLACK_OUTBOX") or notifications.get("slack_outbox"),
        "temporal_ui_url": env.get("OUTDIAL_TEMPORAL_UI_URL") or (raw.get("temporal") or {}).get("ui_url"),
        "codec_key": None if _plaintext(env) else env.get("OUTDIAL_CODEC_KEY") or _local_codec_key(raw),
        "plaintext_history": _plaintext(env),
        "campaign_rows_per_second": env.get("OUTDIAL_CAMPAIGN_ROWS_PER_SECOND"),
        "campaign_burst": env.get("OUTDIAL_CAMPAIGN_BURST"),
        "concurrency_default_max": env.get("OUTDIAL_CONCURRENCY_DEFAULT_MAX"),
        "concurrency_max_waiters": env.get("OUTDIAL_CONCURRENCY_MAX_WAITERS"),
    }


def _plaintext(env: dict[str, str]) -> bool:
    return env.get("OUTDIAL_CODEC_KEY", "").strip().lower() == PLAINTEXT_HISTORY


def _local_codec_key(raw: dict[str, Any]) -> str | None:
    """The local stack's key file, once `outdial dev` made it: every outdial process started beside
    temporal-dev.yaml (the CLI, a second worker) then reads and writes the same encrypted payloads."""
    path = (raw.get("local_stack") or {}).get("codec_key_file")
    if not path:
        return None
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def _pairs(text: str | None) -> dict[str, str] | None:
    """`a=x,b=y` -> {a: x, b: y}: LIVEKIT_SIP_TRUNKS (`+33159000000=ST_abc,...`: from-number -> outbound
    trunk id) and OUTDIAL_SLACK_TOKENS (connection_id -> bot token)."""
    if not text:
        return None
    pairs = (item.split("=", 1) for item in text.split(",") if "=" in item)
    return {number.strip(): trunk.strip() for number, trunk in pairs}
