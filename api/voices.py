"""Voices: a catalog of Cartesia and ElevenLabs stock voices kept as data (`api/voices.json`), so an
assistant's `voice.id` can be chosen without a provider account. Preview proxies the provider's TTS
when its key is configured (CARTESIA_API_KEY / ELEVENLABS_API_KEY); otherwise it, like clone, answers
501 saying what is missing."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Annotated

import httpx
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from api.auth import Authenticated
from api.errors import ERRORS, ApiError, ErrorBody, not_found
from api.schemas import (
    VoiceCloneParams,
    VoiceInfo,
    VoiceListResponse,
    VoicePreviewParams,
    VoiceProviderName,
    VoiceRetrieveResponse,
    VoiceSummary,
)
from api.unicode import UnicodeRoute

router = APIRouter(route_class=UnicodeRoute, tags=["voices"])
CATALOG = Path(__file__).with_name("voices.json")
# The variables the voice agent reads too (livekit-agents' plugins); ElevenLabs' also by its long name.
PROVIDER_KEYS = {"cartesia": ("CARTESIA_API_KEY",), "elevenlabs": ("ELEVEN_API_KEY", "ELEVENLABS_API_KEY")}
PROVIDER_URLS = {"cartesia": "https://api.cartesia.ai", "elevenlabs": "https://api.elevenlabs.io"}
CARTESIA_VERSION = "2025-04-16"
DEFAULT_PREVIEW_TEXT = "Hello! This is a preview of my voice. How does it sound?"
NOT_IMPLEMENTED = {501: {"model": ErrorBody, "description": "No key configured for the provider"}}


@cache
def catalog() -> tuple[VoiceInfo, ...]:
    return tuple(VoiceInfo.model_validate(v) for v in json.loads(CATALOG.read_text())["voices"])


@router.get("/voices", response_model=VoiceListResponse, responses=ERRORS, summary="List voices")
async def list_voices(_: Authenticated) -> JSONResponse:
    return JSONResponse({"voices": [v.model_dump(mode="json", by_alias=True) for v in catalog()]})


@router.get("/voices/{id}", response_model=VoiceRetrieveResponse, responses=ERRORS, summary="Get a voice")
async def retrieve_voice(
    id: str,
    provider: Annotated[VoiceProviderName, Query(description="The voice's provider")],
    _: Authenticated,
) -> JSONResponse:
    for voice in catalog():
        if voice.id == id and voice.provider == provider:
            summary = VoiceSummary(id=voice.id, name=voice.name, description=voice.description)
            return JSONResponse({"voice": summary.model_dump(mode="json")})
    raise not_found(f"{provider} voice", id)


@router.delete("/voices/{id}", responses=ERRORS, summary="Delete a cloned voice")
async def delete_voice(id: str, _: Authenticated) -> JSONResponse:
    """Only cloned voices can be deleted, and outdial has none (clone is not available)."""
    raise not_found("cloned voice", id)


def _provider_key(provider: str) -> str:
    variables = PROVIDER_KEYS.get(provider, ())
    # (stripped: a key read from a file ends in a newline, which no HTTP header may hold)
    key = next((os.environ[v].strip() for v in variables if os.environ.get(v, "").strip()), None)
    if not key:
        hint = (
            f"set {variables[0]} to enable it" if variables else "this provider is not supported by outdial"
        )
        raise ApiError(501, "not_implemented", f"voice preview needs a {provider} API key: {hint}")
    return key


def _hidden(text: str, key: str) -> str:
    """An error's text without the operator's key, which it may quote (the request's header): the key
    is the deployment's, not the caller's to read."""
    return text.replace(key, "***")


def _base_url(provider: str) -> str:
    return os.environ.get(f"{provider.upper()}_BASE_URL", PROVIDER_URLS[provider]).rstrip("/")


@router.post(
    "/voices/preview",
    responses={**ERRORS, **NOT_IMPLEMENTED, 200: {"content": {"audio/mpeg": {}}}},
    summary="Preview a voice",
)
async def preview_voice(params: VoicePreviewParams, _: Authenticated) -> Response:
    """MP3 audio of `text` (or a short default) in the voice, from the provider's TTS."""
    key = _provider_key(params.provider)
    text = params.text or DEFAULT_PREVIEW_TEXT
    if params.provider == "cartesia":
        generation = {
            k: v for k, v in {"speed": params.speed, "volume": params.volume}.items() if v is not None
        }
        request = {
            "url": f"{_base_url('cartesia')}/tts/bytes",
            "headers": {"X-API-Key": key, "Cartesia-Version": CARTESIA_VERSION},
            "json": {
                "model_id": params.model or "sonic-3",
                "transcript": text,
                "voice": {"mode": "id", "id": params.voice_id},
                "output_format": {"container": "mp3", "sample_rate": 44100, "bit_rate": 128000},
                **({"generation_config": generation} if generation else {}),
            },
        }
    else:
        request = {
            "url": f"{_base_url('elevenlabs')}/v1/text-to-speech/{params.voice_id}",
            "headers": {"xi-api-key": key},
            "json": {
                "text": text,
                "model_id": "eleven_flash_v2_5",
                **({"voice_settings": {"speed": params.speed}} if params.speed is not None else {}),
            },
        }
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.post(**request)
    except httpx.HTTPError as err:
        detail = _hidden(str(err), key)
        raise ApiError(503, "unavailable", f"{params.provider} did not answer: {detail}") from err
    if answer.status_code in (400, 404, 422):
        detail = _hidden(answer.text[:300], key)
        raise ApiError(422, "validation_error", f"{params.provider} refused the preview: {detail}")
    if answer.status_code >= 300:  # final unless waiting may help (429, 5xx): the client would retry it
        status = answer.status_code
        retryable = status in (408, 429) or status >= 500
        hint = f" (check {params.provider.upper()}_API_KEY)" if status in (401, 403) else ""
        raise ApiError(503, "unavailable", f"{params.provider} answered {status}{hint}", retryable=retryable)
    return Response(answer.content, media_type=answer.headers.get("content-type", "audio/mpeg"))


@router.post("/voices/clone", responses={**ERRORS, **NOT_IMPLEMENTED}, summary="Clone a voice")
async def clone_voice(params: VoiceCloneParams, _: Authenticated) -> JSONResponse:
    """Not available: outdial keeps no cloned voices (clone in the provider's console, then use its id)."""
    hint = (
        "clone the voice in Cartesia's console and use its id in the assistant's voice"
        if os.environ.get("CARTESIA_API_KEY")
        else "it would need CARTESIA_API_KEY, and outdial does not store cloned voices yet"
    )
    raise ApiError(501, "not_implemented", f"voice cloning is not available: {hint}")
