"""Prompt templating shared by the agent, the simulated callee and notifications."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from models.assistant import PLACEHOLDER

if TYPE_CHECKING:
    from models.assistant import CallAssistant


def call_variables(
    call_id: str, to_phone_number: str, from_phone_number: str, prompt_variables: Mapping[str, str]
) -> dict[str, str]:
    """Values for {{placeholders}}: the order's prompt_variables, plus the call's own id and numbers."""
    return {
        "call_id": call_id,
        "to_phone_number": to_phone_number,
        "from_phone_number": from_phone_number,
        **prompt_variables,
    }


def interpolate(template: str, variables: Mapping[str, str]) -> str:
    """Replace `{{name}}` with its value; unknown names stay as written so a missing variable is visible."""
    return PLACEHOLDER.sub(lambda m: variables.get(m[1], m[0]), template)


def placeholders(template: str) -> list[str]:
    """The variable names a template uses, each once, in order."""
    return list(dict.fromkeys(PLACEHOLDER.findall(template)))


def build_instructions(
    assistant: CallAssistant,
    variables: Mapping[str, str],
    *,
    to_phone_number: str,
    now: datetime,
    timezone: str | None = None,
) -> str:
    """The agent's system instructions: the assistant's prompt (variables filled in), how this call
    works (which tools exist and when to use them), and the FAQ."""
    local = now.astimezone(ZoneInfo(timezone)) if timezone else now
    lines = [
        interpolate(assistant.prompt, variables).strip(),
        "",
        "## This call",
        f"You placed this phone call to {to_phone_number}. "
        f"It is {local:%A %d %B %Y, %H:%M} ({local.tzname()}).",
        "You are speaking, not writing: short sentences, no lists, no markdown, no emojis.",
        "When the conversation is over, or the person wants to stop, call `end_call` (do not say goodbye "
        "yourself: the tool does).",
    ]
    if assistant.transfer_phone_number:
        labels = [d.label for d in assistant.transfer_destinations]
        if len(labels) > 1:  # the client's routing: the prompt's own rules refer to these labels
            how = (
                f"choose where to transfer them by the rules above, among: {', '.join(labels)}. Tell them "
                "whom you are transferring them to and call `transfer_to_human` with that label as "
                "`destination`."
            )
        else:
            whom = f" to {labels[0]}" if labels else ""  # the client's label: "Sales"
            how = f"tell them you are transferring them{whom} and call `transfer_to_human`."
        lines.append(
            f"If the person asks for a human, or you cannot help them, {how} If the transfer fails, say "
            "nobody is available right now and carry on."
        )
    if assistant.ivr_navigation_enabled:
        lines.append(
            "If an automated phone menu answers, navigate it towards a person with `send_dtmf` (digits "
            "as the menu asks); call `skip_turn` to stay silent while the menu is still talking; call "
            "`human_reached` as soon as a live person is on the line, then start the conversation."
        )
    if assistant.sms_enabled:
        lines.append("You can text the person with `send_sms` when they agree to receive a text.")
    if assistant.calendly:
        lines.append(
            "You can book a meeting: `check_availability` lists free slots (show at most three), "
            "`book_meeting` books one once the person chose it and gave their name and email."
        )
    if assistant.faq_items:
        lines += ["", "## Frequently asked questions (answer with these when they fit)"]
        for item in assistant.faq_items:
            lines += [
                f"Q: {interpolate(item.question, variables)}",
                f"A: {interpolate(item.answer, variables)}",
            ]
    return "\n".join(lines)
