"""Scheduling maths: calling windows in the recipient's zones, DST, retry delays and attempt times."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
import pytz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.common import WEEKDAYS, parse_clock
from models.retry import CallingWindow, CallRetryConfig
from workflows.schedule import (
    describe_instant,
    first_attempt_at,
    is_allowed,
    may_span_timezones,
    next_allowed_instant,
    next_attempt_at,
    resolve_timezones,
    retry_delay_seconds,
    window_at,
    window_closes_at,
    zones_sharing_no_window,
)

PARIS = ["Europe/Paris"]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(zone: str, *args: int, is_dst: bool | None = None) -> datetime:
    return pytz.timezone(zone).localize(datetime(*args), is_dst=is_dst)


def window(start: str, end: str, delay: int = 7200) -> CallingWindow:
    return CallingWindow(
        calling_window_start_time=start, calling_window_end_time=end, retry_delay_seconds=delay
    )


def config(*windows: CallingWindow, days: list[str] | None = None, **kwargs) -> CallRetryConfig:
    return CallRetryConfig(
        allowed_days=days or list(WEEKDAYS[:5]),
        calling_windows=list(windows) or [window("10:00", "18:00")],
        **kwargs,
    )


# --- Timezones -------------------------------------------------------------------------------------


def test_french_mobile_is_in_paris():
    assert resolve_timezones("+33612345678") == ["Europe/Paris"]


def test_number_spanning_several_zones_returns_them_all_sorted():
    zones = resolve_timezones("+18005550199")  # toll-free: the whole NANP
    assert len(zones) > 1 and zones == sorted(zones)
    assert {"America/New_York", "America/Los_Angeles"} <= set(zones)


def test_a_number_phonenumbers_knows_only_by_calling_code_is_placed_in_its_country():
    assert resolve_timezones("+18762101234") == ["America/Jamaica"]  # a Jamaican mobile, not the NANP's 42
    russian = resolve_timezones("+79161234567")
    assert len(russian) > 1 and set(russian) <= set(pytz.country_timezones["RU"])


@pytest.mark.parametrize(
    ("number", "own"),
    [
        ("+212650123456", "Africa/Casablanca"),  # phonenumbers: the Canaries, an hour off in summer
        ("+211977123456", "Africa/Juba"),  # Nairobi, an hour off all year
        ("+50581234567", "America/Managua"),  # Chicago, an hour off in US summer time
        ("+213551234567", "Africa/Algiers"),  # Paris, an hour off in summer
        ("+919876543210", "Asia/Kolkata"),  # Asia/Calcutta: the same zone, its older name
        ("+541123456789", "America/Argentina/Buenos_Aires"),  # not Argentina's 12 zones
        ("+74012123456", "Europe/Kaliningrad"),  # Bucharest: Russia's zone on the same standard time
    ],
)
def test_a_number_mapped_to_another_countrys_zone_is_placed_in_its_own(number: str, own: str) -> None:
    """Calls to Morocco were timed by the Canaries' clock: 18:30 in Casablanca was inside 10:00-18:00."""
    assert resolve_timezones(number) == [own]


@pytest.mark.parametrize(
    ("number", "zones"),
    [
        ("+6919701234", ["Pacific/Chuuk", "Pacific/Kosrae", "Pacific/Pohnpei"]),  # phonenumbers: Truk, Ponape
        ("+18792345678", ["America/Blanc-Sablon", "America/St_Johns"]),  # Labrador: America/Puerto_Rico
    ],
)
def test_each_zone_of_a_number_is_placed_in_its_country_on_its_own(number: str, zones: list[str]) -> None:
    """Only Kosrae was kept of Micronesia's three (a Chuuk mobile rang at 9:00), only St John's of the
    879 overlay (Labrador's 9:30): one zone under the country's name dropped those under another."""
    assert resolve_timezones(number) == zones
    monday_chuuk_nine = utc(2026, 12, 13, 23, 0)  # Kosrae's 10:00, Chuuk's 9:00
    assert not is_allowed(monday_chuuk_nine, CallRetryConfig(), resolve_timezones("+6919701234"))


