"""The assistant's custom HTTP tools: input_schema -> tool parameters, templated requests, errors to the LLM.

Templating (the seed: "{{variable}} placeholders"): the values are the order's prompt variables, the
call's own (call_id, to_phone_number, from_phone_number) and the tool's arguments (which win).
- url: each value is percent-encoded (`{{city}}` = "New York" -> `New%20York`);
- query_params and headers: values as text;
- body_template: JSON, filled in one pass; a quoted placeholder `"{{n}}"` becomes the JSON value itself
  (number, boolean, string, null when absent), a placeholder inside a longer string is inserted
  JSON-escaped, a bare one outside strings as one JSON value (a number as written, other text quoted,
  null when absent). Without a template, POST/PUT/PATCH send the arguments as a JSON object.
Only the input_schema's arguments are taken from the LLM; a required one it leaves out is a ToolError.
A non-2xx answer, a timeout or a refused URL (activities/url_guard.py) is raised as ToolError, so the
LLM hears what went wrong.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import httpx
from livekit.agents import ToolError, function_tool
from livekit.agents.llm import RawFunctionTool

from activities.url_guard import UnsafeUrlError
from models.assistant import PLACEHOLDER, QUOTED_PLACEHOLDER, CustomToolRecord, FieldSpecRecord
from models.secrets import name_words, scrubbed, secret_name

MAX_OUTPUT_CHARS = 4000


def parameters_schema(fields: list[FieldSpecRecord]) -> dict[str, Any]:
    """JSON schema of a tool's parameters from the seed's input_schema items."""
    properties: dict[str, Any] = {}
    for spec in fields:
        prop: dict[str, Any] = {
            "string": {"type": "string"},
            "number": {"type": "number"},
            "boolean": {"type": "boolean"},
            "enum": {"type": "string", "enum": list(spec.enum_options or [])},
            "date": {"type": "string", "format": "date"},
            "datetime": {"type": "string", "format": "date-time"},
        }[spec.type]
        hint = {"date": "a date as YYYY-MM-DD", "datetime": "an ISO 8601 date-time"}.get(spec.type)
        description = " ".join(x for x in (spec.description, hint and f"({hint})") if x)
        if description:
            prop["description"] = description
        properties[spec.name] = prop
    return {
        "type": "object",
        "properties": properties,
        "required": [spec.name for spec in fields if spec.required],
        "additionalProperties": False,
    }


def render_url(template: str, values: Mapping[str, Any]) -> str:
    return PLACEHOLDER.sub(lambda m: quote(_text(values[m[1]]), safe="") if m[1] in values else "", template)


def with_params(url: str, params: list[tuple[str, str]]) -> httpx.URL:
    """`url` with `params` appended to its own query, which stays as written (httpx's `params` replaced
    it, and re-encoding it would change `%20` to `+`, or a bare `?wsdl` to `wsdl=`)."""
    parsed = httpx.URL(url)
    if not parsed.host:  # decoded here: a host IDNA refuses raises UnicodeError now, not when sent
        raise httpx.InvalidURL("no host")
    if not params:
        return parsed
    added = urlencode(params, quote_via=quote).encode("ascii")
    return parsed.copy_with(query=parsed.query + b"&" + added if parsed.query else added)


def render_text(template: str, values: Mapping[str, Any]) -> str:
    return PLACEHOLDER.sub(lambda m: _text(values[m[1]]) if m[1] in values else "", template)


# A placeholder in a body template: quoted as a whole JSON string (`"{{n}}"`), or bare (`{{n}}`).
_BODY_SLOT = re.compile(f"{QUOTED_PLACEHOLDER.pattern}|{PLACEHOLDER.pattern}")
_QUOTE = re.compile(r'(?<!\\)(?:\\\\)*"')  # a `"` that is not escaped


def render_body(template: str, values: Mapping[str, Any]) -> Any:
    """The JSON body, filled in one pass (a value is never filled in again: a callee's `{{api_token}}`
    stays text): a quoted placeholder becomes the typed JSON value; a bare one inside a string is
    inserted JSON-escaped, outside one as written (`{{count}}`: 3), null when absent, as the API's check
    of the template supposes. Raises ValueError if the result is not JSON."""
    parts, position, in_string = [], 0, False
    for slot in _BODY_SLOT.finditer(template):
        literal = template[position : slot.start()]
        in_string ^= len(_QUOTE.findall(literal)) % 2 == 1
        quoted, name = slot[1], slot[2]
        if quoted is not None:
            filled = json.dumps(values.get(quoted))
        elif in_string:
            filled = json.dumps(_text(values[name]))[1:-1] if name in values else ""
        else:
            filled = _json_value(values.get(name))
        parts += [literal, filled]
        position = slot.end()
    body = "".join([*parts, template[position:]])
    try:
        return json.loads(body)
    except json.JSONDecodeError as err:
        raise ValueError(f"body_template is not JSON once filled in: {err}") from None


def _json_value(value: Any) -> str:
    """A bare placeholder's value outside strings: one JSON value, whatever the LLM sent. A number,
    boolean or null (a prompt variable's "3" too) as written; any other text as a JSON string, so that
    `2, "unit_price": 0` never adds a field."""
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value if not isinstance(value, float) or math.isfinite(value) else str(value))
    text = str(value)
    try:
        parsed = json.loads(text)
    except ValueError:
        return json.dumps(text)
    scalar = (
        parsed is None
        or isinstance(parsed, bool | int)
        or (isinstance(parsed, float) and math.isfinite(parsed))
    )
    return text.strip() if scalar else json.dumps(text)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


CREDENTIAL_WORDS = frozenset({"key", "auth", "token", "secret", "signature", "sig", "session", "cookie"})


def _credential(name: str) -> bool:
    """A header's or a query parameter's name that says it carries a credential (`Authorization`,
    `X-Api-Key`, `access_token`), not a plain value the answer rightly repeats (`Accept`, `date`)."""
    return secret_name(name) or bool(CREDENTIAL_WORDS & set(name_words(name)))


def _sent_secrets(headers: Mapping[str, bytes], url: str, variables: Mapping[str, object]) -> list[str]:
    """What a tool's request carried as credentials, for its answer not to echo: the values of its
    credential headers (and what follows their scheme: `Bearer x`) and query parameters, the prompt
    variables named as secrets, and its URL's login. Not the LLM's arguments nor plain values."""
    values = [value.decode() for name, value in headers.items() if _credential(name)]
    values += [value.partition(" ")[2] for value in values]
    parts = urlsplit(url)
    values += [value for name, value in parse_qsl(parts.query) if _credential(name)]
    values += [str(value) for name, value in variables.items() if secret_name(name)]
    login = parts.netloc.rpartition("@")[0]
    if login:
        user, _, password = unquote(login).partition(":")
        values += [login, user, password]
    return values


class CustomHttpTool:
    """One seed custom tool, callable by the LLM. `http` is a guarded client (activities/url_guard.py):
    URLs that resolve to loopback/private addresses are refused unless OUTDIAL_ALLOW_PRIVATE_URLS=1."""

    def __init__(
        self,
        spec: CustomToolRecord,
        variables: Mapping[str, str],
        http: httpx.AsyncClient,
        *,
        timeout: float = 10.0,
    ) -> None:
        self.spec = spec
        self.variables = dict(variables)
        self.http = http
        self.timeout = timeout

    def tool(self) -> RawFunctionTool:
        schema = {
            "name": self.spec.name,
            "description": self.spec.description,
            "parameters": parameters_schema(self.spec.input_schema),
        }
        return function_tool(self._call, raw_schema=schema)

    async def _call(self, raw_arguments: dict[str, object]) -> str:
        spec = self.spec
        # The input_schema's arguments only: one the LLM adds (a callee may steer it) never replaces a
        # prompt variable, a header's token say, nor goes into the body.
        arguments = {f.name: raw_arguments[f.name] for f in spec.input_schema if f.name in raw_arguments}
        missing = [f.name for f in spec.input_schema if f.required and arguments.get(f.name) is None]
        if missing:
            raise ToolError(f"{spec.name}: missing required argument(s): {', '.join(missing)}")
        values = {**self.variables, **arguments}
        try:
            url = with_params(
                render_url(spec.url, values),
                [(p.key, render_text(p.value, values)) for p in spec.query_params],
            )
        except (httpx.InvalidURL, UnicodeError):  # UnicodeError: a host IDNA refuses, a lone surrogate
            raise ToolError(f"{spec.name}: its URL is not one once filled in") from None
        try:  # UTF-8 bytes: httpx sends text as ASCII only, and a name or a company has accents
            headers = {h.key: render_text(h.value, values).encode() for h in spec.headers}
        except UnicodeError:  # a lone surrogate
            raise ToolError(f"{spec.name}: a header is not one HTTP can send once filled in") from None
        body: Any = None
        if spec.body_template:
            try:
                body = render_body(spec.body_template, values)
            except ValueError as err:
                raise ToolError(str(err)) from None
        elif spec.method in ("POST", "PUT", "PATCH"):
            body = arguments
        try:
            response = await self.http.request(
                spec.method, url, headers=headers, json=body, timeout=self.timeout
            )
        except UnsafeUrlError as err:
            raise ToolError(f"{spec.name}: refused URL: {err}") from None
        except httpx.TimeoutException:
            raise ToolError(f"{spec.name}: the service did not answer within {self.timeout:g} s") from None
        except httpx.HTTPError as err:
            # the type only: httpx's message can quote the request, headers included (a secret)
            raise ToolError(f"{spec.name}: request failed: {type(err).__name__}") from None
        # Its answer goes to the LLM and the transcript (the Web UI, a webhook): without what it echoes of
        # the request's secrets, as a service refusing them often does ("invalid token Bearer …").
        secrets = _sent_secrets(headers, str(url), self.variables)
        if response.status_code >= 400:
            refusal = scrubbed(response.text[:500], secrets)
            raise ToolError(f"{spec.name}: HTTP {response.status_code}: {refusal}")
        return scrubbed(response.text[:MAX_OUTPUT_CHARS], secrets) or f"HTTP {response.status_code}"
