"""Masking what a call order holds as secrets wherever it is shown (`models.secrets.masked`): in any
shape the order was sent in, an order the workflow refuses as invalid included."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from models.secrets import masked

SECRET = "sk-live-0123456789-do-not-show"

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
# what a sender may put under a secret's key: right (`[{"key", "value"}]`, a string) or wrong
secret_shapes = st.sampled_from(
    [
        SECRET,
        [{"key": "Authorization", "value": SECRET}],
        {"Authorization": SECRET},
        [SECRET],
        [{"name": "Authorization", "secret": SECRET}],
        [[{"key": "k", "value": SECRET}]],
        {"nested": {"deeper": SECRET}},
        12345678901234567890,
    ]
)
# a URL may hold a secret in its login or its query
secret_urls = st.sampled_from(
    [
        f"https://user:{SECRET}@hooks.example.com/hook",
        f"https://{SECRET}@hooks.example.com/hook",
        f"https://hooks.example.com/hook?a=1&token={SECRET}#top",
        f"not-a-url-{SECRET}",
        f"http://[::1{SECRET}",
    ]
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["assistant", "custom_tools", "llm_model", "x"]), inner, max_size=3),
        st.builds(
            lambda key, value: {key: value},
            st.sampled_from(["api_key", "headers", "query_params"]),
            secret_shapes,
        ),
        st.builds(
            lambda key, url: {key: url}, st.sampled_from(["webhook_url", "url", "api_url"]), secret_urls
        ),
    ),
    max_leaves=12,
)


@given(documents)
def test_no_secret_shows_whatever_its_shape(document: Any) -> None:
    shown = json.dumps(masked(document))
    assert SECRET[:-4] not in shown and "1234567890123456" not in shown


def test_well_formed_entries_keep_their_names_and_the_rest_as_it_was() -> None:
    tool = {
        "name": "crm",
        "headers": [{"key": "Authorization", "value": SECRET}],
        "query_params": [{"key": "q", "value": "short"}],
    }
    assert masked({"custom_tools": [tool], "api_key": SECRET}) == {
        "custom_tools": [
            {
                "name": "crm",
                "headers": [{"key": "Authorization", "value": "…show"}],
                "query_params": [{"key": "q", "value": "…"}],
            }
        ],
        "api_key": "…show",
    }
    assert masked({"headers": {"Authorization": SECRET}}) == {"headers": {"Authorization": "…show"}}
    assert masked({"api_key": None, "headers": None}) == {"api_key": None, "headers": None}
    hook = f"https://bot:{SECRET}@hooks.example.com/v1/{{{{id}}}}?token={SECRET}&debug"
    shown = "https://…show@hooks.example.com/…?token=…show&debug"  # a webhook's path: its token, often
    assert masked({"webhook_url": hook}) == {"webhook_url": shown}
    assert masked({"url": "https://hooks.example.com/hook"}) == {"url": "https://hooks.example.com/hook"}


def test_a_webhook_path_a_fragment_and_a_tool_bodys_literals_are_secrets() -> None:
    """Slack's and Zapier's webhook URLs hold their token in the path, an OAuth redirect in the fragment,
    and a key is often written into a tool's body: all three showed in the Web UI and webhooks."""
    slack = "https://hooks.slack.com/services/T000/B000/XyZSecretPathToken123"
    assert masked({"webhook_url": slack}) == {"webhook_url": "https://hooks.slack.com/…n123"}
    url = "https://crm.example.com/v1/{{id}}#access_token=FRAGSECRET-0001"
    assert masked({"url": url}) == {"url": "https://crm.example.com/v1/{{id}}#…0001"}
    body = '{"apiKey": "BODYSECRET-789-abcdef", "token": "{{crm_token}}", "n": 3, "q": "a \\"quoted\\" one!"}'
    shown = '{"apiKey": "…cdef", "token": "{{crm_token}}", "n": 3, "q": "…one!"}'
    assert masked({"body_template": body}) == {"body_template": shown}
    mixed = '{"auth": "key=sk_live_51HxYzABCDEF123456 user={{email}}"}'  # a review: shown whole
    assert masked({"body_template": mixed}) == {"body_template": '{"auth": "…ser={{email}}"}'}