def test_a_moroccan_morning_before_the_window_is_outside_it() -> None:
    morning = utc(
        2027, 6, 7, 9, 30
    )  # a Monday: 9:30 in Casablanca (UTC+0 from 2026-09), 10:30 in the Canaries
    assert not is_allowed(morning, CallRetryConfig(), resolve_timezones("+212650123456"))
    assert is_allowed(morning, CallRetryConfig(), ["Atlantic/Canary"])


def test_override_wins():
    assert resolve_timezones("+33612345678", "America/New_York") == ["America/New_York"]


def test_unknown_zone_falls_back_to_utc():
    assert resolve_timezones("+80012345678") == ["UTC"]  # international freephone: Etc/Unknown
    assert resolve_timezones("not a number") == ["UTC"]


_EXAMPLES = sorted(
    phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
    for region in phonenumbers.SUPPORTED_REGIONS
    for kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE)
    if (example := phonenumbers.example_number_for_type(region, kind)) is not None
)


@given(st.sampled_from(_EXAMPLES), st.integers(min_value=0, max_value=9999))
def test_a_number_said_to_be_in_one_zone_resolves_to_one(example: str, tail: int) -> None:
    """`may_span_timezones` lets POST /call skip resolving zones: it may only say False where
    `resolve_timezones` gives exactly one (examples of every region, their last digits varied)."""
    number = example[:-4] + f"{tail:04d}"
    if not may_span_timezones(number):
        assert len(resolve_timezones(number)) == 1


@given(st.sampled_from(_EXAMPLES), st.integers(min_value=0, max_value=9999))
def test_a_number_resolves_to_zones_of_its_own_country(example: str, tail: int) -> None:
    number = example[:-4] + f"{tail:04d}"
    region = phonenumbers.region_code_for_number(phonenumbers.parse(number))
    country = set(pytz.country_timezones.get(region, [])) if region else set()  # +800: no country
    zones = resolve_timezones(number)
    if country and zones != ["UTC"]:
        assert set(zones) <= country, (number, region, zones)


def test_numbers_whose_zones_share_no_window_are_found_once_per_zone_set() -> None:
    """A campaign of Russian mobiles searched a year of windows per row (some 8 ms each): the answer is
    the zone set's, kept in `searched` for rows that share the config and instant."""
    now, config, searched = utc(2026, 6, 1), CallRetryConfig(), {}
    russian = [f"+7912345{n:04d}" for n in range(50)]
    found = [zones_sharing_no_window(number, config, now, searched) for number in russian]
    assert all(len(zones) > 1 for zones in found) and len(searched) == 1
    assert found[0] == zones_sharing_no_window(russian[0], config, now)  # the same without it
    assert zones_sharing_no_window("+33612345678", config, now, searched) == []  # one zone: no search
    moscow = CallRetryConfig(timezone="Europe/Moscow")
    assert zones_sharing_no_window(russian[0], moscow, now) == []


def test_single_zone_countries_are_told_apart_from_the_rest() -> None:
    assert not may_span_timezones("+33612345678") and not may_span_timezones("+4915112345678")
    assert may_span_timezones("+18005550199") and may_span_timezones("+79161234567")
    assert may_span_timezones("+34612345678")  # Spain: Madrid and the Canaries
    assert not may_span_timezones("+80012345678") and not may_span_timezones("not a number")


# --- Windows, days, formats ------------------------------------------------------------------------


def test_saturday_afternoon_moves_to_monday_morning_in_paris():
    assert next_allowed_instant(utc(2026, 11, 28, 15), CallRetryConfig(), PARIS) == utc(2026, 11, 30, 9)


def test_allowed_instant_is_returned_unchanged_to_the_microsecond():
    instant = utc(2026, 11, 30, 12, 34, 56, 789)
    assert next_allowed_instant(instant, CallRetryConfig(), PARIS) == instant


