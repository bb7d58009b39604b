"""`Server-Timing` (W3C): where a request's time went inside the API, shown by browsers' devtools and
read by `benchmarks/placement.py` to split placement latency into the order's checks and its start."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class ServerTiming:
    """Named phases of one request, in the order they ran."""

    def __init__(self) -> None:
        self._phases: list[tuple[str, float]] = []

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self._phases.append((name, (time.perf_counter() - started) * 1000))

    async def timed(self, name: str, awaitable: Awaitable[T]) -> T:
        """Await `awaitable` as phase `name`: for a step that runs beside others, inside a phase."""
        with self.phase(name):
            return await awaitable

    def header(self) -> dict[str, str]:
        """The response header: `checks;dur=0.412, start;dur=2.031` (milliseconds)."""
        return {"Server-Timing": ", ".join(f"{name};dur={ms:.3f}" for name, ms in self._phases)}


def parse_server_timing(value: str) -> dict[str, float]:
    """`{"checks": 0.412, "start": 2.031}` from a `Server-Timing` header (metrics without `dur` omitted)."""
    phases: dict[str, float] = {}
    for metric in filter(None, (part.strip() for part in value.split(","))):
        name, *params = (piece.strip() for piece in metric.split(";"))
        for param in params:
            key, _, number = param.partition("=")
            if key == "dur":
                phases[name] = float(number)
    return phases
