"""When a call may be placed: calling windows, allowed days and retry timing, in the recipient's time.

Windows are wall-clock promises to the recipient ("weekdays 10:00-18:00 where you are"), so they are
checked on local wall-clock time, in every zone the number may be in. Everything is pure and exact to
the second because it runs inside Temporal workflow code: the current time is always a parameter.
"""

from __future__ import annotations

import functools
from bisect import bisect_right
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import phonenumbers
import pytz
from phonenumbers import timezone as phonenumbers_timezone

from models.common import WEEKDAYS, parse_clock
from models.retry import CallingWindow, CallRetryConfig

_UNKNOWN_ZONE = "Etc/Unknown"
_FALLBACK_ZONE = "UTC"
# A year and a week: long enough to find windows that only overlap while two zones' DST rules
# disagree (e.g. New York and London, a few weeks each spring and autumn), short enough to stay cheap.
_HORIZON = timedelta(days=371)
_CHUNK = timedelta(days=7)
_DAY = timedelta(days=1)
# The last instant a search may reach (naive UTC): datetime's range ends in year 9999, and a search
# looks a chunk and a day past its limit. Beyond it nothing is "within reach": an order asking for
# it (scheduled_at in 9999, a retry delay of a million years) ends errored instead of crashing.
_LAST = datetime.max - 2 * _CHUNK

_Run = tuple[datetime, datetime]  # a half-open [start, end) range of naive UTC datetimes

# pytz reads a zone's file the first time it is asked for it, and the workflow sandbox forbids file
# access: load every zone once, here, when the worker (or a replayer) imports this module (~0.15 s).
for _zone in pytz.all_timezones:
    pytz.timezone(_zone)

# pytz knows each offset change only up to 2037: past its last one it keeps that offset, a winter one
# for New York or Paris. The same file's rule for later years (its POSIX TZ footer) is read by the
# standard library's zoneinfo, loaded here from pytz's own file (the same tz database version) for
# the ~190 zones whose changes go on; they answer for instants past pytz's table (~0.05 s).
_RULES: dict[str, tuple[datetime, ZoneInfo]] = {}
for _zone in pytz.all_timezones:
    _table = getattr(pytz.timezone(_zone), "_utc_transition_times", None)
    if _table and _table[-1].year >= 2037:
        with pytz.open_resource(_zone) as _file:
            _RULES[_zone] = (_table[-1], ZoneInfo.from_file(_file, key=_zone))
_EPOCH = datetime(1970, 1, 1)


# --- Timezones -------------------------------------------------------------------------------------


def resolve_timezones(phone_number: str, override: str | None = None) -> list[str]:
    """The zones the recipient may be in: the override, else every zone the number maps to, within
    its country. Where phonenumbers knows only the calling code (mobiles of the Caribbean's +1
    countries get all 42 zones of the NANP, Guam to Newfoundland), the country narrows it down; where
    it names another country's zone (Morocco's numbers get the Canaries', an hour off in summer;
    Algeria's, Paris's), the country's own zones stand for it."""
    if override:
        return [override]
    try:
        parsed = phonenumbers.parse(phone_number, None)
    except phonenumbers.NumberParseException:
        return [_FALLBACK_ZONE]
    zones = set(filter(_known_zone, phonenumbers_timezone.time_zones_for_number(parsed)))
    region = phonenumbers.region_code_for_number(parsed)
    return sorted(_within_country(zones, region)) or [_FALLBACK_ZONE]


def _within_country(zones: set[str], region: str | None) -> set[str]:
    """`zones` narrowed to the country's, each zone as the country's own or the same zone under another
    name (Pacific/Truk is Pacific/Chuuk; America/Puerto_Rico, Blanc-Sablon's rules), each on its own: one
    the country names never drops another it names otherwise. If none is the country's: its only zone
    (Morocco for the Canaries), else those on the same standard time (Kaliningrad for Bucharest), else
    `zones` as they are."""
    country = set(pytz.country_timezones.get(region, []) if region else [])
    if not zones or not country:
        return zones
    rules = {_zone_data(zone) for zone in zones}
    if in_country := {own for own in country if own in zones or _zone_data(own) in rules}:
        return in_country
    if len(country) == 1:
        return country
    standard = {_standard_offset(zone) for zone in zones}
    return {own for own in country if _standard_offset(own) in standard} or zones


@functools.cache
def _standard_offset(zone: str) -> timedelta | None:
    """The zone's offset on a fixed winter day (January 2026): a fixed instant, the same answer anywhere."""
    return pytz.timezone(zone).utcoffset(datetime(2026, 1, 15, 12))