def test_windows_are_half_open():
    cfg = CallRetryConfig()
    assert is_allowed(local("Europe/Paris", 2026, 11, 30, 10), cfg, PARIS)
    assert is_allowed(local("Europe/Paris", 2026, 11, 30, 17, 59, 59), cfg, PARIS)
    assert not is_allowed(local("Europe/Paris", 2026, 11, 30, 18), cfg, PARIS)
    assert next_allowed_instant(local("Europe/Paris", 2026, 11, 30, 18), cfg, PARIS) == utc(2026, 12, 1, 9)


def test_twelve_hour_formats():
    cfg = config(window("9am", "5:30pm"))
    assert is_allowed(local("Europe/Paris", 2026, 6, 1, 9), cfg, PARIS)
    assert is_allowed(local("Europe/Paris", 2026, 6, 1, 17, 29), cfg, PARIS)
    assert not is_allowed(local("Europe/Paris", 2026, 6, 1, 17, 30), cfg, PARIS)
    assert not is_allowed(local("Europe/Paris", 2026, 6, 1, 8, 59), cfg, PARIS)


def test_touching_windows_form_one_range():
    cfg = config(window("10:00", "12:00"), window("12:00", "14:00"))
    assert is_allowed(local("Europe/Paris", 2026, 6, 1, 12), cfg, PARIS)
    start = local("Europe/Paris", 2026, 6, 1, 11)
    assert next_allowed_instant(start, cfg, PARIS) == start
    assert next_allowed_instant(local("Europe/Paris", 2026, 6, 1, 14), cfg, PARIS) == local(
        "Europe/Paris", 2026, 6, 2, 10
    )


def test_describe_instant():
    assert describe_instant(utc(2026, 11, 30, 9), "Europe/Paris") == "Mon 30 Nov 2026 10:00 Europe/Paris"


def test_naive_datetimes_are_rejected():
    with pytest.raises(ValueError, match="naive"):
        is_allowed(datetime(2026, 6, 1, 12), CallRetryConfig(), PARIS)


# --- DST -------------------------------------------------------------------------------------------


def test_spring_forward_gap_opens_window_at_three():
    # 2027-03-28, Paris: 02:00 CET jumps to 03:00 CEST (01:00 UTC); 02:30 never happens.
    cfg = config(window("02:30", "04:00"), days=["sunday"])
    opened = next_allowed_instant(utc(2027, 3, 27, 23), cfg, PARIS)
    assert opened == utc(2027, 3, 28, 1)
    assert describe_instant(opened, "Europe/Paris") == "Sun 28 Mar 2027 03:00 Europe/Paris"
    assert not is_allowed(opened - timedelta(microseconds=1), cfg, PARIS)


def test_fall_back_overlap_allows_both_occurrences():
    # 2026-11-01, New York: 01:00-02:00 happens twice (EDT 05:00-06:00 UTC, then EST 06:00-07:00 UTC).
    ny = ["America/New_York"]
    cfg = config(window("01:00", "02:00"), days=["sunday"])
    assert is_allowed(local("America/New_York", 2026, 11, 1, 1, 30, is_dst=True), cfg, ny)
    assert is_allowed(local("America/New_York", 2026, 11, 1, 1, 30, is_dst=False), cfg, ny)
    assert next_allowed_instant(utc(2026, 11, 1, 4), cfg, ny) == utc(2026, 11, 1, 5)
    assert is_allowed(utc(2026, 11, 1, 6, 59, 59), cfg, ny)
    assert next_allowed_instant(utc(2026, 11, 1, 7), cfg, ny) == utc(2026, 11, 8, 6)
    # Both halves are one run: a fixed UTC-5 zone, allowed 06:00-07:00 UTC, meets the second one.
    assert next_allowed_instant(utc(2026, 11, 1, 4), cfg, [*ny, "Etc/GMT+5"]) == utc(2026, 11, 1, 6)


