"""After the order ends: the signed webhook, the outcome email, Slack, the after-call and voicemail SMS.

Every activity takes the order's final `Call` (`NotifyRequest`) and decides itself whether it applies
(the same pure `*_due` functions let workflow code skip what does not). They are safe to retry:
- webhook: at-least-once, with a stable event id `<call id>:<event>` in the body for receivers to
  deduplicate, signed per delivery as `Outdial-Signature: t=<unix>,v1=<hex HMAC-SHA256("<t>.<body>")>`;
- email: a stable Message-ID `<<call id>.outcome@outdial>` lets mail clients collapse a resend;
- Slack: one activity per channel (`<call id>:slack:<channel>`), so a retry reposts only what failed;
- SMS: a stable idempotency key per message (`<call id>:after-call-sms`, `<call id>:voicemail-sms`).
Retry policies live with the caller (workflows/notify.py): hours for webhooks, less for email and SMS.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Any, Literal, Protocol

import aiosmtplib
import httpx
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.compliance import DoNotContactRegistry, overrides
from activities.persistence import DatabaseDoNotContactRegistry
from activities.slack import SimulatedSlack, SlackMessage, SlackPoster, slack_text
from activities.sms import MAX_SMS_CHARS, SmsMessage, SmsProvider, SmsWriter, SmsWriteRequest
from activities.url_guard import UnsafeUrlError, describe_url, guarded_client
from activities.webhook_secrets import DatabaseWebhookSecrets
from agent.prompt import call_variables, interpolate
from models.call import Call, CallAttempt, order_workflow_id
from models.secrets import masked
from models.settings import Settings

log = logging.getLogger(__name__)

WebhookEvent = Literal["call.completed", "call.errored", "call.cancelled"]
Channel = Literal["webhook", "email", "slack", "after_call_sms", "voicemail_sms"]
EVENTS: dict[str, WebhookEvent] = {
    "completed": "call.completed",
    "errored": "call.errored",
    "cancelled": "call.cancelled",
}
SIGNATURE_HEADER = "Outdial-Signature"
SIGNATURE_TOLERANCE_SECONDS = 300

# Error types, for retry policies: these are final, everything else is retried.
UNSAFE_URL = "UnsafeUrl"
WEBHOOK_GONE = "WebhookGone"  # the receiver answered 410 Gone: it wants no more deliveries
WEBHOOK_NOT_CONFIGURED = "WebhookNotConfigured"
EMAIL_REJECTED = "EmailRejected"
DO_NOT_TEXT = "the number is on the do-not-contact list"


class NotifyRequest(BaseModel):
    """The order's final Call: everything a notification needs."""

    call: Call


class SlackRequest(NotifyRequest):
    """One Slack channel's post of the order's final Call."""

    slack_channel: str


class NotifyResult(BaseModel):
    channel: Channel
    status: Literal["sent", "skipped", "failed"]
    detail: str | None = None


# --- what is due (pure: workflow code may call these) ---------------------------------------------


def webhook_event(call: Call) -> WebhookEvent | None:
    return EVENTS.get(call.status)


def event_id(call: Call) -> str:
    """Stable across retries and redeliveries: one order ends once."""
    return f"{call.id}:{webhook_event(call)}"


def _last_human(call: Call) -> CallAttempt | None:
    return next((a for a in call.call_attempts if a.result == "human" and a.transcript), None)


