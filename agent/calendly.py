"""Calendly availability and booking for the assistant's `calendly` setting (Calendly API v2).

The seed's `connection_id` names the link between a Calendly account and this deployment: the agent
maps it to an access token (OUTDIAL_CALENDLY_TOKENS, else CALENDLY_API_TOKEN). `event_type_id` is the
event type's URI (or its bare UUID). Endpoints: `GET /event_type_available_times` and `POST /invitees`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import httpx
from livekit.agents import ToolError

from models.secrets import scrubbed

MAX_RANGE_DAYS = 7  # Calendly accepts up to 31; a week is plenty to offer on the phone
MAX_SLOTS = 12


class CalendlyClient:
    def __init__(self, http: httpx.AsyncClient, *, base_url: str, token: str, event_type: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.event_type = event_type if "://" in event_type else f"{self.base_url}/event_types/{event_type}"

    async def available_times(self, start: date, end: date, *, timezone: str, now: datetime) -> list[str]:
        """Free start times between two local dates (inclusive), as local ISO times."""
        zone = ZoneInfo(timezone)
        start_at = max(datetime.combine(start, time(0), zone), now + timedelta(minutes=1))
        end_at = min(datetime.combine(end, time(23, 59), zone), start_at + timedelta(days=MAX_RANGE_DAYS))
        if end_at <= start_at:
            raise ToolError("that range is in the past; ask for future dates")
        body = await self._request(
            "GET",
            "/event_type_available_times",
            params={
                "event_type": self.event_type,
                "start_time": _utc(start_at),
                "end_time": _utc(end_at),
            },
        )
        slots = [s for s in body.get("collection", []) if s.get("status", "available") == "available"]
        return [
            datetime.fromisoformat(s["start_time"].replace("Z", "+00:00")).astimezone(zone).isoformat()
            for s in slots[:MAX_SLOTS]
        ]

    async def book(
        self, *, start_time: str, name: str, email: str, timezone: str, phone_number: str
    ) -> dict[str, str]:
        """Create the invitee (the booking); returns the event URI and the cancel/reschedule links."""
        try:
            when = datetime.fromisoformat(start_time.replace("Z", "+00:00"))
        except ValueError:
            raise ToolError(f"start_time {start_time!r} is not an ISO 8601 date-time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=ZoneInfo(timezone))
        body = await self._request(
            "POST",
            "/invitees",
            json={
                "event_type": self.event_type,
                "start_time": _utc(when),
                "invitee": {
                    "name": name,
                    "email": email,
                    "timezone": timezone,
                    "text_reminder_number": phone_number,
                },
            },
        )
        resource = body.get("resource", {})
        return {k: str(resource[k]) for k in ("event", "cancel_url", "reschedule_url") if k in resource}

    async def _request(self, method: str, path: str, **kwargs: object) -> dict:  # type: ignore[type-arg]
        try:
            response = await self.http.request(
                method,
                f"{self.base_url}{path}",
                headers={"Authorization": f"Bearer {self.token}"},
                **kwargs,  # type: ignore[arg-type]
            )
        except httpx.HTTPError as err:
            raise ToolError(f"Calendly unreachable: {type(err).__name__}") from None
        if response.status_code >= 400:
            refusal = scrubbed(response.text[:300], [self.token])  # it may quote the token it refused
            raise ToolError(f"Calendly said HTTP {response.status_code}: {refusal}")
        return response.json()


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