def test_fall_back_overlap_with_a_gap_between_occurrences():
    # 2027-10-31, Paris: 02:00-03:00 happens twice; a 02:00-02:45 window is open twice, 15 min apart.
    cfg = config(window("02:00", "02:45"), days=["sunday"])
    assert next_allowed_instant(utc(2027, 10, 30, 23), cfg, PARIS) == utc(2027, 10, 31, 0)
    assert next_allowed_instant(utc(2027, 10, 31, 0, 45), cfg, PARIS) == utc(2027, 10, 31, 1)
    assert not is_allowed(utc(2027, 10, 31, 0, 50), cfg, PARIS)


def test_summer_time_past_2037_where_pytz_stops():
    # pytz's table ends in 2037 and keeps the last (winter) offset after it: New York's 10:00-18:00
    # was 11:00-19:00 every summer from 2038, Paris's likewise. The zone's rule goes on.
    ny, default = ["America/New_York"], CallRetryConfig()
    assert not is_allowed(utc(2038, 7, 1, 22, 30), default, ny)  # 18:30 EDT
    assert is_allowed(utc(2038, 7, 1, 21, 59), default, ny)  # 17:59 EDT
    first = first_attempt_at(
        now=utc(2026, 12, 7), scheduled_at=utc(2038, 7, 1), config=default, zones=ny, ignore_windows=False
    )
    assert (
        first == utc(2038, 7, 1, 14)
        and describe_instant(first, ny[0]) == "Thu 1 Jul 2038 10:00 America/New_York"
    )
    # Paris, 2100-03-28 (the last Sunday of March): 02:00 CET jumps to 03:00 CEST at 01:00 UTC.
    cfg = config(window("02:30", "04:00"), days=["sunday"])
    assert next_allowed_instant(utc(2100, 3, 27, 23), cfg, PARIS) == utc(2100, 3, 28, 1)
    assert next_allowed_instant(utc(2100, 10, 30, 0), cfg, PARIS) == utc(2100, 10, 31, 0, 30)  # CEST


# --- Several zones ---------------------------------------------------------------------------------


def test_window_must_hold_in_every_zone():
    zones = ["America/New_York", "America/Los_Angeles"]
    opened = next_allowed_instant(utc(2026, 6, 1, 12), CallRetryConfig(), zones)  # Monday 08:00 in NY
    assert opened == utc(2026, 6, 1, 17)
    assert describe_instant(opened, "America/Los_Angeles") == "Mon 1 Jun 2026 10:00 America/Los_Angeles"
    assert describe_instant(opened, "America/New_York") == "Mon 1 Jun 2026 13:00 America/New_York"


def test_three_zones_intersect():
    # In UTC: [10-11) and [14-21) here, [6-7) and [10-17) at UTC+4, [9-10) and [13-20) at UTC+1.
    cfg = config(window("10:00", "11:00"), window("14:00", "21:00"), days=list(WEEKDAYS))
    zones = ["UTC", "Etc/GMT-4", "Etc/GMT-1"]
    assert next_allowed_instant(utc(2026, 6, 1), cfg, zones) == utc(2026, 6, 1, 14)
    assert next_allowed_instant(utc(2026, 6, 1, 17), cfg, zones) == utc(2026, 6, 2, 14)


def test_zones_that_never_overlap_give_none():
    cfg = config(window("10:00", "11:00"), days=list(WEEKDAYS))
    assert next_allowed_instant(utc(2026, 6, 1), cfg, ["Europe/Paris", "Asia/Tokyo"]) is None


def test_overlap_that_only_exists_while_dst_rules_disagree():
    # NY 10:00-11:00 and London 14:00-15:00 meet only between the US and EU spring changes.
    cfg = config(window("10:00", "11:00"), window("14:00", "15:00"), days=list(WEEKDAYS))
    zones = ["America/New_York", "Europe/London"]
    assert next_allowed_instant(utc(2026, 6, 1), cfg, zones) == utc(2026, 10, 25, 14)  # London back on GMT
    assert next_allowed_instant(utc(2026, 11, 2), cfg, zones) == utc(2027, 3, 14, 14)  # NY already on EDT


# --- Retry delay and attempt times -----------------------------------------------------------------

