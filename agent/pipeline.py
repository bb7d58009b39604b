"""The assistant's models and sounds as livekit-agents objects: LLM (or realtime model), TTS, STT,
background and thinking sounds. Plugins are imported when a call needs them, so a missing plugin only
fails the calls configured to use it (with the pip package to install)."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Mapping
from typing import Any

from activities.url_guard import guarded_httpx2_client
from agent.config import AgentConfig
from agent.prompt import placeholders
from models.assistant import (
    CallAssistant,
    CustomLlmModelRecord,
    DedicatedInstanceModelRecord,
    OpenRouterModelRecord,
    RealtimeModelRecord,
    SttContext,
    SttContextEntry,
    VoiceRecord,
)
from models.settings import Settings

PLUGINS = {
    "openai": "livekit-plugins-openai",
    "cartesia": "livekit-plugins-cartesia",
    "elevenlabs": "livekit-plugins-elevenlabs",
    "google": "livekit-plugins-google",
    "silero": "livekit-plugins-silero",
}
# The seed's background sound is an office ambience; thinking sounds are livekit-agents' built-in clips.
BACKGROUND_CLIPS = {"audio/office.ogg": "office-ambience.ogg"}


def plugin(name: str) -> Any:
    """`livekit.plugins.<name>`, or a RuntimeError naming the package to install."""
    try:
        return importlib.import_module(f"livekit.plugins.{name}")
    except ImportError:
        raise RuntimeError(f"this assistant needs `pip install {PLUGINS[name]}`") from None


def preload_plugins() -> list[str]:
    """Import every installed plugin (livekit-agents wants plugins registered on the main thread)."""
    loaded = []
    for name in PLUGINS:
        try:
            importlib.import_module(f"livekit.plugins.{name}")
            loaded.append(name)
        except ImportError:
            continue
    return loaded


def build_llm(assistant: CallAssistant, settings: Settings, config: AgentConfig) -> Any:
    """The assistant's llm_model: dedicated gpt-4.1 (OpenAI), OpenRouter with its provider pinned, a
    custom OpenAI-compatible endpoint, or a realtime model (OpenAI / Google)."""
    model = assistant.llm_model
    if isinstance(model, DedicatedInstanceModelRecord):
        openai = plugin("openai")
        base_url = config.dedicated_base_urls.get(model.name)
        if model.name == "gpt-4.1" and not base_url:
            return openai.LLM(
                model="gpt-4.1", **_given(api_key=settings.openai_api_key, base_url=settings.openai_base_url)
            )
        if not base_url:
            raise RuntimeError(f"dedicated model {model.name} needs its host in OUTDIAL_DEDICATED_BASE_URLS")
        return openai.LLM(model=model.name, base_url=base_url, api_key=config.dedicated_api_key or "none")
    if isinstance(model, OpenRouterModelRecord):
        openai = plugin("openai")
        return openai.LLM.with_openrouter(
            model=model.openrouter_model_id,
            api_key=settings.openrouter_api_key,
            base_url=settings.openrouter_base_url,
            provider={"order": [model.openrouter_provider], "allow_fallbacks": False},
        )
    if isinstance(model, CustomLlmModelRecord):
        openai = plugin("openai")
        import openai as openai_sdk

        # The URL is the user's: requests go through the URL guard (no private addresses in production).
        base_url, query = model.endpoint()
        client = openai_sdk.AsyncClient(
            api_key=model.api_key,
            base_url=base_url,
            default_query=query or None,
            http_client=guarded_httpx2_client(allow_private=settings.allow_private_urls),
        )
        return openai.LLM(model=model.model_name, client=client)
    if isinstance(model, RealtimeModelRecord):
        if model.provider == "openai":
            openai = plugin("openai")
            voice = {"voice": model.realtime_voice_id} if model.realtime_voice_id else {}
            return openai.realtime.RealtimeModel(
                model=model.realtime_model_id, **_given(api_key=settings.openai_api_key), **voice
            )
        google = plugin("google")
        voice = {"voice": model.realtime_voice_id} if model.realtime_voice_id else {}
        return google.realtime.RealtimeModel(model=model.realtime_model_id, **voice)
    raise RuntimeError(f"unsupported llm_model {model!r}")


def build_session(
    assistant: CallAssistant,
    settings: Settings,
    config: AgentConfig,
    prompt_variables: Mapping[str, str] | None = None,
) -> Any:
    """The call's AgentSession: the assistant's LLM, speech-to-text (told what the call is about) and
    voice (a realtime model hears and speaks itself), Silero VAD when installed. Nothing connects
    before the session starts."""
    from livekit.agents import AgentSession

    speech = (
        {}
        if is_realtime(assistant)
        else {
            "stt": build_stt(
                settings,
                config,
                stt_context_for(assistant, prompt_variables or {}),
                voice_language(assistant.voice),
            ),
            "tts": build_tts(
                assistant.voice, settings, config, assistant.cartesia_dictionary_pronunciation_id
            ),
        }
    )
    vad = build_vad()
    return AgentSession(
        llm=build_llm(assistant, settings, config),
        **speech,
        **({"vad": vad} if vad else {}),
        user_away_timeout=None,
    )


def is_realtime(assistant: CallAssistant) -> bool:
    return isinstance(assistant.llm_model, RealtimeModelRecord)


def voice_language(voice: VoiceRecord | None) -> str | None:
    """The language of a voice of the catalog (`GET /voices`) made for one other than English: the call is
    spoken and heard in it (a French voice said French words with English sounds, and the callee's French
    was transcribed as English). None otherwise: the catalog labels its multilingual voices `en`, which must
    force neither them nor OUTDIAL_STT_LANGUAGE (a deployment calling in Spanish) to English."""
    if voice is None:
        return None
    from api.voices import catalog

    listed = next((v.language for v in catalog() if (v.provider, v.id) == (voice.provider, voice.id)), None)
    return listed if listed != "en" else None


def build_tts(
    voice: VoiceRecord | None,
    settings: Settings,
    config: AgentConfig,
    pronunciation_dict_id: str | None = None,
) -> Any:
    """Cartesia (voice id, speed, volume, the assistant's pronunciation dictionary) or ElevenLabs (voice
    id, speed); else the configured default. A Cartesia dictionary means nothing to the others."""
    if voice is None:
        provider, model, name = (config.default_tts.split(":") + ["", ""])[:3]
        if provider != "openai":
            raise RuntimeError(f"OUTDIAL_DEFAULT_TTS={config.default_tts!r}: use openai:<model>:<voice>")
        return plugin("openai").TTS(model=model, voice=name, **_given(api_key=settings.openai_api_key))
    if voice.provider == "cartesia":
        model = (voice.model_extra or {}).get("model")  # sonic-3 (the plugin's default) unless given
        options: dict[str, Any] = {"voice": voice.id, **({"model": model} if model else {})}
        if voice.speed is not None:
            options["speed"] = float(voice.speed)
        if voice.volume is not None:
            options["volume"] = float(voice.volume)
        if pronunciation_dict_id:
            options["pronunciation_dict_id"] = pronunciation_dict_id
        return plugin("cartesia").TTS(**options, **_given(language=voice_language(voice)))
    elevenlabs = plugin("elevenlabs")
    options = {"voice_id": voice.id, **_given(language=voice_language(voice))}
    if voice.speed is not None:  # volume is Cartesia-only (seed)
        options["voice_settings"] = elevenlabs.VoiceSettings(
            stability=0.5, similarity_boost=0.75, speed=float(voice.speed)
        )
    return elevenlabs.TTS(**options)


def build_stt(
    settings: Settings, config: AgentConfig, context: SttContext | None = None, language: str | None = None
) -> Any:
    """The callee's speech to text: OpenAI's streaming transcription (its own server-side turn detection),
    told what to expect by the assistant's `stt_context`: in its prompt, and as keywords where the
    model takes them (the plugin refuses them for the others, which then have the prompt alone). In
    `language`, the voice's, else OUTDIAL_STT_LANGUAGE."""
    stt = plugin("openai").STT
    options: dict[str, Any] = {
        "model": config.stt_model,
        "language": language or config.stt_language,
        "use_realtime": True,
        **_given(
            api_key=settings.openai_api_key, base_url=settings.openai_base_url, prompt=stt_prompt(context)
        ),
    }
    if context is not None and context.terms:
        with contextlib.suppress(ValueError):  # "keywords are only supported by ..."
            return stt(**options, keywords=list(context.terms))
    return stt(**options)