@functools.cache
def _zone_data(zone: str) -> bytes:
    """A zone's compiled rules: one name and its link (an older name) share them."""
    with pytz.open_resource(zone) as rules:
        return rules.read()


def _known_zone(zone: str) -> bool:
    return zone != _UNKNOWN_ZONE and zone in pytz.all_timezones_set


def may_span_timezones(phone_number: str, override: str | None = None) -> bool:
    """Whether `resolve_timezones(phone_number, override)` may give more than one zone. False with an
    override, or when no number of its calling code maps to two zones (France, Germany, Japan...):
    decided from the code alone, without parsing the number, so `POST /call` pays `resolve_timezones`
    only where the answer can be several."""
    if override:
        return False
    digits = phone_number.removeprefix("+")
    for length in (1, 2, 3):  # calling codes are prefix-free
        if digits[:length].isdigit() and int(digits[:length]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return len(_calling_code_zones(digits[:length])) > 1
    return False  # no calling code: resolve_timezones falls back to one zone


def zones_sharing_no_window(
    phone_number: str,
    config: CallRetryConfig,
    now: datetime,
    searched: dict[tuple[str, ...], bool] | None = None,
) -> list[str]:
    """The zones a number may be in when they share no calling window within reach (a Russian mobile:
    Kaliningrad to Kamchatka), an order that could never be called; else []. One zone always has a
    window, so only the rare number with several pays for the search (a year's, some 8 ms): `searched`
    keeps its answer per zone set for the calls that share `config` and `now` (a campaign's rows)."""
    if not may_span_timezones(phone_number, config.timezone):
        return []
    zones = resolve_timezones(phone_number, config.timezone)
    if len(zones) < 2:
        return []
    searched = {} if searched is None else searched
    key = tuple(zones)
    if key not in searched:
        searched[key] = next_allowed_instant(now, config, zones) is None
    return zones if searched[key] else []


@functools.cache
def _calling_code_zones(code: str) -> frozenset[str]:
    """Every zone phonenumbers maps a number of calling code `code` to (its prefixes all start with it);
    when that is one zone, the zones `_within_country` makes of it in each of the code's countries."""
    mapped = frozenset(
        zone
        for prefix, zones in phonenumbers_timezone.TIMEZONE_DATA.items()
        if prefix.startswith(code)
        for zone in zones
        if _known_zone(zone)
    )
    if len(mapped) > 1:
        return mapped
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(int(code), ())
    return frozenset().union(*(_within_country(set(mapped), region) for region in regions)) or mapped


# --- The predicate ---------------------------------------------------------------------------------


def is_allowed(instant: datetime, config: CallRetryConfig, zones: Sequence[str]) -> bool:
    """True iff, in every zone, the local wall-clock time is on an allowed day inside a window."""
    utc = _to_utc(instant)
    return all(_window_index(_local(utc, zone), config) is not None for zone in _checked(zones))


def window_at(instant: datetime, config: CallRetryConfig, zones: Sequence[str]) -> CallingWindow | None:
    """The window (first in config order, in the first zone) containing an allowed instant, else None."""
    if not is_allowed(instant, config, zones):
        return None
    index = _window_index(_local(_to_utc(instant), zones[0]), config)
    return None if index is None else config.calling_windows[index]


def _window_index(local: datetime, config: CallRetryConfig) -> int | None:
    """Index of the first window containing this local wall-clock time on an allowed day."""
    if WEEKDAYS[local.weekday()] not in config.allowed_days:
        return None
    clock = local.time()
    for index, (start, end) in enumerate(_window_clocks(config)):
        if start <= clock < end:
            return index
    return None


def _window_clocks(config: CallRetryConfig) -> list[tuple[time, time]]:
    return [
        (parse_clock(w.calling_window_start_time), parse_clock(w.calling_window_end_time))
        for w in config.calling_windows
    ]


# --- The next allowed instant ----------------------------------------------------------------------


def next_allowed_instant(
    earliest: datetime, config: CallRetryConfig, zones: Sequence[str]
) -> datetime | None:
    """The first instant >= earliest where is_allowed holds, or None if none within about a year.

    Per zone, the allowed set is the preimage of the wall-clock windows under "UTC -> local time",
    which is exact per stretch of constant UTC offset; the answer is the start of the first range
    common to all zones. Searched a week at a time, so the usual case costs one week of ranges.
    """
    checked = _checked(zones)
    start = _to_utc(earliest).replace(tzinfo=None)
    if start >= _LAST:
        return None
    limit = start + min(_HORIZON, _LAST - start)
    low = start
    while low < limit:
        high = min(low + _CHUNK, limit)
        if runs := _common_runs(checked, config, low, high):
            return runs[0][0].replace(tzinfo=pytz.utc)
        low = high
    return None


def window_closes_at(instant: datetime, config: CallRetryConfig, zones: Sequence[str]) -> datetime | None:
    """When the allowed stretch holding `instant` ends (at most a week on); None outside one. A dial
    sent at `instant` that starts later would ring outside the recipient's calling hours."""
    checked = _checked(zones)
    low = _to_utc(instant).replace(tzinfo=None)
    if low >= _LAST:
        return None
    runs = _common_runs(checked, config, low, low + _CHUNK)
    if runs and runs[0][0] == low:
        return runs[0][1].replace(tzinfo=pytz.utc)
    return None


def _common_runs(zones: Sequence[str], config: CallRetryConfig, low: datetime, high: datetime) -> list[_Run]:
    """The UTC ranges within [low, high) allowed in every zone."""
    runs = _allowed_runs(zones[0], config, low, high)
    for zone in zones[1:]:
        if not runs:
            break
        runs = _intersect(runs, _allowed_runs(zone, config, low, high))
    return runs


def _allowed_runs(zone: str, config: CallRetryConfig, low: datetime, high: datetime) -> list[_Run]:
    """The allowed UTC ranges of one zone within [low, high), sorted, disjoint and non-touching."""
    days = {WEEKDAYS.index(day) for day in config.allowed_days}
    ranges = _day_ranges(config)
    runs: list[_Run] = []
    for seg_start, seg_end, offset in _offset_segments(zone, low, high):
        # Within a segment local = utc + offset, so wall range [a, b) is UTC range [a - offset, b - offset).
        day = (seg_start + offset).date()
        while day <= (seg_end + offset).date():
            if day.weekday() in days:
                midnight = datetime.combine(day, time()) - offset
                for begin, end in ranges:
                    run = (max(midnight + begin, seg_start), min(midnight + end, seg_end))
                    if run[0] < run[1]:
                        _append_run(runs, run)
            day += _DAY
    return runs


def _day_ranges(config: CallRetryConfig) -> list[tuple[timedelta, timedelta]]:
    """The windows as offsets from local midnight, sorted by start (overlaps are joined as runs)."""
    return sorted(
        (timedelta(hours=s.hour, minutes=s.minute), timedelta(hours=e.hour, minutes=e.minute))
        for s, e in _window_clocks(config)
    )


_Segment = tuple[datetime, datetime, timedelta]  # [start, end) naive UTC, and the UTC offset there


def _local(utc: datetime, zone: str) -> datetime:
    """The wall-clock time in `zone` at an aware UTC instant: pytz's, or past its table the zone's rule."""
    rules = _RULES.get(zone)
    if rules is not None and utc.replace(tzinfo=None) >= rules[0]:
        return utc.astimezone(rules[1])
    return utc.astimezone(pytz.timezone(zone))


def _offset_segments(zone: str, low: datetime, high: datetime) -> list[_Segment]:
    """[low, high) cut into stretches of constant UTC offset: (start, end, offset), naive UTC.

    Reads pytz's own transition table, the one `astimezone` bisects, and past it the same rule
    `_local` reads, so these stretches agree with is_allowed to the second by construction.
    """
    tz = pytz.timezone(zone)
    transitions = getattr(tz, "_utc_transition_times", None)
    if not transitions:  # a fixed-offset zone (UTC, Etc/GMT+5, ...)
        return [(low, high, low.replace(tzinfo=pytz.utc).astimezone(tz).utcoffset())]
    rules = _RULES.get(zone)
    if rules is not None and high > rules[0]:  # the part past pytz's table follows the rule
        tail = _rule_segments(rules[1], max(low, rules[0]), high)
        return (_offset_segments_in_table(tz, low, rules[0]) if low < rules[0] else []) + tail
    return _offset_segments_in_table(tz, low, high)


def _offset_segments_in_table(tz: pytz.BaseTzInfo, low: datetime, high: datetime) -> list[_Segment]:
    transitions, infos = tz._utc_transition_times, tz._transition_info  # type: ignore[attr-defined]
    segments = []
    index = max(0, bisect_right(transitions, low) - 1)
    while index < len(transitions) and transitions[index] < high:
        end = transitions[index + 1] if index + 1 < len(transitions) else high
        segments.append((max(transitions[index], low), min(end, high), infos[index][0]))
        index += 1
    return segments


def _rule_segments(rule: ZoneInfo, low: datetime, high: datetime) -> list[_Segment]:
    """[low, high) by a zone's rule, which changes the offset at whole seconds, never twice a day:
    probed a day apart, each change found to the second by bisection."""

    def offset(second: int) -> timedelta:
        return (_EPOCH + timedelta(seconds=second)).replace(tzinfo=UTC).astimezone(rule).utcoffset()  # type: ignore[return-value]

    first, last = int((low - _EPOCH).total_seconds()), int((high - _EPOCH).total_seconds()) + 1
    bounds = [low]
    at = first
    while at < last:
        probe = min(at + 86400, last)
        if offset(at) != offset(probe):
            before, after = at, probe  # the first second with the new offset is in (before, after]
            while after - before > 1:
                middle = (before + after) // 2
                before, after = (middle, after) if offset(middle) == offset(before) else (before, middle)
            change = _EPOCH + timedelta(seconds=after)
            if low < change < high:
                bounds.append(change)
        at = probe
    bounds.append(high)
    return [
        (start, end, offset(int((start - _EPOCH).total_seconds())))
        for start, end in zip(bounds, bounds[1:], strict=False)
    ]


def _append_run(runs: list[_Run], run: _Run) -> None:
    # Runs arrive sorted by start. Overlapping or touching windows, and the two halves of a window
    # cut by a fall-back change, join into one run.
    if runs and run[0] <= runs[-1][1]:
        runs[-1] = (runs[-1][0], max(runs[-1][1], run[1]))
    else:
        runs.append(run)


def _intersect(left: list[_Run], right: list[_Run]) -> list[_Run]:
    result: list[_Run] = []
    i = j = 0
    while i < len(left) and j < len(right):
        start, end = max(left[i][0], right[j][0]), min(left[i][1], right[j][1])
        if start < end:
            result.append((start, end))
        if left[i][1] < right[j][1]:
            i += 1
        else:
            j += 1
    return result


# --- Retry delay and attempt times -----------------------------------------------------------------


def retry_delay_seconds(attempt_started_at: datetime, config: CallRetryConfig, zones: Sequence[str]) -> int:
    """The delay of the window the attempt ran in; outside every window (force_now), the next one's."""
    window = window_at(attempt_started_at, config, zones)
    if window is None:
        upcoming = next_allowed_instant(attempt_started_at, config, zones)
        window = None if upcoming is None else window_at(upcoming, config, zones)
    return (window or config.calling_windows[0]).retry_delay_seconds


def next_attempt_at(
    *,
    attempt_number: int,
    ended_at: datetime,
    started_at: datetime,
    config: CallRetryConfig,
    zones: Sequence[str],
    ignore_windows: bool,
) -> datetime | None:
    """When the attempt after `attempt_number` (1-based, just finished) may start; None if none is left
    or none is within reach."""
    if attempt_number >= config.max_retry_attempts:
        return None
    if config.call_twice_in_a_row and attempt_number == 1:
        delay = 0
    else:
        delay = retry_delay_seconds(started_at, config, zones)
    ended = _to_utc(ended_at)
    if delay >= (_LAST.replace(tzinfo=pytz.utc) - ended).total_seconds():
        return None  # a retry past the end of the calendar: none within reach
    candidate = ended + timedelta(seconds=delay)
    return candidate if ignore_windows else next_allowed_instant(candidate, config, zones)


def first_attempt_at(
    *,
    now: datetime,
    scheduled_at: datetime | None,
    config: CallRetryConfig,
    zones: Sequence[str],
    ignore_windows: bool,
) -> datetime | None:
    """When the first attempt may start: max(now, scheduled_at) in a window; `now` if ignoring both."""
    if ignore_windows:
        return _to_utc(now)
    earliest = _to_utc(now) if scheduled_at is None else max(_to_utc(now), _to_utc(scheduled_at))
    return next_allowed_instant(earliest, config, zones)


# --- Presentation ----------------------------------------------------------------------------------


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def describe_instant(instant: datetime, zone: str) -> str:
    """E.g. "Mon 30 Nov 2026 10:00 Europe/Paris": the local time in that zone, its date included (a
    weekday alone read as this week's for an order weeks away); names independent of locale."""
    local = _local(_to_utc(instant), zone)
    day = f"{WEEKDAYS[local.weekday()][:3].title()} {local.day} {_MONTHS[local.month - 1]} {local.year}"
    return f"{day} {local:%H:%M} {zone}"


# --- Input checks ----------------------------------------------------------------------------------


def _to_utc(instant: datetime) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{instant!r} is a naive datetime; scheduling needs aware datetimes")
    return instant.astimezone(pytz.utc)


def _checked(zones: Sequence[str]) -> Sequence[str]:
    if not zones:
        raise ValueError("zones must not be empty (resolve_timezones always returns at least one)")
    return zones