TWO_WINDOWS = config(window("09:00", "12:00", 3600), window("14:00", "18:00", 600))


@pytest.mark.parametrize(
    ("started", "delay"),
    [
        ((2026, 6, 1, 10), 3600),  # ran in the morning window
        ((2026, 6, 1, 15), 600),  # ran in the afternoon window
        ((2026, 6, 1, 13), 600),  # force_now between windows: the afternoon's
        ((2026, 6, 5, 19), 3600),  # force_now on Friday evening: Monday morning's
    ],
)
def test_retry_delay_is_the_window_the_attempt_ran_in(started, delay):
    assert retry_delay_seconds(local("Europe/Paris", *started), TWO_WINDOWS, PARIS) == delay


def test_window_at():
    assert (
        window_at(local("Europe/Paris", 2026, 6, 1, 15), TWO_WINDOWS, PARIS) == TWO_WINDOWS.calling_windows[1]
    )
    assert window_at(local("Europe/Paris", 2026, 6, 1, 13), TWO_WINDOWS, PARIS) is None


def test_retry_delay_without_any_reachable_window_is_the_first_windows():
    cfg = config(window("10:00", "11:00", 42), window("12:00", "13:00", 7), days=list(WEEKDAYS))
    assert retry_delay_seconds(utc(2026, 6, 1), cfg, ["Europe/Paris", "Asia/Tokyo"]) == 42


def _next(
    attempt: int, ended: datetime, cfg: CallRetryConfig, ignore_windows: bool = False
) -> datetime | None:
    return next_attempt_at(
        attempt_number=attempt,
        ended_at=ended,
        started_at=ended - timedelta(minutes=2),
        config=cfg,
        zones=PARIS,
        ignore_windows=ignore_windows,
    )


def test_retry_after_the_delay_of_the_window():
    ended = local("Europe/Paris", 2026, 6, 1, 10, 5)
    assert _next(1, ended, TWO_WINDOWS) == ended + timedelta(hours=1)


def test_retry_moved_into_the_next_window():
    ended = local("Europe/Paris", 2026, 6, 1, 17, 0)  # + 2 h = 19:00, after hours
    assert _next(1, ended, CallRetryConfig()) == local("Europe/Paris", 2026, 6, 2, 10)
    assert _next(1, ended, CallRetryConfig(), ignore_windows=True) == ended + timedelta(hours=2)


def test_call_twice_in_a_row_only_skips_the_first_delay():
    cfg = config(call_twice_in_a_row=True)
    ended = local("Europe/Paris", 2026, 6, 1, 11)
    assert _next(1, ended, cfg) == ended
    assert _next(2, ended, cfg) == ended + timedelta(hours=2)
    late = local("Europe/Paris", 2026, 6, 1, 18, 1)  # windows still apply
    assert _next(1, late, cfg) == local("Europe/Paris", 2026, 6, 2, 10)


def test_no_attempt_after_the_last():
    ended = local("Europe/Paris", 2026, 6, 1, 11)
    assert _next(2, ended, CallRetryConfig()) is not None
    assert _next(3, ended, CallRetryConfig()) is None
    assert _next(1, ended, config(max_retry_attempts=1)) is None


def test_first_attempt():
    now = utc(2026, 11, 28, 15)  # Saturday
    monday_10 = utc(2026, 11, 30, 9)

    def first(scheduled_at=None, ignore_windows=False):
        return first_attempt_at(
            now=now,
            scheduled_at=scheduled_at,
            config=CallRetryConfig(),
            zones=PARIS,
            ignore_windows=ignore_windows,
        )

    assert first() == monday_10
    assert first(scheduled_at=now - timedelta(days=3)) == monday_10
    assert first(scheduled_at=utc(2026, 12, 1, 13)) == utc(2026, 12, 1, 13)
    assert first(scheduled_at=utc(2026, 12, 1, 20)) == utc(2026, 12, 2, 9)
    assert first(scheduled_at=utc(2026, 12, 1, 20), ignore_windows=True) == now