def due_channels(call: Call) -> list[Channel]:
    """The notifications this final Call asks for, given its assistant's settings."""
    assistant = call.assistant
    if assistant is None or webhook_event(call) is None:
        return []
    due: list[Channel] = []
    if assistant.webhook_url:
        due.append("webhook")
    outcome = call.outcome or "none"  # the official client's name for a call without an outcome
    if assistant.email_notification_address and outcome in (assistant.email_notification_outcomes or []):
        due.append("email")
    if assistant.slack and outcome in assistant.slack.outcomes:
        due.append("slack")
    # Never text someone who asked not to be contacted, nor after a cancelled or failed order.
    textable = call.status == "completed" and call.outcome != "do_not_contact"
    reached = _last_human(call) is not None
    # after_call_sms_outcomes (the official client's) narrows the after-call SMS; left out, any outcome
    sms_outcomes = assistant.after_call_sms_outcomes
    wanted = sms_outcomes is None or outcome in sms_outcomes
    if textable and assistant.after_call_sms_prompt and reached and wanted:
        due.append("after_call_sms")
    voicemail = any(a.result == "voicemail" for a in call.call_attempts)
    if textable and assistant.voicemail_sms_prompt and voicemail and not reached:
        due.append("voicemail_sms")
    return due


def due_deliveries(call: Call) -> list[tuple[Channel, NotifyRequest]]:
    """Each due channel with its activity's request: one per Slack channel (Slack has no idempotency
    key, so each post is retried on its own), one for every other channel."""
    request = NotifyRequest(call=call)
    slack = call.assistant.slack if call.assistant else None
    deliveries: list[tuple[Channel, NotifyRequest]] = []
    for channel in due_channels(call):
        if channel == "slack" and slack:
            deliveries += [(channel, SlackRequest(call=call, slack_channel=c.id)) for c in slack.channels]
        else:
            deliveries.append((channel, request))
    return deliveries


# --- webhook signing (receivers use verify_signature) ------------------------------------------------


def sign(secrets: str | Sequence[str], body: bytes, timestamp: int) -> str:
    """The `Outdial-Signature` header value: the scheme Stripe uses, one `v1=` per signing secret."""
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    macs = (
        hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest() for key in keys
    )
    return ",".join([f"t={timestamp}", *(f"v1={mac}" for mac in macs)])


