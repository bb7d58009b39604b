"""Prompt templating shared by the agent, the simulated callee and notifications."""

from __future__ import annotations

import re
from collections.abc import Mapping

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")


def interpolate(template: str, variables: Mapping[str, str]) -> str:
    """Replace `{{name}}` with its value; unknown names stay as written so a missing variable is visible."""
    return _PLACEHOLDER.sub(lambda m: variables.get(m[1], m[0]), template)