# --- Properties ------------------------------------------------------------------------------------

SINGLE_ZONES = [
    "Europe/Paris",
    "Europe/London",
    "America/New_York",
    "America/St_Johns",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "UTC",
]
ZONE_LISTS = [[zone] for zone in SINGLE_ZONES] + [
    ["America/Los_Angeles", "America/New_York"],
    ["America/New_York", "Europe/London"],
    ["Australia/Lord_Howe", "Australia/Perth", "Australia/Sydney"],
    ["Asia/Kolkata", "Pacific/Chatham"],
    ["Europe/Moscow", "Europe/Paris"],
]
zone_lists = st.one_of(
    st.sampled_from(ZONE_LISTS),
    st.lists(st.sampled_from(SINGLE_ZONES + ["Etc/GMT-3", "Etc/GMT+4"]), min_size=2, max_size=3, unique=True),
)
HORIZON = timedelta(days=371)  # the module's search horizon


@functools.cache
def reference(zone: str) -> ZoneInfo:
    """The zone as the standard library reads pytz's own file: every offset change, those past 2037
    (pytz's table ends there) from the file's rule. The references below use it, not the module's code."""
    with pytz.open_resource(zone) as file:
        return ZoneInfo.from_file(file, key=zone)


def clock_text(minutes: int) -> st.SearchStrategy[str]:
    hour, minute = divmod(minutes, 60)
    twelve = f"{hour % 12 or 12}{f':{minute:02d}' if minute else ''}{'am' if hour < 12 else 'pm'}"
    return st.sampled_from([f"{hour:02d}:{minute:02d}", twelve])


@st.composite
def configs(draw) -> CallRetryConfig:
    days = draw(st.sets(st.sampled_from(WEEKDAYS), min_size=1))
    windows = []
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.integers(0, 1438))
        end = draw(st.integers(start + 1, 1439))
        windows.append(window(draw(clock_text(start)), draw(clock_text(end)), draw(st.integers(0, 86400))))
    return CallRetryConfig(allowed_days=[d for d in WEEKDAYS if d in days], calling_windows=windows)


@st.composite
def instants(draw) -> datetime:
    """Aware instants over 2000-2100 (past 2037, where pytz's table ends), half of them in the months
    where DST changes."""
    if draw(st.booleans()):
        naive = draw(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 12, 31)))
    else:
        month_start = datetime(draw(st.integers(2000, 2100)), draw(st.sampled_from([3, 4, 9, 10, 11])), 1)
        naive = month_start + timedelta(seconds=draw(st.integers(0, 31 * 86400 - 1)))
        naive = naive.replace(microsecond=draw(st.sampled_from([0, 0, 1, 999999])))
    zone = pytz.timezone(draw(st.sampled_from(["UTC", "Europe/Paris", "Asia/Kolkata"])))
    return pytz.utc.localize(naive).astimezone(zone)  # any aware tz must do


def offset_changes(zone: str, low: datetime, high: datetime) -> list[datetime]:
    """Instants in [low, high) where the zone's UTC offset changes, found by scanning and bisection."""
    tz = reference(zone)
    offset = lambda instant: instant.astimezone(tz).utcoffset()  # noqa: E731
    changes = []
    step = timedelta(hours=6)  # no zone changes its offset twice within six hours
    at = low
    while at < high:
        after = min(at + step, high)
        if offset(at) != offset(after):
            before = at  # offset(before) is the old one; find the first second with the new one
            while after - before > timedelta(seconds=1):
                middle = before + (after - before) / 2
                middle -= timedelta(microseconds=middle.microsecond)
                if middle <= before:
                    break
                before, after = (middle, after) if offset(middle) == offset(at) else (before, middle)
            if after < high:
                changes.append(after)
        at = at + step
    return changes


