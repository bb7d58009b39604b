"""The seed's call_retry_config: when a recipient may be called and how often.

These are the strict request models; defaults are the seed's (Monday-Friday, 10:00-18:00, 7200 s,
3 attempts), so `CallRetryConfig()` is exactly what an order without a config gets.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

from models.common import MAX_SAFE_INT, WEEKDAYS, ClockTime, Timezone, Weekday, parse_clock

# The most attempts an order makes. Its history holds every attempt in every state it writes (and the
# assistant each time), so some 250 attempts would outgrow Temporal's 50 MB history limit and end the
# order; no sane campaign calls one number that often. A larger max_retry_attempts is held to this.
MOST_ATTEMPTS = 50


class CallingWindow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    calling_window_start_time: ClockTime = "10:00"
    calling_window_end_time: ClockTime = "18:00"
    # 0: as soon as the window allows (the official client documents it; the seed's minimum excludes it)
    retry_delay_seconds: Annotated[int, Strict()] = Field(default=7200, ge=0, le=MAX_SAFE_INT)

    @model_validator(mode="after")
    def _start_before_end(self) -> CallingWindow:
        # Windows are same-day wall-clock ranges; an overnight call window is not something we place.
        if parse_clock(self.calling_window_start_time) >= parse_clock(self.calling_window_end_time):
            raise ValueError("calling_window_start_time must be before calling_window_end_time")
        return self


class CallRetryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allowed_days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS[:5]), min_length=1)
    call_twice_in_a_row: Annotated[bool, Strict()] = False
    calling_windows: list[CallingWindow] = Field(default_factory=lambda: [CallingWindow()], min_length=1)
    max_retry_attempts: Annotated[int, Strict()] = Field(default=3, gt=0, le=MAX_SAFE_INT)
    timezone: Timezone | None = None

    def applied(self) -> CallRetryConfig:
        """The config as an order applies it (and its Call shows it): attempts held to MOST_ATTEMPTS."""
        if self.max_retry_attempts <= MOST_ATTEMPTS:
            return self
        return self.model_copy(update={"max_retry_attempts": MOST_ATTEMPTS})