DERIVED_STT_VALUE_CHARS = 80
"""Longer prompt variables (notes, a history) are no names to spell, and would only bloat the prompt."""


def stt_context_for(assistant: CallAssistant, prompt_variables: Mapping[str, str]) -> SttContext | None:
    """The assistant's stt_context with what its prompt says about this call merged in (as Revox does):
    each short prompt variable the prompt uses ("Ada", "Sunny Energy": names to spell right), unless
    the context has an entry of that key already."""
    given = assistant.stt_context or SttContext()
    keys = {entry.key for entry in given.general}
    derived = [
        SttContextEntry(key=name, value=value)
        for name in placeholders(assistant.prompt)
        if (value := prompt_variables.get(name, "").strip())
        and len(value) <= DERIVED_STT_VALUE_CHARS
        and name not in keys
    ]
    if not (given.general or given.terms or derived):
        return None
    return given.model_copy(update={"general": [*given.general, *derived]})


def stt_prompt(context: SttContext | None) -> str | None:
    """The transcription's prompt: one `key: value` line per fact about the call, then the terms."""
    if context is None:
        return None
    lines = [f"{entry.key}: {entry.value}" for entry in context.general]
    if context.terms:
        lines.append("Terms: " + ", ".join(context.terms))
    return "\n".join(lines) or None


def build_vad() -> Any | None:
    """Silero VAD when installed (its model ships in the wheel); else turn detection comes from STT."""
    try:
        silero = importlib.import_module("livekit.plugins.silero")
    except ImportError:
        return None
    return silero.VAD.load()


def sound_options(assistant: CallAssistant) -> dict[str, Any]:
    """BackgroundAudioPlayer options: ambient sound with its volume; thinking sound with its volume and
    the probability it plays on a given turn."""
    from livekit.agents import AudioConfig, BuiltinAudioClip

    options: dict[str, Any] = {}
    if assistant.background_sound:
        clip = BuiltinAudioClip(BACKGROUND_CLIPS[assistant.background_sound])
        options["ambient_sound"] = AudioConfig(clip, volume=float(assistant.background_sound_volume))
    if assistant.thinking_sound:
        options["thinking_sound"] = [
            AudioConfig(
                BuiltinAudioClip(assistant.thinking_sound),
                volume=float(assistant.thinking_sound_volume),
                probability=float(assistant.thinking_sound_probability),
            )
        ]
    return options


def _given(**options: Any) -> dict[str, Any]:
    """Only the options that are set (the plugins take NOT_GIVEN, not None, for "use the default")."""
    return {k: v for k, v in options.items() if v is not None}