def window_starts(
    zone: str, config: CallRetryConfig, low: datetime, high: datetime, edge: str = "calling_window_start_time"
) -> list[datetime]:
    """Instants in [low, high) where the zone's wall clock shows a window start (both fall-back copies),
    or with `edge="calling_window_end_time"` a window end."""
    tz = reference(zone)
    day = low.astimezone(tz).date() - timedelta(days=1)
    last = high.astimezone(tz).date() + timedelta(days=1)
    found = []
    while day <= last:
        for w in config.calling_windows:
            wall = datetime.combine(day, parse_clock(getattr(w, edge)))
            for fold in (0, 1):  # both copies of a fall-back hour; a spring-forward gap's wall time is none
                candidate = wall.replace(tzinfo=tz, fold=fold).astimezone(UTC)
                if candidate.astimezone(tz).replace(tzinfo=None) == wall and low <= candidate < high:
                    found.append(candidate)
        day += timedelta(days=1)
    return found


def assert_nothing_allowed_before(earliest: datetime, end: datetime, config: CallRetryConfig, zones) -> None:
    """No allowed instant in [earliest, end).

    The allowed set is a union of half-open runs; a run can only begin at `earliest`, where some zone's
    wall clock reaches a window start, or where some zone's offset jumps. Checking all of those is
    exhaustive; a minute grid on short gaps cross-checks it without relying on that argument.
    """
    if end <= earliest:
        return
    candidates = [earliest]
    for zone in zones:
        candidates += window_starts(zone, config, earliest, end) + offset_changes(zone, earliest, end)
    for candidate in candidates:
        assert earliest <= candidate < end
        assert not is_allowed(candidate, config, zones), candidate
    if end - earliest <= timedelta(hours=6):
        at = earliest
        while at < end:
            assert not is_allowed(at, config, zones), at
            at += timedelta(minutes=1)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs(), zones=zone_lists, earliest=instants())
def test_next_allowed_instant_is_the_first_allowed_instant(config, zones, earliest):
    found = next_allowed_instant(earliest, config, zones)
    if found is None:
        assert_nothing_allowed_before(earliest, earliest + HORIZON, config, zones)
        return
    assert found.utcoffset() == timedelta(0)
    assert found >= earliest
    assert is_allowed(found, config, zones)
    assert next_allowed_instant(found, config, zones) == found
    if found > earliest:
        assert found.microsecond == 0 and not is_allowed(found - timedelta(microseconds=1), config, zones)
    assert_nothing_allowed_before(earliest, found, config, zones)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs(), zones=zone_lists, instant=instants())
def test_a_window_closes_at_the_end_of_the_allowed_stretch(config, zones, instant):
    """Every instant from `instant` to the close is allowed, and the close is not (unless the stretch
    outlasts the week looked at). A stretch can only end where some zone's wall clock reaches a window
    end or its offset jumps: all of those before the close are checked, and a minute grid on short ones."""
    closes = window_closes_at(instant, config, zones)
    if closes is None:
        assert not is_allowed(instant, config, zones)
        return
    week = instant + timedelta(days=7)
    assert instant < closes <= week and closes.utcoffset() == timedelta(0)
    assert closes == week or not is_allowed(closes, config, zones)
    candidates = [instant, closes - timedelta(microseconds=1)]
    for zone in zones:
        candidates += window_starts(zone, config, instant, closes, edge="calling_window_end_time")
        candidates += offset_changes(zone, instant, closes)
    for candidate in candidates:
        assert is_allowed(candidate, config, zones), candidate
    if closes - instant <= timedelta(hours=6):
        at = instant
        while at < closes:
            assert is_allowed(at, config, zones), at
            at += timedelta(minutes=1)


def test_a_window_closes_at_its_end_time_in_the_recipients_zone():
    cfg = config(window("09:00", "12:00"), window("12:00", "18:00"))  # touching: one stretch
    assert window_closes_at(local("Europe/Paris", 2026, 11, 30, 10), cfg, PARIS) == utc(2026, 11, 30, 17)
    assert window_closes_at(local("Europe/Paris", 2026, 11, 30, 18), cfg, PARIS) is None
    east = [*PARIS, "Etc/GMT-3"]  # UTC+3: its 18:00 comes first
    assert window_closes_at(local("Europe/Paris", 2026, 11, 30, 10), cfg, east) == utc(2026, 11, 30, 15)
    assert window_closes_at(local("Europe/Paris", 2026, 11, 30, 17), cfg, east) is None
    assert window_closes_at(local("Europe/Paris", 2026, 11, 30, 11), cfg, [*PARIS, "Europe/London"]) == utc(
        2026, 11, 30, 17
    )


