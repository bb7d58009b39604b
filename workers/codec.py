"""Payload encryption: call orders carry secrets (a custom LLM's api_key, custom tool headers), and
Temporal stores every workflow input, activity argument and result in its history, which the Web UI,
the CLI and the server's database show to anyone who can read them.

`EncryptionCodec` encrypts each payload with AES-256-GCM before it leaves the worker or client, so the
history holds ciphertext only; failure messages are encoded too (their text can quote inputs). Keys
come from OUTDIAL_CODEC_KEY: comma-separated 32-byte keys (base64 or hex), the first encrypts, all
decrypt (rotation: put the new key first, keep the old ones until their histories are gone). Payloads
that are not encrypted pass through, so turning encryption on keeps older histories readable.

Operators who hold the key read histories through the codec server (`codec_app`), with every secret
masked (`models.secrets`: the history is for reading, and nothing shown holds a secret): the Web UI
(`temporal server start-dev --ui-codec-endpoint http://127.0.0.1:8234`) and the CLI
(`temporal workflow show --codec-endpoint http://127.0.0.1:8234 ...`) post payloads to /decode.
Without it they see only `binary/encrypted`.

    outdial codec keygen          # print a new key
    outdial codec serve [--port]  # run the codec server with OUTDIAL_CODEC_KEY
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

from models.secrets import masked
from models.settings import Settings

log = logging.getLogger(__name__)

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
DEFAULT_CODEC_PORT = 8234
DEV_KEY_FILE = ".outdial/codec.key"


class CodecKeyError(ValueError):
    """OUTDIAL_CODEC_KEY is not a list of 32-byte keys."""


def generate_key() -> str:
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()


def parse_keys(value: str) -> list[bytes]:
    """Comma-separated keys, each 32 bytes as base64 (standard or URL-safe) or 64 hex digits."""
    keys = []
    for text in (part.strip() for part in value.split(",")):
        if not text:
            continue
        key = None
        if len(text) == 64:
            try:
                key = bytes.fromhex(text)
            except ValueError:
                key = None
        if key is None:
            try:
                key = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4))
            except (binascii.Error, ValueError):
                key = None
        if key is None or len(key) != 32:
            raise CodecKeyError(
                "OUTDIAL_CODEC_KEY: each key must be 32 bytes, base64 or hex "
                "(make one with `outdial codec keygen`)"
            )
        keys.append(key)
    if not keys:
        raise CodecKeyError("OUTDIAL_CODEC_KEY is empty")
    return keys


def key_id(key: bytes) -> str:
    """A short public name for a key (a hash prefix; says nothing about the key)."""
    return hashlib.sha256(b"outdial-codec-key-id:" + key).hexdigest()[:16]


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each serialized payload; a random 96-bit nonce per payload; the key id as AAD."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise CodecKeyError("at least one key is needed")
        self._ciphers = {key_id(key): AESGCM(key) for key in keys}
        self._current = key_id(keys[0])

    @classmethod
    def from_config(cls, value: str) -> EncryptionCodec:
        return cls(parse_keys(value))

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        cipher, kid = self._ciphers[self._current], self._current.encode()
        encoded = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            data = nonce + cipher.encrypt(nonce, payload.SerializeToString(), kid)
            encoded.append(Payload(metadata={"encoding": ENCODING, KEY_ID: kid}, data=data))
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                decoded.append(payload)  # written before encryption was turned on
                continue
            kid = payload.metadata.get(KEY_ID, b"")
            cipher = self._ciphers.get(kid.decode())
            if cipher is None:
                raise ValueError(f"payload encrypted with unknown key id {kid.decode()!r}")
            nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
            decoded.append(Payload.FromString(cipher.decrypt(nonce, sealed, kid)))
        return decoded


def data_converter(settings: Settings) -> DataConverter:
    """outdial's converter: pydantic, plus encryption (payloads and failure messages) when a key is set."""
    if not settings.codec_key:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec.from_config(settings.codec_key),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def ensure_dev_codec_key(settings: Settings, path: str | Path = DEV_KEY_FILE) -> Settings:
    """The local stack encrypts too: without OUTDIAL_CODEC_KEY it keeps a key in `path` (mode 0600), made
    once, so histories written by earlier runs stay readable."""
    if settings.codec_key:
        return settings
    file = Path(path)
    if not file.exists():
        file.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(generate_key() + "\n")
    return settings.model_copy(update={"codec_key": file.read_text().strip()})


