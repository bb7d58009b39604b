"""SMS after a call: who writes the text (`SmsWriter`) and who delivers it (`SmsProvider`).

Providers: `TwilioSms` (Twilio's REST API through httpx) and `SimulatedSmsOutbox` (the default: keeps
messages in memory and, when configured, appends them to a JSON-lines file the demo shows).
Writers: the OpenAI analyzer (activities/analysis.py) writes from the transcript; `TemplateSmsWriter`
(simulated) sends the prompt itself with its {{variables}} filled in.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import httpx
from pydantic import BaseModel, Field
from temporalio.exceptions import ApplicationError

from activities.outbox import Outbox
from agent.prompt import interpolate
from models.assistant import LlmModelRecord
from models.call import TranscriptEntry
from models.settings import ConfigError, Settings

log = logging.getLogger(__name__)

SMS_REJECTED = "SmsRejected"  # the provider refused the message for good (bad number, opted out, ...)
SMS_UNCERTAIN = "SmsUncertain"  # sent to the provider, no answer: maybe sent, so never sent again
MAX_SMS_CHARS = 480  # three concatenated segments


class SmsMessage(BaseModel):
    to: str
    from_: str = Field(alias="from")
    body: str = Field(min_length=1, max_length=1600)
    idempotency_key: str  # one logical message; a retried activity must not send it twice where avoidable

    model_config = {"populate_by_name": True}


class SmsReceipt(BaseModel):
    provider: str
    id: str
    status: str
    duplicate: bool = False  # the provider had this idempotency key already; nothing was sent again


class SmsProvider(Protocol):
    name: str

    async def send(self, message: SmsMessage) -> SmsReceipt: ...


class SmsWriteRequest(BaseModel):
    """What an SMS writer needs: the instructions (prompt variables not yet filled in), the conversation."""

    instructions: str
    variables: dict[str, str] = Field(default_factory=dict)
    transcript: list[TranscriptEntry] = Field(default_factory=list)
    llm_model: LlmModelRecord | None = None  # the assistant's LLM: where an LLM writer sends it


class SmsWriter(Protocol):
    async def write_sms(self, request: SmsWriteRequest) -> str: ...


class TemplateSmsWriter:
    """Simulated writer: the instructions themselves, variables filled in. Deterministic, no LLM."""

    async def write_sms(self, request: SmsWriteRequest) -> str:
        return interpolate(request.instructions, request.variables).strip()[:MAX_SMS_CHARS]


class SimulatedSmsOutbox:
    """Records messages instead of sending them; the same idempotency key is recorded once."""

    name = "simulated"

    def __init__(self, path: str | Path | None = None) -> None:
        self._outbox: Outbox[SmsMessage] = Outbox(path)
        self.sent = self._outbox.messages

    async def send(self, message: SmsMessage) -> SmsReceipt:
        line = message.model_dump(by_alias=True)
        duplicate = self._outbox.record(message.idempotency_key, message, line)
        return SmsReceipt(
            provider=self.name, id=f"sim-{message.idempotency_key}", status="delivered", duplicate=duplicate
        )


class TwilioSms:
    """Twilio's Messages API: POST /2010-04-01/Accounts/{sid}/Messages.json, form-encoded, Basic auth.

    Twilio has no idempotency key for sending, so a message is sent again only when Twilio surely did
    not take it: no connection, 429 and 5xx are retried, every 4xx is final, and so is a request sent
    but not answered (it may have been sent: at most once). A 2xx is sent, whatever its body.
    """

    name = "twilio"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        base_url: str = "https://api.twilio.com",
        timeout: float = 15,
    ) -> None:
        self._sid = account_sid
        self._auth = httpx.BasicAuth(account_sid, auth_token)
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout

    async def send(self, message: SmsMessage) -> SmsReceipt:
        url = f"{self._base_url}/2010-04-01/Accounts/{self._sid}/Messages.json"
        form = {"To": message.to, "From": message.from_, "Body": message.body}
        try:
            async with httpx.AsyncClient(timeout=self._timeout, auth=self._auth) as client:
                response = await client.post(url, data=form)
        except httpx.ReadTimeout as err:  # sent, unanswered: sending it again could text the callee twice
            raise self._uncertain(err) from None
        except (
            httpx.ConnectError,
            httpx.TimeoutException,
            httpx.WriteError,
            httpx.ProxyError,
        ) as err:  # not sent
            raise ApplicationError(
                f"Twilio unreachable: {type(err).__name__}", type="SmsUnavailable"
            ) from None
        except httpx.HTTPError as err:  # sent, its answer lost (the connection dropped, say)
            raise self._uncertain(err) from None
        if response.is_success:
            try:
                body = response.json()
            except ValueError:  # taken all the same (a proxy's page, say): not to be sent again
                body = {}
            body = body if isinstance(body, dict) else {}
            return SmsReceipt(
                provider=self.name,
                id=str(body.get("sid", "unknown")),
                status=str(body.get("status", "accepted")),
            )
        detail = _twilio_error(response)
        if response.status_code == 429 or response.status_code >= 500:
            raise ApplicationError(f"Twilio: {detail}", type="SmsUnavailable")
        raise ApplicationError(f"Twilio refused the SMS: {detail}", type=SMS_REJECTED, non_retryable=True)

    @staticmethod
    def _uncertain(err: httpx.HTTPError) -> ApplicationError:
        return ApplicationError(
            f"Twilio did not answer the SMS it was sent ({type(err).__name__}): it may have been sent, "
            "and is not sent again",
            type=SMS_UNCERTAIN,
            non_retryable=True,
        )


def _twilio_error(response: httpx.Response) -> str:
    try:
        body = response.json()
        return f"HTTP {response.status_code}, code {body.get('code')}: {body.get('message')}"
    except ValueError:
        return f"HTTP {response.status_code}"


def sms_provider_from(settings: Settings) -> SmsProvider:
    if settings.sms_provider == "twilio":
        if not (settings.twilio_account_sid and settings.twilio_auth_token):
            raise ConfigError("OUTDIAL_SMS=twilio needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        return TwilioSms(
            settings.twilio_account_sid, settings.twilio_auth_token, base_url=settings.twilio_base_url
        )
    return SimulatedSmsOutbox(settings.sms_outbox)
