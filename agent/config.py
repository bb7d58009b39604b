"""What one call's agent needs (CallSpec) and the agent process's own configuration (AgentConfig)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from pydantic import BaseModel, Field, ValidationError

from agent.prompt import call_variables
from models import Call
from models.assistant import CallAssistant
from models.common import error_summary
from models.settings import connection_token


class CallSpec(BaseModel):
    """One attempt's call, as the agent holds it: read from the order, never from room metadata."""

    call_id: str
    attempt_id: str
    assistant: CallAssistant
    prompt_variables: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)
    to_phone_number: str
    from_phone_number: str
    timezone: str | None = None

    @classmethod
    def from_call(cls, call: Call, attempt_id: str) -> CallSpec:
        if call.assistant is None:
            raise RuntimeError(f"call {call.id} has no resolved assistant yet")
        timezone = call.call_retry_config.timezone if call.call_retry_config else None
        return cls(
            call_id=call.id,
            attempt_id=attempt_id,
            assistant=call.assistant,
            prompt_variables=call.prompt_variables or {},
            metadata=call.metadata or {},
            to_phone_number=call.to_phone_number,
            from_phone_number=call.from_phone_number,
            timezone=timezone,
        )

    def variables(self) -> dict[str, str]:
        return call_variables(
            self.call_id, self.to_phone_number, self.from_phone_number, self.prompt_variables
        )


class AgentConfig(BaseModel):
    """The voice-agent process's own knobs (environment variables; none is a per-call secret).

    Provider keys are each plugin's usual variable (OPENAI_API_KEY, OPENROUTER_API_KEY, CARTESIA_API_KEY,
    ELEVEN_API_KEY, GOOGLE_API_KEY); the rest is listed in README "Real telephony (LiveKit)".
    """

    stt_model: str = "gpt-4o-mini-transcribe"  # OpenAI speech-to-text for the callee's audio
    stt_language: str = "en"
    default_tts: str = "openai:gpt-4o-mini-tts:ash"  # when the assistant has no voice
    # The seed's "dedicated-instance" models: gpt-4.1 is OpenAI's; ministral needs an OpenAI-compatible host.
    dedicated_base_urls: dict[str, str] = Field(default_factory=dict)
    dedicated_api_key: str | None = Field(default=None, repr=False)
    calendly_api_url: str = "https://api.calendly.com"
    calendly_tokens: dict[str, str] = Field(
        default_factory=dict, repr=False
    )  # [org id/]connection_id -> token
    calendly_default_token: str | None = Field(default=None, repr=False)
    home_organization: str = "org_local"  # the deployment's own (organization.id): the entrypoint's settings
    amd_enabled: bool = True
    # A callee who picks up and waits for the caller to speak: AMD's verdict (which holds the agent's first
    # sentence) comes after this much silence; livekit-agents' 10 s lost many who hung up meanwhile.
    amd_no_speech_secs: float = Field(default=3.0, gt=0)
    farewell_buffer_secs: float = 10.0  # max_duration_end_message starts this long before the limit
    http_timeout_secs: float = 10.0  # custom tools, SMS, Calendly

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AgentConfig:
        """From the environment (`AGENT_ENV` names each variable); a ValueError names the variable
        that is wrong (a JSON one that is not JSON, OUTDIAL_AMD that is no boolean)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for field, variable in AGENT_ENV.items():
            if not (raw := env.get(variable)):
                continue
            try:
                values[field] = json.loads(raw) if field in _JSON_FIELDS else raw
            except json.JSONDecodeError as err:
                raise ValueError(f"{variable}: not JSON ({err.msg} at character {err.pos})") from None
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            named = [{**e, "loc": (AGENT_ENV[str(e["loc"][0])], *e["loc"][1:])} for e in err.errors()]
            raise ValueError(error_summary(named)) from None

    def calendly_token(self, organization_id: str, connection_id: str) -> str | None:
        """Of `organization_id`'s connection (`connection_token`)."""
        return connection_token(
            self.calendly_tokens,
            self.calendly_default_token,
            organization_id,
            connection_id,
            self.home_organization,
        )


# The agent's settings and their variables (pydantic's booleans for OUTDIAL_AMD: 1/0, true/false, on/off).
AGENT_ENV = {
    "stt_model": "OUTDIAL_STT_MODEL",
    "stt_language": "OUTDIAL_STT_LANGUAGE",
    "default_tts": "OUTDIAL_DEFAULT_TTS",
    "dedicated_base_urls": "OUTDIAL_DEDICATED_BASE_URLS",
    "dedicated_api_key": "OUTDIAL_DEDICATED_API_KEY",
    "calendly_api_url": "OUTDIAL_CALENDLY_API_URL",
    "calendly_tokens": "OUTDIAL_CALENDLY_TOKENS",
    "calendly_default_token": "CALENDLY_API_TOKEN",
    "amd_enabled": "OUTDIAL_AMD",
    "amd_no_speech_secs": "OUTDIAL_AMD_NO_SPEECH_SECS",
}
_JSON_FIELDS = frozenset({"dedicated_base_urls", "calendly_tokens"})
