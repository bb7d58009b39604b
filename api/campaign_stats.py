"""A campaign's numbers, aggregated from the calls its orders persisted (at every state change).

Why the database and not signals from each order to the campaign workflow: the orders already write
their state monotonically (`persist_call`), so counting is one indexed query, and costs the orders
nothing; signals would add events to one workflow for every change of every row (forcing it to
continue-as-new over and over) and still not survive its end. `summarize` is pure.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select

from api.spreadsheet import as_text, csv_text
from models.campaign import FunnelStats, RowStats
from models.common import TERMINAL_STATUSES
from models.tables import CallAttemptRecord, CallOrderRecord, CampaignRecord, CampaignRowRecord, Database

HOT_OUTCOMES = ("interested",)
OUTCOME_LABELS = {
    "interested": "Interested",
    "not_interested": "Not interested",
    "completed": "Completed",
    "requested_callback_later": "Callback requested",
    "requested_callback_new_number": "Callback on another number",
    "do_not_contact": "Do not contact",
}


@dataclass(frozen=True)
class RowFacts:
    """One row as counted: its own state and, if it has one, its call's."""

    row_index: int
    phone_number: str
    state: str
    skip_reason: str | None = None
    call_id: str | None = None
    status: str | None = None
    outcome: str | None = None
    attempts: int = 0
    human_attempts: int = 0
    first_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None


@dataclass
class Summary:
    """What the statistics report: rows by status and by outcome, attempts, reached-human rate."""

    rows: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_outcome: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    attempts: int = 0
    called: int = 0  # rows with at least one attempt
    reached_human: int = 0  # rows with an attempt that reached a human
    first_activity_at: datetime | None = None
    last_activity_at: datetime | None = None
    row_stats: RowStats = field(default_factory=RowStats)

    @property
    def reached_human_rate(self) -> float | None:
        return self.reached_human / self.called if self.called else None

    @property
    def finished(self) -> bool:
        """Every row is skipped or its order ended (a row never launched is not finished)."""
        stats = self.row_stats
        return stats.total == stats.completed + stats.failed + stats.skipped


def row_bucket(facts: RowFacts) -> str:
    """The row_stats field a row counts in."""
    if facts.state in ("skipped", "not_launched"):
        return facts.state
    if facts.state == "cancelled":  # selected, but the campaign was cancelled before it started
        return "failed"
    if facts.status == "completed":
        return "completed"
    if facts.status in TERMINAL_STATUSES:
        return "failed"
    if facts.status in ("calling", "post_processing"):
        return "calling"
    return "retry" if facts.attempts else "pending"


def summarize(rows: list[RowFacts]) -> Summary:
    summary = Summary(rows=len(rows))
    buckets: Counter[str] = Counter()
    for facts in rows:
        buckets[row_bucket(facts)] += 1
        if facts.state == "skipped":
            summary.by_status["skipped"] += 1
            summary.skipped[facts.skip_reason or "skipped"] += 1
            continue
        summary.by_status[_status(facts)] += 1
        if facts.outcome:
            summary.by_outcome[facts.outcome] += 1
        summary.attempts += facts.attempts
        summary.called += facts.attempts > 0
        summary.reached_human += facts.human_attempts > 0
        for instant in (facts.first_attempt_at, facts.last_attempt_at):
            if instant is not None:
                summary.first_activity_at = min(summary.first_activity_at or instant, instant)
                summary.last_activity_at = max(summary.last_activity_at or instant, instant)
    summary.row_stats = RowStats(total=len(rows), **buckets)
    return summary


def funnel(summary: Summary) -> FunnelStats:
    return FunnelStats(
        hot=sum(summary.by_outcome[o] for o in HOT_OUTCOMES),
        talked_to_human=summary.reached_human,
        total_leads=summary.rows,
    )


def campaign_status(record: CampaignRecord, summary: Summary) -> str:
    if record.paused and not record.is_cancelled:
        return "paused"
    if record.is_cancelled or (summary.finished and summary.row_stats.total > 0):
        return "completed"
    return "running"


# --- reading the facts ---------------------------------------------------------------------------------


