"""The simulated providers' outbox (SMS, Slack): each message once per idempotency key, in memory and,
when a path is given, as a JSON line in a file the demo or an operator can read."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

M = TypeVar("M")


class Outbox(Generic[M]):
    def __init__(self, path: str | Path | None = None) -> None:
        self.messages: dict[str, M] = {}
        self._path = Path(path) if path else None

    def record(self, key: str, message: M, line: dict[str, Any]) -> bool:
        """Keep `message` (and append `line`) unless `key` was recorded before; whether it was."""
        if key in self.messages:
            return True
        self.messages[key] = message
        if self._path:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with self._path.open("a") as outbox:
                outbox.write(json.dumps(line | {"at": datetime.now(UTC).isoformat()}) + "\n")
        return False
