"""Masking the secrets a call order carries (a custom LLM's `api_key`, custom tool headers and query
parameters) wherever its JSON is shown rather than used: webhooks, the codec server the Web UI and
CLI read histories through, and the `outdial` command's printouts. Workers decode in full; nothing
shown ever holds a secret in clear."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

from pydantic import BaseModel

from models.assistant import PLACEHOLDER

SECRET_KEYS = frozenset({"api_key"})  # a value under this key is a secret, wherever it sits
# each `{"key", "value"}` item's value is a secret (tool headers; query parameters often carry a key)
SECRET_LISTS = frozenset({"headers", "query_params"})
# a URL's login and query values are secrets (`https://user:pw@host/hook?token=...`); its path is shown
SECRET_URLS = frozenset({"api_url", "precall_lookup_url", "url", "webhook_url"})
# a webhook URL's path is its token too (Slack's `/services/T…/B…/<token>`, Zapier's, Discord's)
SECRET_PATHS = frozenset({"webhook_url"})
# The caller's own data, shown as given whatever its keys are called (an extracted field named `url`),
# but for the variables a custom tool's header or query is made of (`Bearer {{crm_token}}`).
CUSTOMER_DATA = frozenset({"metadata", "prompt_variables", "variables", "structured_output", "contact"})
VARIABLES = frozenset({"prompt_variables", "variables"})


def mask(value: object) -> str:
    """`…6789`: the last 4 characters of a long secret, to tell keys apart; nothing of a short one."""
    text = str(value or "")
    return f"…{text[-4:]}" if len(text) >= 16 else "…"


def masked(value: Any) -> Any:
    """A copy of JSON `value` with every secret masked (the rest as it was)."""
    if isinstance(value, list):
        return [masked(item) for item in value]
    if not isinstance(value, dict):
        return value
    shown: dict[str, Any] = {}
    for key, item in value.items():
        if key in VARIABLES:
            shown[key] = _masked_variables(item, value.get("assistant"))
        elif key == "contact":
            shown[key] = _masked_contact(item, value)
        elif key in CUSTOMER_DATA:
            shown[key] = item
        elif key in SECRET_KEYS and item is not None:
            shown[key] = mask(item)
        elif key in SECRET_LISTS and item is not None:
            shown[key] = _masked_entries(item)
        elif key in SECRET_URLS and isinstance(item, str):
            shown[key] = _masked_url(item, path=key in SECRET_PATHS)
        elif key == "body_template" and isinstance(item, str):
            shown[key] = _masked_body(item)
        else:
            shown[key] = masked(item)
    return shown


def scrubbed(text: str, secrets: Iterable[str]) -> str:
    """`text` (an answer quoted to someone: a summary, a transcript) without the secrets it may echo, as
    written and as a URL or a form encodes them. Longest first, so a secret holding another goes whole;
    under 4 characters, none is."""
    kept = {secret for secret in secrets if secret}
    kept |= {encoded(secret, safe="") for secret in kept for encoded in (quote, quote_plus)}
    kept |= {secret.replace("/", "\\/") for secret in kept}  # as JSON may escape it (PHP's json_encode)
    for secret in sorted((s for s in kept if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


# A variable named so is a secret, whatever the tools beside it say (one may be put in a prompt, or a
# tool added to the stored assistant later). By whole words of its name (`crm_token`, `apiKey`,
# `access-key`), so `secretary_name` is no secret.
SECRET_WORDS = frozenset({"token", "secret", "password", "passwd", "apikey", "bearer", "authorization"})
SECRET_PAIRS = frozenset({("api", "key"), ("access", "key"), ("private", "key"), ("client", "secret")})


def name_words(name: str) -> list[str]:
    """`crm_token`, `apiKey`, `X-Api-Key` as their lower-case words."""
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower().replace("_", " ").replace("-", " ").split()


def secret_name(name: str) -> bool:
    words = name_words(name)
    pairs = set(zip(words, words[1:], strict=False))
    return bool(SECRET_WORDS & set(words) or SECRET_PAIRS & pairs)


def _masked_variables(variables: Any, assistant: Any) -> Any:
    """The variables, those a custom tool of `assistant` sends in a header, a query parameter or its
    URL's query (a secret passed per order) and those named as secrets masked; all of them where no
    assistant is beside them to tell (an order by `assistant_id`, a campaign's rows, the order's state
    writes after the first), since a tool may send any of them."""
    if not isinstance(variables, dict):
        return variables
    if not isinstance(assistant, dict):
        return {name: mask(value) for name, value in variables.items()}
    secret = _secret_variables(assistant)
    return {
        name: mask(value) if name in secret or secret_name(str(name)) else value
        for name, value in variables.items()
    }


def _masked_contact(contact: Any, call: dict[str, Any]) -> Any:
    """The Call's contact, made of its prompt variables: a value masked among them is masked here too."""
    variables = call.get("prompt_variables")
    if not isinstance(contact, dict) or not isinstance(variables, dict):
        return contact
    shown = _masked_variables(variables, call.get("assistant"))
    secret = {  # as the contact holds them: stripped (`contact_of`)
        value.strip()
        for name, value in variables.items()
        if isinstance(value, str) and shown.get(name) != value
    }
    return {
        name: mask(value) if isinstance(value, str) and value.strip() in secret - {""} else value
        for name, value in contact.items()
    }