# --- the codec server (Web UI and CLI) ------------------------------------------------------------------


def codec_app(
    codec: PayloadCodec, *, allowed_origins: Sequence[str], auth: str | None = None
) -> web.Application:
    """POST /encode and /decode with `{"payloads": [...]}` (protobuf JSON), as the Web UI and CLI expect.

    CORS admits only `allowed_origins` (the Web UI); with `auth` set, requests must carry
    `Authorization: <auth>` (the CLI's --codec-auth; the Web UI's codec "pass access token" setting).
    """
    origins = set(allowed_origins)

    def cors(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Content-Type, X-Namespace, Authorization"
            response.headers["Vary"] = "Origin"
        return response

    async def preflight(request: web.Request) -> web.StreamResponse:
        return cors(request, web.Response(status=204))

    def handler(encode: bool):  # type: ignore[no-untyped-def]
        async def handle(request: web.Request) -> web.StreamResponse:
            if auth and not hmac.compare_digest(request.headers.get("Authorization", ""), auth):
                return cors(request, web.json_response({"error": "unauthorized"}, status=401))
            try:
                payloads = json_format.Parse(await request.text(), Payloads())
                if encode:
                    items = await codec.encode(payloads.payloads)
                else:
                    items = shown(await codec.decode(payloads.payloads))
            except Exception as err:  # a bad request or a foreign key: say so, never crash
                log.warning("codec %s failed: %s", "encode" if encode else "decode", type(err).__name__)
                return cors(request, web.json_response({"error": type(err).__name__}, status=400))
            body = json_format.MessageToJson(Payloads(payloads=items))
            return cors(request, web.Response(text=body, content_type="application/json"))

        return handle

    # A history's payloads come in one request: an order of 2 MB is some 2.7 MB of base64, and the
    # CLI's `workflow show` sends many at once (aiohttp's default, 1 MiB, refused them).
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    for path, encode in (("/encode", True), ("/decode", False)):
        app.router.add_post(path, handler(encode))
        app.router.add_route("OPTIONS", path, preflight)
    return app


def shown(payloads: Sequence[Payload]) -> list[Payload]:
    """Decoded payloads as the Web UI and CLI may show them: JSON with every secret masked
    (models/secrets.py), so reading a history never reveals an api_key or a tool header."""
    result = []
    for payload in payloads:
        if payload.metadata.get("encoding") == b"json/plain":
            try:
                data = json.dumps(masked(json.loads(payload.data)), separators=(",", ":")).encode()
            except ValueError:
                data = payload.data
            payload = Payload(metadata=dict(payload.metadata), data=data)
        result.append(payload)
    return result


MAX_REQUEST_BYTES = 64 * 1024 * 1024


def web_ui_origins(settings: Settings) -> list[str]:
    """The dev server's Web UI, and the one at OUTDIAL_TEMPORAL_UI_URL (a self-hosted UI, Temporal
    Cloud's): the browser sends their pages' decode requests."""
    port = settings.dev_server.ui_port
    origins = [f"http://localhost:{port}", f"http://127.0.0.1:{port}"]
    origin = _origin(settings.temporal_ui_url) if settings.temporal_ui_url else None
    if origin and origin not in origins:
        origins.append(origin)
    return origins


def _origin(url: str) -> str | None:
    """The origin a browser sends for pages at `url`: scheme and host in lower case, the port only when
    not the scheme's own, no login (`https://Temporal.example.com:443/x` is `https://temporal.example.com`)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("http", "https") or not host:
        log.warning("OUTDIAL_TEMPORAL_UI_URL %r is not an http(s) URL: no Web UI admitted from it", url)
        return None
    host = f"[{host}]" if ":" in host else host.encode("idna").decode()  # bücher.example: xn--bcher-kva
    default = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" + (f":{port}" if port and port != default else "")


async def start_codec_server(
    settings: Settings, *, host: str = "127.0.0.1", port: int = DEFAULT_CODEC_PORT, auth: str | None = None
) -> web.AppRunner:
    """Serve the codec in the running loop (the dev stack); `await runner.cleanup()` stops it."""
    if not settings.codec_key:
        raise CodecKeyError("the codec server needs OUTDIAL_CODEC_KEY")
    app = codec_app(
        EncryptionCodec.from_config(settings.codec_key), allowed_origins=web_ui_origins(settings), auth=auth
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
