"""How fast a campaign starts its orders: a token bucket, pure (the time is a parameter).

Starting 10,000 orders at once would hand the worker 10,000 x (check, prepare, persist) activities in
one go and starve the calls in progress; the bucket lets `burst` start at once and then
`rows_per_second` on average, whatever the list's length.
"""

from __future__ import annotations

import math
from datetime import datetime

from models.campaign import CampaignPace, PaceState

_EPSILON = 1e-9  # float refills that land a hair under a whole token still count as one


def take(state: PaceState, now: datetime, pace: CampaignPace, wanted: int) -> tuple[int, PaceState, float]:
    """(rows to start now, the bucket after, seconds to wait before the next one may start).

    The wait is 0 when every wanted row was granted, else the time for one token to refill."""
    if state.at is None:
        tokens = float(pace.burst)
    else:
        elapsed = max(0.0, (now - state.at).total_seconds())
        tokens = min(float(pace.burst), state.tokens + elapsed * pace.rows_per_second)
    granted = max(0, min(wanted, math.floor(tokens + _EPSILON)))
    left = max(0.0, tokens - granted)
    # Rounded up to the millisecond (a timer's precision), so waiting exactly that refills a token.
    wait = (
        0.0 if granted >= wanted else max(0.001, math.ceil((1.0 - left) / pace.rows_per_second * 1000) / 1000)
    )
    return granted, PaceState(tokens=left, at=now), wait