def test_a_contact_made_of_a_masked_prompt_variable_is_masked_too() -> None:
    """The Call's contact comes from its prompt variables: one a tool sends as a secret was masked under
    prompt_variables and shown in clear under contact, beside it."""
    tool = {
        "name": "crm",
        "url": "https://crm.example",
        "headers": [{"key": "X-Api-Key", "value": "{{email}}"}],
    }
    call = {
        "assistant": {"custom_tools": [tool]},
        "prompt_variables": {"email": SECRET, "first_name": "Ada"},
        "contact": {"email": SECRET, "first_name": "Ada", "company": None},
    }
    assert masked(call)["contact"] == {"email": "…show", "first_name": "Ada", "company": None}
    untold = masked({**call, "assistant": None})  # a state write: every variable, so the contact too
    assert untold["contact"] == {"email": "…show", "first_name": "…", "company": None}
    pasted = {**call, "prompt_variables": {"email": f"{SECRET} ", "tags": ["vip"]}}  # the contact strips it
    assert masked(pasted)["contact"] == {"email": "…show", "first_name": "Ada", "company": None}
    assert masked({"prompt_variables": {"a": SECRET}, "contact": {"tags": ["x"]}})["contact"] == {
        "tags": ["x"]
    }
    odd_tools = {"assistant": {"custom_tools": [{"headers": 1, "query_params": "k"}]}, "prompt_variables": {}}
    assert masked(odd_tools)["assistant"]["custom_tools"] == [{"headers": "…", "query_params": "…"}]


def test_the_callers_own_data_is_shown_as_given_but_for_variables_a_tool_sends_as_a_secret() -> None:
    """Masking went by key name wherever the key sat: a webhook changed an extracted field named `url`
    and metadata named `headers`. The caller's data is shown as given, but for the prompt variables a
    custom tool puts in a header or a query (a per-order token), which are secrets there too: all of
    them where no assistant beside them tells which (the Web UI showed a stored assistant's in clear)."""
    tool = {
        "name": "crm",
        "url": "https://crm.example/leads/{{lead}}?key={{crm_key}}",
        "headers": [{"key": "Authorization", "value": "Bearer {{ crm_token }}"}],
        "query_params": [{"key": "sig", "value": "{{signature}}"}],
    }
    variables = {
        "lead": "42",
        "crm_key": SECRET,
        "crm_token": SECRET,
        "signature": SECRET,
        "url": "https://x/?a=b",
    }
    order = {
        "assistant": {"custom_tools": [tool]},
        "prompt_variables": variables,
        "metadata": {"url": "https://crm.example/leads/42?tab=notes", "headers": "Lead from form"},
        "call_attempts": [{"structured_output": {"url": "https://shop.example/?lang=en", "api_key": "Alex"}}],
        "contact": {"url": "https://x/?a=b"},
    }
    shown = masked(order)
    untold = {"crm": SECRET, "city": "Lyon"}  # a stored assistant's tool may send `crm`: all masked
    by_id = masked({"assistant_id": "a1", "prompt_variables": untold})
    later = masked({"call": {"assistant": None, "prompt_variables": untold}, "seq": 2})  # a state write
    assert by_id["prompt_variables"] == later["call"]["prompt_variables"] == {"crm": "…show", "city": "…"}
    named = {"crm_Token": SECRET, "API_KEY": SECRET, "secretary_name": "Ada", "access-key": SECRET, "n": "4"}
    words = masked({"assistant": {"custom_tools": []}, "prompt_variables": named})  # no tool: by name
    assert words["prompt_variables"] == {
        "crm_Token": "…show",
        "API_KEY": "…show",
        "secretary_name": "Ada",
        "access-key": "…show",
        "n": "4",
    }
    assert shown["prompt_variables"] == {
        "lead": "42",
        "crm_key": "…show",
        "crm_token": "…show",
        "signature": "…show",
        "url": "https://x/?a=b",
    }
    assert shown["metadata"] == order["metadata"] and shown["contact"] == order["contact"]
    assert shown["call_attempts"] == order["call_attempts"]
    assert shown["assistant"]["custom_tools"][0]["headers"] == [{"key": "Authorization", "value": "…n }}"}]