def verify_signature(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance: float = SIGNATURE_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """True when `header` signs exactly `body` with `secret`, no older than `tolerance` seconds."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, candidate) for candidate in parts.get("v1", []))


def webhook_payload(call: Call) -> dict[str, Any]:
    """`{"event", "id", "call"}` with the seed's Call; the assistant's secrets are masked (last 4 kept)."""
    return {"event": webhook_event(call), "id": event_id(call), "call": masked(call.model_dump(mode="json"))}


def webhook_body(call: Call) -> bytes:
    return json.dumps(webhook_payload(call), separators=(",", ":"), ensure_ascii=False).encode()


class WebhookSecrets(Protocol):
    """Per-organization signing secrets, current first (empty: not configured); read at send time."""

    async def signing_secrets(self, organization_id: str) -> list[str]: ...


# --- the activities ---------------------------------------------------------------------------------


class NotifyActivities:
    def __init__(
        self,
        settings: Settings,
        sms: SmsProvider,
        writer: SmsWriter,
        secrets: WebhookSecrets | None = None,
        slack: SlackPoster | None = None,
        contacts: DoNotContactRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.sms = sms
        self.writer = writer
        self.secrets = secrets or DatabaseWebhookSecrets(settings)
        self.slack = slack or SimulatedSlack()
        self.contacts = contacts or DatabaseDoNotContactRegistry(settings)

    @activity.defn(name="deliver_webhook")
    async def deliver_webhook(self, request: NotifyRequest) -> NotifyResult:
        """POST the signed event to the assistant's webhook_url; any non-2xx (but 410) is retried."""
        call = request.call
        url = call.assistant.webhook_url if call.assistant else None
        if not url or "webhook" not in due_channels(call):
            return NotifyResult(channel="webhook", status="skipped", detail="no webhook_url")
        # Looked up now, by organization: the secret never sits in workflow history.
        secrets = await self.secrets.signing_secrets(call.organization_id)
        if not secrets:
            raise ApplicationError(
                f"no webhook signing secret for organization {call.organization_id} in this worker's "
                "database (is its OUTDIAL_DATABASE_URL the API's?)",
                type=WEBHOOK_NOT_CONFIGURED,
                non_retryable=True,
            )
        body = webhook_body(call)
        attempt = activity.info().attempt if activity.in_activity() else 1
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "outdial-webhooks/1",
            SIGNATURE_HEADER: sign(secrets, body, int(time.time())),
            "Outdial-Event-Id": event_id(call),
            "Outdial-Delivery-Attempt": str(attempt),
        }
        target = describe_url(url)
        try:
            async with (
                guarded_client(allow_private=self.settings.allow_private_urls, timeout=15) as client,
                client.stream("POST", url, content=body, headers=headers) as response,
            ):
                pass  # its status is all we read: a receiver's body, of any size, is never loaded
        except UnsafeUrlError as err:
            raise ApplicationError(
                f"webhook_url refused: {err}", type=UNSAFE_URL, non_retryable=True
            ) from None
        except httpx.InvalidURL:  # stored before URLs were checked as sent: no retry mends it
            raise ApplicationError(
                f"webhook_url refused: {target} cannot be sent to", type=UNSAFE_URL, non_retryable=True
            ) from None
        except httpx.HTTPError as err:
            log.info(
                "webhook %s to %s: attempt %d failed: %s", event_id(call), target, attempt, type(err).__name__
            )
            raise ApplicationError(
                f"webhook {target} unreachable: {type(err).__name__}", type="WebhookUnavailable"
            ) from None
        if response.is_success:
            return NotifyResult(
                channel="webhook", status="sent", detail=f"HTTP {response.status_code} on attempt {attempt}"
            )
        if response.status_code == 410:
            raise ApplicationError(
                f"webhook {target} answered 410 Gone", type=WEBHOOK_GONE, non_retryable=True
            )
        followed = " (redirects are not followed: give the URL it leads to)" if response.is_redirect else ""
        raise ApplicationError(
            f"webhook {target} answered HTTP {response.status_code}{followed}", type="WebhookUnavailable"
        )

    @activity.defn(name="send_outcome_email")
    async def send_outcome_email(self, request: NotifyRequest) -> NotifyResult:
        """Email the assistant's notification address when the outcome is one it asked for."""
        call = request.call
        if "email" not in due_channels(call) or call.assistant is None:
            return NotifyResult(channel="email", status="skipped", detail="outcome not subscribed")
        if not self.settings.smtp_host:
            return NotifyResult(
                channel="email", status="skipped", detail="no SMTP server (OUTDIAL_SMTP_HOST)"
            )
        message = outcome_email(call, sender=self.settings.smtp_from)
        # Each address once: those an earlier try delivered to, or that were refused for good (its
        # heartbeat), are not sent it again.
        details = activity.info().heartbeat_details if activity.in_activity() else []
        delivered: set[str] = set(details[0]) if details else set()
        never: dict[str, str] = dict(details[1]) if len(details) > 1 else {}
        to = [a for _, a in getaddresses([str(message["To"])]) if a]
        recipients = [a for a in to if a not in delivered and a not in never]
        refused = await self._smtp_send(message, recipients)
        delivered |= set(recipients) - set(refused)
        never |= {address: f"{code} {text}" for address, (code, text) in refused.items() if code >= 500}
        later = sorted(address for address, (code, _) in refused.items() if code < 500)
        if later:  # "try again later": those, and only those, on the next try
            activity.heartbeat(sorted(delivered), never)
            raise ApplicationError(f"SMTP deferred {', '.join(later)}", type="EmailUnavailable")
        if not delivered:
            raise ApplicationError(
                f"SMTP refused the recipients: {never}", type=EMAIL_REJECTED, non_retryable=True
            )
        detail = str(message["Message-ID"]) + (f"; refused for good: {never}" if never else "")
        return NotifyResult(channel="email", status="sent", detail=detail)

    async def _smtp_send(self, message: EmailMessage, recipients: list[str]) -> dict[str, tuple[int, str]]:
        """Send `message` to `recipients`; the ones the server refused, with its code and words."""
        try:
            refused, _ = await aiosmtplib.send(
                message,
                recipients=recipients,
                hostname=self.settings.smtp_host,
                port=self.settings.smtp_port,
                username=self.settings.smtp_username,
                password=self.settings.smtp_password,
                use_tls=self.settings.smtp_tls == "tls",
                start_tls=self.settings.smtp_tls == "starttls",
                timeout=30,
            )
        except aiosmtplib.SMTPRecipientsRefused as err:  # every one of them
            return {r.recipient: (r.code, r.message) for r in err.recipients}
        except aiosmtplib.SMTPResponseException as err:
            final = 500 <= err.code < 600
            raise ApplicationError(
                f"SMTP {err.code}: {err.message}",
                type=EMAIL_REJECTED if final else "EmailUnavailable",
                non_retryable=final,
            ) from None
        except (aiosmtplib.SMTPException, OSError) as err:
            raise ApplicationError(
                f"SMTP server {self.settings.smtp_host}:{self.settings.smtp_port} unavailable: "
                f"{type(err).__name__}",
                type="EmailUnavailable",
            ) from None
        return {address: (answer.code, answer.message) for address, answer in refused.items()}

    @activity.defn(name="post_to_slack")
    async def post_to_slack(self, request: SlackRequest) -> NotifyResult:
        """The assistant's Slack message (its template, else the default) to one of its channels."""
        call = request.call
        slack = call.assistant.slack if call.assistant else None
        if "slack" not in due_channels(call) or slack is None:
            return NotifyResult(channel="slack", status="skipped", detail="outcome not subscribed")
        text = slack_text(call, slack.template, self.call_url(call))
        if not text:
            return NotifyResult(channel="slack", status="skipped", detail="empty message")
        channel = request.slack_channel
        receipt = await self.slack.post(
            SlackMessage(
                organization_id=call.organization_id,
                connection_id=slack.connection_id,
                channel=channel,
                text=text,
                idempotency_key=f"{call.id}:slack:{channel}",
            )
        )
        detail = f"{receipt.poster} {receipt.channel} {receipt.ts}" + (
            " (duplicate)" if receipt.duplicate else ""
        )
        return NotifyResult(channel="slack", status="sent", detail=detail)

    def call_url(self, call: Call) -> str | None:
        """The order's workflow in the Temporal Web UI, when its address is configured."""
        base = self.settings.temporal_ui_url
        if not base:
            return None
        namespace = self.settings.temporal_namespace
        return f"{base.rstrip('/')}/namespaces/{namespace}/workflows/{order_workflow_id(call.id)}"

    @activity.defn(name="send_after_call_sms")
    async def send_after_call_sms(self, request: NotifyRequest) -> NotifyResult:
        """An SMS written from after_call_sms_prompt and the conversation, once the callee was reached."""
        call = request.call
        human = _last_human(call)
        if "after_call_sms" not in due_channels(call) or human is None or call.assistant is None:
            return NotifyResult(channel="after_call_sms", status="skipped", detail="not due")
        if await self._do_not_contact(call):
            return NotifyResult(channel="after_call_sms", status="skipped", detail=DO_NOT_TEXT)
        text = await self.writer.write_sms(
            SmsWriteRequest(
                instructions=call.assistant.after_call_sms_prompt or "",
                variables=_variables(call),
                transcript=human.transcript or [],
                llm_model=call.assistant.llm_model,
            )
        )
        return await self._send_sms(call, "after_call_sms", text, f"{call.id}:after-call-sms")

    @activity.defn(name="send_voicemail_sms")
    async def send_voicemail_sms(self, request: NotifyRequest) -> NotifyResult:
        """voicemail_sms_prompt, variables filled in, once per order that only ever reached voicemail."""
        call = request.call
        if "voicemail_sms" not in due_channels(call) or call.assistant is None:
            return NotifyResult(channel="voicemail_sms", status="skipped", detail="not due")
        if await self._do_not_contact(call):
            return NotifyResult(channel="voicemail_sms", status="skipped", detail=DO_NOT_TEXT)
        text = interpolate(call.assistant.voicemail_sms_prompt or "", _variables(call)).strip()
        return await self._send_sms(call, "voicemail_sms", text, f"{call.id}:voicemail-sms")

    async def _do_not_contact(self, call: Call) -> bool:
        """Whether the number asked, on any call of the organization (another order's, while this one
        waited for its retries), not to be contacted again: then it gets no text either."""
        entry = await self.contacts.get(call.organization_id, call.to_phone_number)
        placed = call.created_at if isinstance(call.created_at, datetime) else datetime.now(UTC)
        return entry is not None and not overrides(entry, call.metadata, placed)

    async def _send_sms(self, call: Call, channel: Channel, text: str, key: str) -> NotifyResult:
        text = text[:MAX_SMS_CHARS]  # every SMS: the voicemail one is the assistant's text, unbounded
        if not text:
            return NotifyResult(channel=channel, status="skipped", detail="empty message")
        sender = self.settings.sms_from_phone_number or call.from_phone_number
        receipt = await self.sms.send(
            SmsMessage(to=call.to_phone_number, from_=sender, body=text, idempotency_key=key)
        )
        detail = f"{receipt.provider} {receipt.id} {receipt.status}" + (
            " (duplicate)" if receipt.duplicate else ""
        )
        return NotifyResult(channel=channel, status="sent", detail=detail)

    def all(self) -> list[Any]:
        """Every activity, for the worker."""
        return [
            self.deliver_webhook,
            self.send_outcome_email,
            self.post_to_slack,
            self.send_after_call_sms,
            self.send_voicemail_sms,
        ]