def _status(facts: RowFacts) -> str:
    """A row's status as `by_status` counts it: its call's, but for a row cancelled, or launched and
    waiting its turn (`pending`, as `row_stats` counts it: its call says `not_launched` until started,
    and until the order's first write once it has)."""
    if facts.state == "cancelled":
        return "cancelled"
    if facts.state in ("pending", "launched") and facts.status in (None, "not_launched"):
        return "pending"
    return facts.status or "not_launched"


def row_facts(database: Database, campaign_id: str) -> list[RowFacts]:
    with database.session() as session:
        rows = session.execute(
            select(
                CampaignRowRecord.row_index,
                CampaignRowRecord.phone_number,
                CampaignRowRecord.state,
                CampaignRowRecord.skip_reason,
                CampaignRowRecord.call_id,
                CallOrderRecord.status,
                CallOrderRecord.outcome,
            )
            .outerjoin(CallOrderRecord, CallOrderRecord.id == CampaignRowRecord.call_id)
            .where(CampaignRowRecord.campaign_id == campaign_id)
            .order_by(CampaignRowRecord.row_index)  # type: ignore[arg-type]
        ).all()
        human = func.sum(case((CallAttemptRecord.result == "human", 1), else_=0))
        attempts = {
            call_id: (count, humans or 0, first, last)
            for call_id, count, humans, first, last in session.execute(
                select(
                    CallAttemptRecord.call_id,
                    func.count(),
                    human,
                    func.min(CallAttemptRecord.started_at),
                    func.max(CallAttemptRecord.started_at),
                )
                .join(CallOrderRecord, CallOrderRecord.id == CallAttemptRecord.call_id)
                .where(CallOrderRecord.campaign_id == campaign_id)
                .group_by(CallAttemptRecord.call_id)
            )
        }
    facts = []
    for index, number, state, reason, call_id, status, outcome in rows:
        count, humans, first, last = attempts.get(call_id, (0, 0, None, None))
        facts.append(
            RowFacts(index, number, state, reason, call_id, status, outcome, count, int(humans), first, last)
        )
    return facts


def leads(database: Database, campaign_id: str, outcome: str) -> list[dict[str, Any]]:
    """The calls of the campaign with this outcome, as the statistics' `leads` list them."""
    with database.session() as session:
        records = session.scalars(
            select(CallOrderRecord)
            .where(CallOrderRecord.campaign_id == campaign_id, CallOrderRecord.outcome == outcome)
            .order_by(CallOrderRecord.updated_at.desc())  # type: ignore[attr-defined]
        )
        result = []
        for record in records:
            variables = record.call.get("prompt_variables") or {}
            attempts = record.call.get("call_attempts") or []
            output = (attempts[0].get("structured_output") if attempts else None) or {}
            name = variables.get("name") or " ".join(
                v for v in (variables.get("first_name"), variables.get("last_name")) if v
            )
            result.append(
                {
                    "attempt_id": attempts[0]["id"] if attempts else None,
                    "call_id": record.id,
                    "direction": record.direction,
                    "email": output.get("email") or variables.get("email"),
                    "last_activity_at": record.call.get("updated_at"),
                    "name": str(output.get("name") or name or record.to_phone_number),
                    "phone": record.to_phone_number,
                    "summary": record.call.get("outcome_summary"),
                }
            )
        return result