def naive_is_allowed(instant: datetime, config: CallRetryConfig, zones) -> bool:
    for zone in zones:
        wall = instant.astimezone(reference(zone))
        if WEEKDAYS[wall.isoweekday() - 1] not in config.allowed_days:
            return False
        second = wall.hour * 3600 + wall.minute * 60 + wall.second

        def seconds(text: str) -> int:
            clock = parse_clock(text)
            return clock.hour * 3600 + clock.minute * 60

        if not any(
            seconds(w.calling_window_start_time) <= second < seconds(w.calling_window_end_time)
            for w in config.calling_windows
        ):
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(config=configs(), zones=zone_lists, instant=instants())
def test_is_allowed_agrees_with_a_naive_check(config, zones, instant):
    assert is_allowed(instant, config, zones) == naive_is_allowed(instant, config, zones)
    chosen = window_at(instant, config, zones)
    assert (chosen is not None) == is_allowed(instant, config, zones)


@settings(max_examples=100, deadline=None)
@given(config=configs(), zones=zone_lists, now=instants(), ahead=st.integers(-86400, 9 * 86400))
def test_first_attempt_is_allowed_and_not_early(config, zones, now, ahead):
    scheduled_at = now + timedelta(seconds=ahead)
    first = first_attempt_at(
        now=now, scheduled_at=scheduled_at, config=config, zones=zones, ignore_windows=False
    )
    assert first == next_allowed_instant(max(now, scheduled_at), config, zones)
    if first is not None:
        assert first >= max(now, scheduled_at) and is_allowed(first, config, zones)


# --- The end of the calendar -------------------------------------------------------------------------

SAFE_MAX_DELAY = 9007199254740991  # the seed's maximum for retry_delay_seconds


@settings(max_examples=100, deadline=None)
@given(
    config=configs(),
    zones=zone_lists,
    scheduled_at=st.datetimes(min_value=datetime(9990, 1, 1), max_value=datetime(9999, 12, 31, 23, 59)),
)
def test_a_scheduled_at_at_the_end_of_the_calendar_is_out_of_reach_not_a_crash(config, zones, scheduled_at):
    """An order for the year 9999 ends errored ("no window within reach"); it never crashes the workflow."""
    at = scheduled_at.replace(tzinfo=UTC)
    first = first_attempt_at(
        now=utc(2026, 3, 2, 9), scheduled_at=at, config=config, zones=zones, ignore_windows=False
    )
    assert first is None or (first >= at and is_allowed(first, config, zones))
    assert next_allowed_instant(utc(9999, 12, 31, 23, 59), config, zones) is None


@settings(max_examples=100, deadline=None)
@given(config=configs(), zones=zone_lists, delay=st.integers(10**9, SAFE_MAX_DELAY), ended=instants())
def test_a_retry_delay_past_the_end_of_the_calendar_leaves_no_retry(config, zones, delay, ended):
    """Every retry_delay_seconds the seed allows is scheduled or refused, never an OverflowError."""
    slow = config.model_copy(
        update={
            "calling_windows": [
                w.model_copy(update={"retry_delay_seconds": delay}) for w in config.calling_windows
            ]
        }
    )
    after = next_attempt_at(
        attempt_number=1, ended_at=ended, started_at=ended, config=slow, zones=zones, ignore_windows=True
    )
    room = (datetime(9999, 12, 1, tzinfo=UTC) - ended).total_seconds()  # the calendar ends in 9999
    if delay < room:
        assert after == ended + timedelta(seconds=delay)
    elif delay > room + 31 * 86400:
        assert after is None
