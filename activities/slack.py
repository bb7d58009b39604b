"""Slack after a call (the official client's `assistant.slack`): the message, and who posts it.

Posters: `SlackWebApi` (Slack's `chat.postMessage` through slack_sdk, with the bot token of the
assistant's `connection_id`) and `SimulatedSlack` (the default: keeps messages in memory and, when
configured, appends them to a JSON-lines file). Slack has no idempotency key, so a post is at least
once: the workflow posts to each channel in its own activity, and only what failed is retried.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import aiohttp
from pydantic import BaseModel, Field
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.exceptions import ApplicationError

from activities.outbox import Outbox
from agent.prompt import interpolate
from models.call import Call
from models.settings import Settings, connection_token

# Slack refused the post for good (unknown channel, bot not in it, bad token)
SLACK_REJECTED = "SlackRejected"
SLACK_NOT_CONFIGURED = "SlackNotConfigured"  # no bot token for the assistant's connection_id
# Slack's own errors that a later attempt may not get; every other error is final.
_TRANSIENT = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}

DEFAULT_TEMPLATE = "*{{outcome}}*: call to {{phone}}\n{{contact_line}}\n{{summary}}\n{{call_url}}"


class SlackMessage(BaseModel):
    organization_id: str  # whose connection: a token serves its organization alone (connection_token)
    connection_id: str
    channel: str  # a channel id, e.g. C01234567
    text: str = Field(min_length=1)
    idempotency_key: str  # `<call id>:slack:<channel>`: the simulated poster records it once


class SlackReceipt(BaseModel):
    poster: str
    channel: str
    ts: str  # Slack's message id
    duplicate: bool = False


class SlackPoster(Protocol):
    name: str

    async def post(self, message: SlackMessage) -> SlackReceipt: ...


class SimulatedSlack:
    """Records messages instead of posting them; the same idempotency key is recorded once."""

    name = "simulated"

    def __init__(self, path: str | Path | None = None) -> None:
        self._outbox: Outbox[SlackMessage] = Outbox(path)
        self.posted = self._outbox.messages

    async def post(self, message: SlackMessage) -> SlackReceipt:
        duplicate = self._outbox.record(message.idempotency_key, message, message.model_dump())
        ts = f"sim-{message.idempotency_key}"
        return SlackReceipt(poster=self.name, channel=message.channel, ts=ts, duplicate=duplicate)


class SlackWebApi:
    """`chat.postMessage` with the bot token of the message's organization's connection
    (`connection_token`). Retries are Temporal's: the client itself makes one attempt."""

    name = "slack"

    def __init__(
        self,
        tokens: dict[str, str],
        default_token: str | None = None,
        *,
        home_organization: str = "org_local",
        base_url: str = "https://slack.com/api/",
        timeout: int = 15,
    ) -> None:
        self._tokens = tokens
        self._default_token = default_token
        self._home = home_organization
        self._base_url = base_url if base_url.endswith("/") else base_url + "/"
        self._timeout = timeout

    async def post(self, message: SlackMessage) -> SlackReceipt:
        token = connection_token(
            self._tokens, self._default_token, message.organization_id, message.connection_id, self._home
        )
        if not token:
            raise ApplicationError(
                f"no Slack bot token for connection {message.connection_id} of {message.organization_id} "
                f"(OUTDIAL_SLACK_TOKENS: {message.organization_id}/{message.connection_id}=xoxb-…)",
                type=SLACK_NOT_CONFIGURED,
                non_retryable=True,
            )
        client = AsyncWebClient(
            token=token, base_url=self._base_url, timeout=self._timeout, retry_handlers=[]
        )
        try:
            response = await client.chat_postMessage(
                channel=message.channel, text=message.text, unfurl_links=False, unfurl_media=False
            )
        except SlackApiError as err:
            status, error = _slack_error(err)
            if status == 429 or status >= 500 or error in _TRANSIENT:
                raise ApplicationError(
                    f"Slack: {error}", type="SlackUnavailable", next_retry_delay=_retry_after(err)
                ) from None
            raise ApplicationError(
                f"Slack refused the message to {message.channel}: {error}",
                type=SLACK_REJECTED,
                non_retryable=True,
            ) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            raise ApplicationError(
                f"Slack unreachable: {type(err).__name__}", type="SlackUnavailable"
            ) from None
        return SlackReceipt(poster=self.name, channel=str(response["channel"]), ts=str(response["ts"]))


def _retry_after(err: SlackApiError) -> timedelta | None:
    """A rate limit's `Retry-After` (seconds, at most an hour): the next try waits as long as Slack said."""
    headers = getattr(err.response, "headers", None) or {}
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), "")
    try:
        seconds = float(value if not isinstance(value, list) else value[0])
    except (TypeError, ValueError):
        return None
    return timedelta(seconds=min(seconds, 3600)) if seconds > 0 else None


def _slack_error(err: SlackApiError) -> tuple[int, str]:
    """The HTTP status and Slack's error code; a body that is no JSON (a proxy's 502 page) comes
    with the raw HTTP response instead of a SlackResponse."""
    response = err.response
    status = int(getattr(response, "status_code", None) or getattr(response, "status", 0) or 0)
    data = getattr(response, "data", None)
    error = data.get("error") if isinstance(data, dict) else None
    return status, str(error or f"HTTP {status}")


def slack_poster_from(settings: Settings) -> SlackPoster:
    if settings.slack_provider == "slack":
        return SlackWebApi(
            settings.slack_tokens,
            settings.slack_bot_token,
            home_organization=settings.organization_id,
            base_url=settings.slack_base_url,
        )
    return SimulatedSlack(settings.slack_outbox)


# --- the message ------------------------------------------------------------------------------------------


def slack_values(call: Call, call_url: str | None) -> dict[str, str]:
    """The template's values: the order's prompt_variables, then what the last call found out
    (structured_output), then the names the client documents, which win."""
    contact = call.contact
    name = " ".join(part for part in (contact.first_name, contact.last_name) if part)
    line = ", ".join(part for part in (name, contact.job_title, contact.company, contact.email) if part)
    latest = (a.structured_output for a in call.call_attempts if a.structured_output)  # most recent first
    found = next(latest, None) or {}
    documented = {
        "summary": call.outcome_summary or "",
        "outcome": (call.outcome or "none").replace("_", " "),
        "phone": call.to_phone_number,
        "call_url": call_url or "",
        "assistant_name": call.assistant.name if call.assistant else "",
        "campaign_name": call.campaign.name if call.campaign else "",
        "first_name": contact.first_name or "",
        "last_name": contact.last_name or "",
        "email": contact.email or "",
        "company": contact.company or "",
        "job_title": contact.job_title or "",
        "contact_name": name,
        "contact_line": line,  # "Claire Dupont, CTO, Acme, claire@acme.example"
    }
    values = {**(call.prompt_variables or {}), **{k: _text(v) for k, v in found.items()}, **documented}
    return {name: _escaped(value) for name, value in values.items()}


def _escaped(value: str) -> str:
    """A value as Slack's mrkdwn shows it as written: what the callee said must not become a mention
    (`<!channel>`) or a disguised link (`<https://...|text>`); the operator's template is markup."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(call: Call, template: str | None, call_url: str | None) -> str:
    """The message: the assistant's template, its {{placeholders}} filled in; without one, the default
    (its lines left empty, such as a summary the call has not, are dropped)."""
    values = slack_values(call, call_url)
    if template and template.strip():
        return interpolate(template, values).strip()
    return "\n".join(line for line in interpolate(DEFAULT_TEMPLATE, values).splitlines() if line.strip())


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)