def _pct(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def statistics(
    database: Database,
    record: CampaignRecord,
    summary: Summary,
    *,
    agent_name: str | None,
    fields: list[str],
    retry: dict[str, Any],
) -> dict[str, Any]:
    """The official client's `statistics` object, plus outdial's `rows` (by status, by outcome, ...).
    `retry`: the retry config its orders get (its own, else its assistant's), as the campaign shows it."""
    reached = summary.reached_human
    exchanges = sum(summary.by_outcome.values())
    hot = sum(summary.by_outcome[o] for o in HOT_OUTCOMES)
    return {
        "campaign": {
            "id": record.id,
            "agent_name": agent_name,
            "first_activity_at": summary.first_activity_at,
            "has_activity": summary.attempts > 0,
            "is_cancelled": record.is_cancelled,
            "last_activity_at": summary.last_activity_at,
            "max_attempts_per_contact": retry.get("max_retry_attempts"),
            "name": record.name,
            "status": campaign_status(record, summary),
            "timezone": retry.get("timezone") or "per contact",
        },
        "data_extraction": {"fields": fields, "intro": "Fields extracted from every conversation"},
        "effort": {
            "calls_total": summary.attempts,
            "inbound_calls": 0,
            "outbound_attempts": summary.attempts,
        },
        "funnel": {
            "called": {"count": summary.called, "imported_rows": summary.rows},
            "reached": {
                "count": reached,
                "inbound": 0,
                "outbound": reached,
                "overlap": 0,
                "pct_of_called": _pct(reached, summary.called),
            },
            "real_exchanges": {"count": exchanges, "pct_of_reached": _pct(exchanges, reached)},
            "hot_leads": {"count": hot, "pct_of_reached": _pct(hot, reached)},
        },
        "hot_lead_outcomes": list(HOT_OUTCOMES),
        "inbound": {"unique_callers": 0},
        "jump_in": {
            "joined_calls": 0,
            "median_conversation_seconds": None,
            "median_time_to_join_seconds": None,
        },
        "leads": {
            "callback_requested": leads(database, record.id, "requested_callback_later"),
            "interested": leads(database, record.id, "interested"),
        },
        "outcome_breakdown": [
            {"count": count, "label": OUTCOME_LABELS.get(outcome, outcome), "outcome": outcome}
            for outcome, count in summary.by_outcome.most_common()
        ],
        "rows": {
            "total": summary.rows,
            "by_status": dict(summary.by_status),
            "by_outcome": dict(summary.by_outcome),
            "skipped": dict(summary.skipped),
            "attempts": summary.attempts,
            "called": summary.called,
            "reached_human": reached,
            "reached_human_rate": summary.reached_human_rate,
        },
    }


EXPORT_COLUMNS = [
    "row_index",
    "to_phone_number",
    "row_state",
    "skip_reason",
    "call_id",
    "call_status",
    "calls_count",
    "last_result",
    "outcome",
    "outcome_summary",
]


def export_csv(rows: list[tuple[CampaignRowRecord, CallOrderRecord | None]], variables: list[str]) -> str:
    """One line per row: where its call stands, then the contact's columns (one named as a column of
    ours is headed `contact.<name>`: two `outcome` columns, a reader keeps only one), its metadata and
    what its call's last attempt extracted (`metadata.<key>`, `structured_output.<field>`, as
    `POST /call/export` heads them): a CRM id and the data, beside the outcome."""
    extracted = {row.id: _extracted(call) for row, call in rows}
    metadata_keys = sorted({key for row, _ in rows for key in row.row_metadata or {}})
    output_keys = sorted({key for output in extracted.values() for key in output})
    ours = [f"metadata.{key}" for key in metadata_keys] + [f"structured_output.{key}" for key in output_keys]
    reserved = set(EXPORT_COLUMNS + ours)
    taken, headers = reserved | set(variables), []
    for name in variables:
        header = name
        if name in reserved:  # as often as it takes: an export read back as a campaign has both
            header = f"contact.{name}"
            while header in taken:
                header = f"contact.{header}"
            taken.add(header)
        headers.append(header)
    lines: list[list[Any]] = [EXPORT_COLUMNS + headers + ours]
    for row, call in rows:
        metadata, output = row.row_metadata or {}, extracted[row.id]
        lines.append(
            [
                row.row_index,
                row.phone_number,
                row.state,
                row.skip_reason or "",
                call.id if call else "",
                call.status if call else "",
                call.calls_count if call else "",
                (call.last_result or "") if call else "",
                (call.outcome or "") if call else "",
                (call.call.get("outcome_summary") or "") if call else "",
            ]
            + [(row.input_data or {}).get(name, "") for name in variables]
            + [as_text(metadata.get(key)) for key in metadata_keys]
            + [as_text(output.get(key)) for key in output_keys]
        )
    return csv_text(lines)


def _extracted(call: CallOrderRecord | None) -> dict[str, Any]:
    """What the call's last attempt extracted (attempts are kept most recent first)."""
    attempts = (call.call.get("call_attempts") or []) if call is not None and call.call else []
    return (attempts[0].get("structured_output") if attempts else None) or {}
