"""Runtime configuration: environment first, then temporal-dev.yaml, then built-in defaults (12-factor)."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from models.common import error_summary, written_number

DEFAULT_CONFIG_FILE = "temporal-dev.yaml"

# The value of OUTDIAL_CODEC_KEY that turns encryption off on purpose.
PLAINTEXT_HISTORY = "plaintext"


def _without_colon(organization_id: str) -> str:
    if ":" in organization_id:
        raise ValueError("must not contain ':' (it separates an organization from its concurrency keys)")
    return organization_id


# An organization's id: its concurrency key `k` is `<organization id>:k`, so a ':' in it would share
# another organization's key (org "a:b" saying "k" and org "a" saying "b:k").
OrganizationId = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_without_colon)]


def config_file_shown() -> str:
    """The configuration file as a message should name it: $OUTDIAL_CONFIG's, else temporal-dev.yaml."""
    named = os.environ.get("OUTDIAL_CONFIG")
    if named == os.devnull:
        return "a config file (OUTDIAL_CONFIG is /dev/null: none is read)"
    return named or DEFAULT_CONFIG_FILE


class ConfigError(ValueError):
    """The configuration (environment, then temporal-dev.yaml) cannot be used; the message says why in a
    line, for the CLI to show instead of a traceback."""


def _read_config(path: Path) -> dict[str, Any]:
    """temporal-dev.yaml's settings ({} without the file); a ConfigError says what is wrong with it."""
    if not path.is_file():
        return {}
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:  # there but unreadable (its mode, say)
        raise ConfigError(f"{path} cannot be read: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
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
    api_key_file: str = ".outdial/dev-api-key"  # the local organization's key, kept (0600) across runs
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
    organization_id: OrganizationId = "org_local"
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
    # After the call: analysis, notifications, payload encryption (SOURCES names their variables).
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
    # the deployment's own organization's connections; [org id/]connection_id -> bot token (connection_token)
    slack_bot_token: str | None = Field(default=None, repr=False)
    slack_tokens: dict[str, str] = Field(default_factory=dict, repr=False)
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

    @field_validator("default_from_phone_number")
    @classmethod
    def _caller_id(cls, number: str, info: ValidationInfo) -> str:
        """As E.164 writes it (`+33 1 59 00 00 00` is `+33159000000`), as the organization's numbers are
        stored: else it was kept as written, dialled as such, and no order could name it. With real
        telephony, an assigned number (a fictional one does for simulated callees)."""
        return written_number(number, assigned=info.data.get("telephony") == "livekit")

    @field_validator("livekit_sip_trunks")
    @classmethod
    def _trunk_numbers(cls, trunks: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        """Its numbers as E.164 writes them, as the caller ids they are looked up by: a key written
        otherwise (`+330159000000`, `+1 415 555 0100`) never matched, and its calls took the default trunk."""
        numbers: dict[str, str] = {}
        for written, trunk in trunks.items():
            number = written_number(written, assigned=info.data.get("telephony") == "livekit")
            if numbers.setdefault(number, trunk) != trunk:
                raise ValueError(f"{number} is given twice, with two trunks")
            numbers[number] = trunk
        return numbers

    @field_validator("livekit_url")
    @classmethod
    def _livekit_url(cls, url: str | None) -> str | None:
        """livekit-api needs the scheme: without it every request fails, and was retried for hours."""
        if url and not url.startswith(("wss://", "ws://", "https://", "http://")):
            raise ValueError(f"must start with wss:// (or ws://, https://, http://), e.g. wss://{url}")
        return url

    @classmethod
    def load(cls, config_file: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
        """Read `config_file` (default: $OUTDIAL_CONFIG or ./temporal-dev.yaml, if present), then env.
        A value that cannot be used is a ConfigError naming where it was read: its variable or its key."""
        env = dict(os.environ if env is None else env)
        path = Path(config_file or env.get("OUTDIAL_CONFIG") or DEFAULT_CONFIG_FILE)
        if not config_file and env.get("OUTDIAL_CONFIG") and not path.exists():  # a typo, not "no file"
            raise ConfigError(f"OUTDIAL_CONFIG names {path}, which does not exist (/dev/null: no file)")
        raw = _anchored(_read_config(path), path.parent)
        if unknown := _unknown_keys(raw):
            raise ConfigError(f"{path}: {unknown}")
        values: dict[str, Any] = {}
        origins: dict[str, str] = {}  # setting -> where its value was read, for the errors
        for name, (variable, key) in SOURCES.items():
            if variable and env.get(variable):
                values[name], origins[name] = _from_env(name, variable, env[variable]), variable
            elif key and (found := _lookup(raw, key, path)) is not None:
                values[name], origins[name] = found, key
        if not env.get("OUTDIAL_ANALYZER") and env.get("OPENAI_API_KEY"):
            values["analyzer"], origins["analyzer"] = "openai", "OPENAI_API_KEY"
        if _plaintext(env):
            values.pop("codec_key", None)
            values["plaintext_history"] = True
        elif "codec_key" not in values and (key_file := _lookup(raw, "local_stack.codec_key_file", path)):
            values["codec_key"] = _local_codec_key(str(key_file))
        try:
            return cls.model_validate({k: v for k, v in values.items() if v is not None})
        except ValidationError as err:
            sources = f"the environment, then {path}" if path.is_file() else "the environment"
            errors = [{**e, "loc": _named(e["loc"], origins)} for e in err.errors(include_url=False)]
            raise ConfigError(f"invalid configuration ({sources}): {error_summary(errors)}") from None


# Where each setting is read: its environment variable first, then its key in temporal-dev.yaml
# (None: not read there). OPENAI_API_KEY alone also picks the openai analyzer; the codec key falls back to
# the local stack's key file.
SOURCES: dict[str, tuple[str | None, str | None]] = {
    "temporal_address": ("TEMPORAL_ADDRESS", "temporal.address"),
    "temporal_namespace": ("TEMPORAL_NAMESPACE", "temporal.namespace"),
    "task_queue": ("OUTDIAL_TASK_QUEUE", "temporal.task_queue"),
    "dev_server": (None, "temporal.dev_server"),
    "local_stack": (None, "local_stack"),
    "search_attributes": (None, "search_attributes"),
    "telephony": ("OUTDIAL_TELEPHONY", "providers.telephony"),
    "analyzer": ("OUTDIAL_ANALYZER", "providers.analyzer"),
    "database_url": ("OUTDIAL_DATABASE_URL", "database_url"),
    "organization_id": ("OUTDIAL_ORGANIZATION_ID", "organization.id"),
    "default_from_phone_number": (None, "organization.default_from_phone_number"),
    "livekit_url": ("LIVEKIT_URL", "livekit.url"),
    "livekit_api_key": ("LIVEKIT_API_KEY", "livekit.api_key"),
    "livekit_api_secret": ("LIVEKIT_API_SECRET", "livekit.api_secret"),
    "livekit_sip_outbound_trunk_id": ("LIVEKIT_SIP_OUTBOUND_TRUNK_ID", "livekit.sip_outbound_trunk_id"),
    "livekit_sip_trunks": ("LIVEKIT_SIP_TRUNKS", "livekit.sip_trunks"),
    "livekit_agent_name": ("OUTDIAL_LIVEKIT_AGENT_NAME", "livekit.agent_name"),
    "livekit_ringing_timeout_secs": ("OUTDIAL_LIVEKIT_RINGING_TIMEOUT_SECS", "livekit.ringing_timeout_secs"),
    "simulated_ring_ledger": ("OUTDIAL_SIMULATED_RING_LEDGER", None),
    "max_cached_workflows": ("OUTDIAL_MAX_CACHED_WORKFLOWS", "temporal.max_cached_workflows"),
    "openai_api_key": ("OPENAI_API_KEY", None),
    "openai_base_url": ("OPENAI_BASE_URL", None),
    "analysis_model": ("OUTDIAL_ANALYSIS_MODEL", None),
    "openrouter_api_key": ("OPENROUTER_API_KEY", None),
    "openrouter_base_url": ("OPENROUTER_BASE_URL", None),
    "allow_private_urls": ("OUTDIAL_ALLOW_PRIVATE_URLS", "notifications.allow_private_urls"),
    "webhook_secret": ("OUTDIAL_WEBHOOK_SECRET", "notifications.webhook_secret"),
    "smtp_host": ("OUTDIAL_SMTP_HOST", "notifications.smtp_host"),
    "smtp_port": ("OUTDIAL_SMTP_PORT", "notifications.smtp_port"),
    "smtp_username": ("OUTDIAL_SMTP_USERNAME", None),
    "smtp_password": ("OUTDIAL_SMTP_PASSWORD", None),
    "smtp_tls": ("OUTDIAL_SMTP_TLS", "notifications.smtp_tls"),
    "smtp_from": ("OUTDIAL_SMTP_FROM", "notifications.smtp_from"),
    "sms_provider": ("OUTDIAL_SMS", "notifications.sms_provider"),
    "sms_from_phone_number": ("OUTDIAL_SMS_FROM", "notifications.sms_from_phone_number"),
    "sms_outbox": ("OUTDIAL_SMS_OUTBOX", "notifications.sms_outbox"),
    "twilio_account_sid": ("TWILIO_ACCOUNT_SID", None),
    "twilio_auth_token": ("TWILIO_AUTH_TOKEN", None),
    "twilio_base_url": ("OUTDIAL_TWILIO_BASE_URL", None),
    "slack_provider": ("OUTDIAL_SLACK", "notifications.slack_provider"),
    "slack_bot_token": ("SLACK_BOT_TOKEN", None),
    "slack_tokens": ("OUTDIAL_SLACK_TOKENS", None),
    "slack_base_url": ("OUTDIAL_SLACK_BASE_URL", None),
    "slack_outbox": ("OUTDIAL_SLACK_OUTBOX", "notifications.slack_outbox"),
    "temporal_ui_url": ("OUTDIAL_TEMPORAL_UI_URL", "temporal.ui_url"),
    "codec_key": ("OUTDIAL_CODEC_KEY", None),
    "campaign_rows_per_second": ("OUTDIAL_CAMPAIGN_ROWS_PER_SECOND", None),
    "campaign_burst": ("OUTDIAL_CAMPAIGN_BURST", None),
    "concurrency_default_max": ("OUTDIAL_CONCURRENCY_DEFAULT_MAX", None),
    "concurrency_max_waiters": ("OUTDIAL_CONCURRENCY_MAX_WAITERS", None),
}


def _named(loc: tuple[int | str, ...], origins: dict[str, str]) -> tuple[int | str, ...]:
    """An error's location with its setting named as the user wrote it: `OUTDIAL_TELEPHONY`, or
    `temporal.dev_server` (then `.port`)."""
    return (origins.get(str(loc[0]), loc[0]), *loc[1:]) if loc else loc


def _from_env(name: str, variable: str, text: str) -> Any:
    """An environment variable's text as its setting takes it: `a=x,b=y` pairs for the maps of trunks and
    tokens (pydantic reads the rest: `1`/`true`/`on` for a flag, digits for a number)."""
    if name in ("livekit_sip_trunks", "slack_tokens"):
        return _pairs(variable, text)
    return text.strip() if name == "allow_private_urls" else text


# The file's relative paths (the local stack's state), and a relative SQLite database_url's.
_PATH_KEYS = (
    ("temporal", "dev_server", "db_filename"),
    ("local_stack", "mail_dir"),
    ("local_stack", "codec_key_file"),
    ("local_stack", "api_key_file"),
    ("notifications", "sms_outbox"),
    ("notifications", "slack_outbox"),
)
_SQLITE_FILE = re.compile(r"(sqlite(?:\+\w+)?:///)(?!/|:memory:|file:)([^?]+)")  # a relative file, not a URI


def _anchored(raw: dict[str, Any], directory: Path) -> dict[str, Any]:
    """The config's relative paths read from its own directory, as `outdial dev` run beside it means
    them: a command run elsewhere with OUTDIAL_CONFIG used a database, a codec key and a webhook secret
    of its own, new and empty, in its working directory."""
    base = directory.resolve()
    if base == Path.cwd().resolve():
        return raw  # beside it: the paths stay as written
    stack = raw.get("local_stack")
    if isinstance(stack, dict) and "api_key_file" not in stack:  # a file written before it had the line
        stack["api_key_file"] = LocalStackSettings.model_fields["api_key_file"].default
    for *sections, name in _PATH_KEYS:
        holder: Any = raw
        for section in sections:
            holder = holder.get(section) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and isinstance(holder.get(name), str) and holder[name]:
            holder[name] = str(base / holder[name])  # an absolute path stays as it is
    url = raw.get("database_url")
    if isinstance(url, str) and (relative := _SQLITE_FILE.match(url)):
        try:
            directory = quote(str(base))  # a `%20` or `?` in a folder's name is no escape, no query
        except UnicodeEncodeError:  # a name in no encoding (its bytes as surrogates): as it is
            directory = str(base)
        raw["database_url"] = f"{relative[1]}{directory}/{relative[2]}{url[relative.end() :]}"
    return raw


def _config_keys() -> set[str]:
    """Every key temporal-dev.yaml may hold, dotted (the sections' own settings included)."""
    keys = {key for _, key in SOURCES.values() if key}
    keys |= {f"temporal.dev_server.{name}" for name in DevServerSettings.model_fields}
    keys |= {f"local_stack.{name}" for name in LocalStackSettings.model_fields}
    return keys


_OWN_NAMES = ("search_attributes", "livekit.sip_trunks")  # mappings of the user's own names


def _unknown_keys(raw: dict[str, Any], prefix: str = "", keys: set[str] | None = None) -> str | None:
    """What is wrong with the first key temporal-dev.yaml has that no setting reads, or None: a
    misspelt one (`adress`, `api_prot`) left its setting at its default without a word."""
    keys = _config_keys() if keys is None else keys
    for name, value in raw.items():
        key = f"{prefix}{name}"
        if "." in str(name):  # (the user's own names, under `_OWN_NAMES`, are not looked into)
            first, rest = str(name).split(".", 1)  # as messages write a setting, but the file nests them
            return f"{key} is read nested: write `{first}:`, then `{rest}` under it"
        section = any(known.startswith(f"{key}.") for known in keys)
        if key in _OWN_NAMES or (key in keys and not section):
            continue
        if section:  # (empty: none of its settings; not a mapping: `_lookup` says so)
            if isinstance(value, dict) and (found := _unknown_keys(value, f"{key}.", keys)):
                return found
        else:
            close = difflib.get_close_matches(key, sorted(keys), n=1)
            return f"{key} is not a setting" + (f" (did you mean {close[0]}?)" if close else "")
    return None


def _lookup(raw: dict[str, Any], key: str, path: Path) -> Any:
    """temporal-dev.yaml's value at a dotted key (None when absent, or under an empty section); a
    section that is not a mapping is a ConfigError naming it."""
    value: Any = raw
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ConfigError(f"{'.'.join(parts[:depth])} in {path} is not a mapping of settings")
        value = value.get(part)
    return value


def _plaintext(env: dict[str, str]) -> bool:
    return env.get("OUTDIAL_CODEC_KEY", "").strip().lower() == PLAINTEXT_HISTORY


def _local_codec_key(key_file: str) -> str | None:
    """The local stack's key file, once `outdial dev` made it: every outdial process started beside
    temporal-dev.yaml (the CLI, a second worker) then reads and writes the same encrypted payloads."""
    try:
        return Path(key_file).read_text().strip() or None
    except OSError:
        return None


def connection_token(
    tokens: dict[str, str], default: str | None, organization_id: str, connection_id: str, home: str
) -> str | None:
    """The token of an organization's Slack or Calendly connection. An `<organization id>/<connection
    id>` entry serves that organization alone; a bare `<connection id>` entry and the default token
    serve the deployment's own organization (`organization.id`) alone: another organization naming the
    connection would act as its owner (post to its channels, book in its calendar)."""
    if "/" in connection_id:  # `org_b/conn_b` named as a connection: another's entry, never one's own
        return None
    scoped = tokens.get(f"{organization_id}/{connection_id}")
    if scoped or organization_id != home:
        return scoped
    return tokens.get(connection_id) or default


def _pairs(variable: str, text: str) -> dict[str, str]:
    """`a=x,b=y` -> {a: x, b: y}: LIVEKIT_SIP_TRUNKS (`+33159000000=ST_abc,...`: from-number -> outbound
    trunk id) and OUTDIAL_SLACK_TOKENS (connection_id -> bot token). An item that is not `a=x` is a
    ConfigError saying which, without its text (it may hold a token)."""
    pairs: dict[str, str] = {}
    for position, item in enumerate(text.split(","), start=1):
        name, equals, value = (part.strip() for part in item.partition("="))
        if not (name or equals or value):  # an empty item (`a=x,`)
            continue
        if not (name and equals and value):
            raise ConfigError(f"{variable}: item {position} is not of the form name=value")
        pairs[name] = value
    return pairs
