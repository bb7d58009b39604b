"""Campaign pacing (workflows/pacing.py): never more than burst + rate x elapsed, always progress."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from models.campaign import CampaignPace, PaceState
from workflows.pacing import take

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
paces = st.builds(
    CampaignPace,
    rows_per_second=st.floats(min_value=0.01, max_value=500, allow_nan=False),
    burst=st.integers(min_value=1, max_value=500),
)
steps = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=30, allow_nan=False), st.integers(min_value=0, max_value=1000)
    ),
    min_size=1,
    max_size=60,
)


@given(paces, steps)
def test_starts_never_exceed_burst_plus_rate_times_elapsed(pace: CampaignPace, sequence) -> None:
    state, now, taken = PaceState(), T0, []  # taken: (when, how many)
    for gap, wanted in sequence:
        now += timedelta(seconds=gap)
        granted, state, wait = take(state, now, pace, wanted)
        assert 0 <= granted <= wanted
        assert 0 <= state.tokens <= pace.burst
        assert (wait == 0) == (granted == wanted)
        taken.append((now, granted))
    for i, (start, _) in enumerate(taken):  # every window of the run, from each step on
        total = 0
        for end, granted in taken[i:]:
            total += granted
            assert total <= pace.burst + pace.rows_per_second * (end - start).total_seconds() + 1e-6


@given(paces, st.integers(min_value=1, max_value=5000))
def test_waiting_as_told_always_makes_progress_and_starts_everything(pace: CampaignPace, rows: int) -> None:
    state, now, left, rounds = PaceState(), T0, rows, 0
    granted, state, wait = take(state, now, pace, left)
    assert granted == min(rows, pace.burst)  # a fresh bucket is full
    left -= granted
    while left:
        now += timedelta(seconds=wait)
        granted, state, wait = take(state, now, pace, left)
        assert granted >= 1  # the wait is always long enough for one more
        left -= granted
        rounds += 1
    assert rounds <= rows


@given(paces, st.integers(min_value=1, max_value=100))
def test_an_idle_bucket_refills_to_burst_and_no_further(pace: CampaignPace, wanted: int) -> None:
    _, state, _ = take(PaceState(), T0, pace, pace.burst)  # emptied
    later = T0 + timedelta(seconds=pace.burst / pace.rows_per_second + 3600)
    granted, _, _ = take(state, later, pace, wanted + pace.burst)
    assert granted == pace.burst


def test_clock_going_backwards_refills_nothing() -> None:
    pace = CampaignPace(rows_per_second=1, burst=2)
    _, state, _ = take(PaceState(), T0, pace, 2)
    granted, _, wait = take(state, T0 - timedelta(seconds=10), pace, 1)
    assert granted == 0 and wait == 1.0