def outcome_email(call: Call, *, sender: str) -> EmailMessage:
    """A plain-text email: outcome and summary first, then extracted data and the transcript."""
    assistant = call.assistant
    assert assistant is not None and assistant.email_notification_address
    outcome = (call.outcome or "unknown").replace("_", " ")
    human = _last_human(call)
    lines = [
        f"Call {call.id} to {call.to_phone_number} ended: {outcome}.",
        "",
        call.outcome_summary or "",
        "",
        f"Status: {call.status}; attempts: {len(call.call_attempts)}; caller id: {call.from_phone_number}",
    ]
    if human and human.structured_output:
        lines += ["", "Extracted data:"] + [f"  {k}: {v}" for k, v in human.structured_output.items()]
    if human and human.transcript:
        lines += ["", "Transcript:"] + [
            f"  {'Agent' if e.role == 'assistant' else 'Callee' if e.role == 'user' else 'Tool'}: {e.content}"
            for e in human.transcript
        ]
    message = EmailMessage()
    message["From"] = sender
    message["To"] = assistant.email_notification_address
    message["Subject"] = f"[outdial] {outcome}: call to {call.to_phone_number}"
    message["Message-ID"] = f"<{call.id}.outcome@outdial>"
    message.set_content("\n".join(lines) + "\n")
    return message


def notify_activities_from(settings: Settings) -> NotifyActivities:
    """The SMS provider and writer and the Slack poster the settings choose: the analyzer's LLM writes
    SMS when it is OpenAI."""
    from activities.slack import slack_poster_from
    from activities.sms import TemplateSmsWriter, sms_provider_from

    writer: SmsWriter = TemplateSmsWriter()
    if settings.analyzer == "openai":
        from activities.analysis import OpenAIAnalyzer

        writer = OpenAIAnalyzer(settings)
    return NotifyActivities(settings, sms_provider_from(settings), writer, slack=slack_poster_from(settings))


def _variables(call: Call) -> dict[str, str]:
    """A text's {{placeholders}}, filled as the call's own words were: its id and numbers too."""
    return call_variables(call.id, call.to_phone_number, call.from_phone_number, call.prompt_variables or {})
