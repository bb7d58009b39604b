"""Custom search attributes the order upserts as it moves, so the Web UI and `temporal workflow list` can
filter on them (e.g. `CallStatus='scheduled'`). temporal-dev.yaml registers the same names."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

CALL_STATUS = SearchAttributeKey.for_keyword("CallStatus")
TO_PHONE_NUMBER = SearchAttributeKey.for_keyword("ToPhoneNumber")
CONCURRENCY_KEY = SearchAttributeKey.for_keyword("ConcurrencyKey")
OUTCOME = SearchAttributeKey.for_keyword("Outcome")
ATTEMPT_COUNT = SearchAttributeKey.for_int("AttemptCount")
NEXT_ATTEMPT_AT = SearchAttributeKey.for_datetime("NextAttemptAt")

ALL: tuple[SearchAttributeKey, ...] = (
    CALL_STATUS,
    TO_PHONE_NUMBER,
    CONCURRENCY_KEY,
    OUTCOME,
    ATTEMPT_COUNT,
    NEXT_ATTEMPT_AT,
)