def _secret_variables(assistant: Any) -> set[str]:
    tools = assistant.get("custom_tools") if isinstance(assistant, dict) else None
    names: set[str] = set()
    for tool in tools if isinstance(tools, list) else []:
        if not isinstance(tool, dict):
            continue
        entries = [
            e for key in ("headers", "query_params") if isinstance(tool.get(key), list) for e in tool[key]
        ]
        templates = [str(e.get("value") or "") for e in entries if isinstance(e, dict)]
        templates.append(str(tool.get("url") or "").partition("?")[2])
        names.update(name for template in templates for name in PLACEHOLDER.findall(template))
    return names


def _masked_entries(item: Any) -> Any:
    """Headers or query parameters as sent: `{"key", "value"}` items keep their key; in any other
    shape (a mapping, a bare string: an order refused as invalid is shown too) every value is masked."""
    if isinstance(item, dict):
        return {name: mask(value) for name, value in item.items()}
    if not isinstance(item, list):
        return mask(item)
    return [
        {**entry, "value": mask(entry.get("value"))}
        if isinstance(entry, dict) and set(entry) <= {"key", "value"}
        else _masked_entries(entry)
        for entry in item
    ]


PLACEHOLDER_TOKEN = re.compile(r"(\{\{[^{}]*\}\})")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"(\s*:)?')


def _masked_body(template: str) -> str:
    """A tool's body template with its literal string values masked (`{"apiKey": "…0789"}`, a key put
    in the body): its keys and `{{placeholders}}` shown, for its shape; a variable is masked as one."""

    def shown(literal: re.Match[str]) -> str:
        text = literal.group(0)
        if literal.group(1):  # a key
            return text
        # the text around its placeholders (`key=sk_live_… user={{email}}`), each run masked
        pieces = PLACEHOLDER_TOKEN.split(text[1:-1])
        kept = [
            piece
            if PLACEHOLDER_TOKEN.fullmatch(piece) or not piece
            else json.dumps(mask(piece), ensure_ascii=False)[1:-1]
            for piece in pieces
        ]
        return '"' + "".join(kept) + '"'

    return _JSON_STRING.sub(shown, template)


def _masked_url(url: str, *, path: bool = False) -> str:
    """The URL with its login, each query value and its fragment masked (`?token=…`), its path too when
    `path` (a webhook's); `{{placeholders}}` included."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return mask(url)
    if not (parts.scheme and parts.netloc):  # not a URL at all (an order refused as invalid): all of it
        return mask(url)
    login, at, host = parts.netloc.rpartition("@")
    query = "&".join(
        f"{name}{equals}{mask(value) if equals else ''}"
        for name, equals, value in (piece.partition("=") for piece in parts.query.split("&"))
    )
    netloc = f"{mask(login)}@{host}" if at else host
    shown_path = f"/{mask(parts.path)}" if path and parts.path.strip("/") else parts.path
    fragment = mask(parts.fragment) if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, shown_path, query if parts.query else "", fragment))


def masked_json(model: BaseModel) -> str:
    """`model` as JSON to show (the CLI's and the demo's printouts), its secrets masked."""
    return json.dumps(masked(model.model_dump(mode="json")), ensure_ascii=False)
