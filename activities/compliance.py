"""Do-not-contact memory: a callee who asked not to be called again is not called again.

When an order's outcome is `do_not_contact`, the number is remembered for its organization; a later
order to it is refused with a clear error unless the order explicitly overrides it (metadata
`do_not_contact_override: "true"`, for a callee who later gave consent again).

Storage is behind `DoNotContactRegistry`. `InMemoryDoNotContactRegistry` serves tests and a single
worker; the API's storage (SQLModel, owned by the persistence work) implements the same protocol on a
table keyed by (organization_id, phone_number) and the worker is given that instead.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

DO_NOT_CONTACT = "DoNotContact"  # the error type of a refused order (non-retryable)
OVERRIDE_METADATA_KEY = "do_not_contact_override"


class DoNotContactEntry(BaseModel):
    organization_id: str
    phone_number: str
    call_id: str  # the order whose callee asked
    reason: str | None = None
    recorded_at: datetime


class DoNotContactRegistry(Protocol):
    """Numbers an organization must not call. `add` is idempotent (first entry wins)."""

    async def add(self, entry: DoNotContactEntry) -> None: ...

    async def get(self, organization_id: str, phone_number: str) -> DoNotContactEntry | None: ...

    async def remove(self, organization_id: str, phone_number: str) -> None: ...


class InMemoryDoNotContactRegistry:
    """A process-local registry: right for tests and a single worker, lost on restart."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], DoNotContactEntry] = {}

    async def add(self, entry: DoNotContactEntry) -> None:
        self.entries.setdefault((entry.organization_id, entry.phone_number), entry)

    async def get(self, organization_id: str, phone_number: str) -> DoNotContactEntry | None:
        return self.entries.get((organization_id, phone_number))

    async def remove(self, organization_id: str, phone_number: str) -> None:
        self.entries.pop((organization_id, phone_number), None)


class RememberRequest(BaseModel):
    organization_id: str
    phone_number: str
    call_id: str
    outcome: str | None = None
    outcome_summary: str | None = None


class ContactCheckRequest(BaseModel):
    organization_id: str
    phone_number: str
    metadata: dict[str, str] | None = None
    placed_at: datetime | None = None  # when the order was placed (None: now, a new order)


def is_overridden(metadata: dict[str, str] | None) -> bool:
    return (metadata or {}).get(OVERRIDE_METADATA_KEY, "").strip().lower() in ("1", "true", "yes")


def overrides(entry: DoNotContactEntry | None, metadata: dict[str, str] | None, placed_at: datetime) -> bool:
    """An order's override stands for a consent given before it was placed: a request not to be called
    made after that (on another of its calls) outranks it."""
    return is_overridden(metadata) and (entry is None or entry.recorded_at <= placed_at)


class ComplianceActivities:
    def __init__(self, registry: DoNotContactRegistry) -> None:
        self.registry = registry

    @activity.defn(name="remember_do_not_contact")
    async def remember_do_not_contact(self, request: RememberRequest) -> bool:
        """Record the number when the outcome is do_not_contact; True when it was recorded."""
        if request.outcome != "do_not_contact":
            return False
        await self.registry.add(
            DoNotContactEntry(
                organization_id=request.organization_id,
                phone_number=request.phone_number,
                call_id=request.call_id,
                reason=request.outcome_summary,
                recorded_at=datetime.now(UTC),
            )
        )
        return True

    @activity.defn(name="check_contact_allowed")
    async def check_contact_allowed(self, request: ContactCheckRequest) -> None:
        """Raise a non-retryable `DoNotContact` error when the number asked not to be called."""
        await ensure_contact_allowed(self.registry, request)


async def ensure_contact_allowed(registry: DoNotContactRegistry, request: ContactCheckRequest) -> None:
    """The check itself, for the API to run before it even starts an order (a 409/422 to the caller)."""
    if is_overridden(request.metadata) and request.placed_at is None:  # a new order: consent since
        return
    entry = await registry.get(request.organization_id, request.phone_number)
    if not overrides(entry, request.metadata, request.placed_at or datetime.now(UTC)):
        refuse_listed(entry, request)


def refuse_listed(entry: DoNotContactEntry | None, request: ContactCheckRequest) -> None:
    """Raise the non-retryable `DoNotContact` error when the number is listed (`entry`); callers check
    the override first, so an overridden order costs no lookup."""
    if entry is not None:
        raise ApplicationError(
            f"phone_number {request.phone_number} asked not to be contacted again (call {entry.call_id}, "
            f'{entry.recorded_at:%Y-%m-%d}); set metadata.{OVERRIDE_METADATA_KEY}="true" only if the '
            "callee has since consented",
            type=DO_NOT_CONTACT,
            non_retryable=True,
        )
