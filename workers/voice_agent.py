"""`outdial voice-agent`: the LiveKit Agents worker that holds the calls `dial` places.

It registers with the LiveKit project under `livekit_agent_name` (explicit dispatch only: the dial
activity dispatches it into each attempt's room) and runs agent/entrypoint.py in a job process per
call. It needs the same Temporal address as the workers (it reads each order's assistant through the
`call` query and completes the converse activity).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from livekit.agents import AgentServer, JobProcess

from activities.livekit import _secret
from agent.config import AgentConfig
from agent.entrypoint import entrypoint
from agent.pipeline import preload_plugins
from models.settings import PLAINTEXT_HISTORY, ConfigError, Settings
from workers.http_logs import quiet_http_loggers

log = logging.getLogger(__name__)


def _setup(_: JobProcess) -> None:
    """Runs in each job process before its first call: plugins register on the main thread."""
    preload_plugins()


def check_settings(settings: Settings, env: Mapping[str, str] | None = None) -> None:
    """What every call needs, checked at start (a ConfigError, one line): a mistake found in a call's
    job instead is a phone that rings and then silence, retried up to the order's attempts."""
    if not (settings.livekit_url and settings.livekit_api_key and _secret(settings.livekit_api_secret)):
        raise ConfigError("outdial voice-agent needs LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET")
    try:
        AgentConfig.from_env(env)
    except ValueError as err:  # a JSON variable that is not JSON, a value of the wrong kind
        raise ConfigError(f"outdial voice-agent: {err}") from None
    if not settings.codec_key and not settings.plaintext_history:  # it reads each order's assistant
        raise ConfigError(
            "outdial voice-agent needs the workers' OUTDIAL_CODEC_KEY (beside temporal-dev.yaml, the key "
            f"`outdial dev` made; OUTDIAL_CODEC_KEY={PLAINTEXT_HISTORY} if they run unencrypted): it reads "
            "each order from Temporal's history"
        )
    if not settings.openai_api_key:
        log.warning(
            "OPENAI_API_KEY is not set: only realtime assistants can talk (speech-to-text is OpenAI's)"
        )


def build_server(settings: Settings, *, port: int = 8081) -> AgentServer:
    check_settings(settings)
    preload_plugins()
    server = AgentServer(
        ws_url=settings.livekit_url,
        api_key=settings.livekit_api_key,
        api_secret=_secret(settings.livekit_api_secret),
        setup_fnc=_setup,
        port=port,
    )
    server.rtc_session(entrypoint, agent_name=settings.livekit_agent_name)
    return server


def configure_logging(dev: bool) -> None:
    """INFO (DEBUG with --dev), but never the HTTP clients' lines: they log every request's full URL,
    a tool's query token or a custom LLM's login (httpx2 and openai's own: the LLM client's)."""
    logging.basicConfig(level=logging.DEBUG if dev else logging.INFO)
    quiet_http_loggers()


def run_voice_agent(settings: Settings, *, dev: bool = False, port: int = 8081) -> None:
    """Run until Ctrl-C / SIGTERM; running calls get the server's drain timeout to finish."""
    configure_logging(dev)
    server = build_server(settings, port=port)

    async def main() -> None:
        try:
            await server.run(devmode=dev)
        finally:
            await server.aclose()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
