"""The official `revox` client's campaign methods against the API and a worker on the real dev server."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

import pytest
import revox

from api.app import MAX_BODY_BYTES
from models.campaign import MAX_CONTACTS
from tests.test_api import (  # noqa: F401
    ALWAYS_OPEN,
    ORG_NUMBER,
    Org,
    database_url,
    eventually_sync,
    new_org,
    no_filters,
    stack,
)


@pytest.fixture
def org(stack) -> Org:  # noqa: F811
    return new_org(stack)


def test_campaign_lifecycle_with_the_official_client(org: Org) -> None:
    client = org.client
    assistant = client.assistants.create(name="Campaigner", prompt="Offer {{name}} a demo.").assistant
    contacts = [
        {"to_phone_number": "+33612345601", "prompt_variables": {"name": "Claire"}},
        {"to_phone_number": "+33612345602", "prompt_variables": {"name": "Oliver", "rank": 2}},
        {"to_phone_number": "+1555", "prompt_variables": {"name": "Bad"}},
    ]
    created = client.campaigns.with_raw_response.create(
        name="Pilot",
        assistant_id=assistant.id,
        contacts=contacts,
        call_retry_config={**ALWAYS_OPEN, "max_retry_attempts": 1},
        max_concurrent_calls=2,
    ).json()
    campaign = created["campaign"]
    assert created["skipped_rows"][0]["row_index"] == 2
    assert created["skipped_rows"][0]["reason"] == "invalid_phone_number"
    assert campaign["row_stats"] == {
        "calling": 0, "completed": 0, "failed": 0, "not_launched": 2,
        "pending": 0, "retry": 0, "skipped": 1, "total": 3,
    }  # fmt: skip
    assert campaign["status"] == "running" and campaign["max_concurrent_calls"] == 2
    campaign_id = campaign["id"]

    retrieved = client.campaigns.retrieve(campaign_id).campaign
    assert retrieved.name == "Pilot" and retrieved.assistant.id == assistant.id
    assert [c.id for c in client.campaigns.list().campaigns] == [campaign_id]
    assert client.campaigns.update(campaign_id, name="Pilot 2").campaign.name == "Pilot 2"
    # the client types it as a float, and sends back the 3.0 it read: a whole number is that number
    assert client.campaigns.update(campaign_id, max_concurrent_calls=3.0).campaign.max_concurrent_calls == 3
    with pytest.raises(revox.UnprocessableEntityError):
        client.campaigns.update(campaign_id, max_concurrent_calls=2.5)
    with pytest.raises(revox.UnprocessableEntityError) as refused:
        client.campaigns.update(campaign_id, max_concurrent_calls=0)
    assert refused.value.body["error"]["details"][0]["loc"] == ["body", "max_concurrent_calls"]

    rows = client.campaigns.get_rows(campaign_id).rows
    assert [r.phone_number for r in rows] == ["+33612345601", "+33612345602", "+1555"]
    assert rows[0].call.status == "not_launched" and rows[2].call is None
    # the rows not launched show what they will run with, not the name they were created with
    assert {r.call.campaign.name for r in rows if r.call} == {"Pilot 2"}
    assert client.call.retrieve(rows[0].call.id).call.campaign.name == "Pilot 2"
    assert rows[1].input_data == {"name": "Oliver", "rank": "2"}
    assert [
        r.phone_number for r in client.campaigns.get_rows(campaign_id, extra_query={"offset": 2}).rows
    ] == ["+1555"]
    with pytest.raises(revox.UnprocessableEntityError) as refused:  # past an int64 it was a 500 on SQLite
        client.campaigns.get_rows(campaign_id, extra_query={"offset": 2**63})
    assert refused.value.body["error"]["details"][0]["loc"] == ["query", "offset"]
    not_launched = client.call.search(**no_filters(campaign_ids=[campaign_id], statuses=["not_launched"]))
    assert not_launched.total_count == 2
    with pytest.raises(revox.ConflictError, match="not_launched: its campaign has not started it"):
        client.call.cancel(rows[1].call.id)  # no order yet: said so, not that it "has ended"

    with pytest.raises(revox.UnprocessableEntityError):
        client.campaigns.launch(campaign_id, mode="speed_dial", selection={})
    launched = client.campaigns.launch(
        campaign_id,
        mode="ai_first",
        selection={"filters": {}, "rows": {"mode": "only", "call_ids": [rows[0].call.id]}},
    )
    assert launched.launched == 1 and launched.skipped.active == 0
    everything = client.campaigns.launch(campaign_id, mode="ai_first", selection={})
    assert everything.launched == 1  # the first row is on its way (or done): never launched twice
    assert everything.skipped.active + everything.skipped.attempts_exhausted == 1

    done = eventually_sync(
        lambda: client.campaigns.retrieve(campaign_id).campaign,
        lambda c: c.row_stats.completed == 2,
        timeout=60,
    )
    assert done.status == "completed" and done.funnel_stats.talked_to_human == 2
    calls = client.call.search(**no_filters(campaign_ids=[campaign_id])).calls
    assert {c.campaign.name for c in calls} == {"Pilot 2"} and {c.status for c in calls} == {"completed"}
    assert {c.created_at for c in calls} == {rows[0].call.created_at}  # the launch did not move it
    history = client.call.phone_history().phone_history
    assert [(c.id, c.name) for c in history["+33612345601"].campaigns] == [(campaign_id, "Pilot 2")]

    statistics = client.campaigns.statistics(campaign_id).statistics
    assert statistics.funnel.called.count == 2 and statistics.funnel.reached.pct_of_called == 100.0
    assert statistics.campaign.name == "Pilot 2" and statistics.effort.outbound_attempts == 2
    assert {lead.phone for lead in statistics.leads.interested} == {"+33612345601", "+33612345602"}
    extra = client.campaigns.with_raw_response.statistics(campaign_id).json()["statistics"]["rows"]
    assert extra["by_status"] == {"completed": 2, "skipped": 1} and extra["reached_human_rate"] == 1.0

    exported = client.campaigns.export_rows(campaign_id)
    lines = list(csv.DictReader(io.StringIO(exported.csv)))
    assert [line["call_status"] for line in lines] == ["completed", "completed", ""]
    assert lines[2]["skip_reason"] == "invalid_phone_number" and lines[1]["name"] == "Oliver"

    assert client.campaigns.pause(campaign_id).success
    assert client.campaigns.retrieve(campaign_id).campaign.status == "paused"
    assert client.campaigns.resume(campaign_id).success
    assert client.campaigns.cancel(campaign_id).success
    assert client.campaigns.retrieve(campaign_id).campaign.is_cancelled
    with pytest.raises(revox.ConflictError):
        client.campaigns.launch(campaign_id, mode="ai_first", selection={})
    assert client.campaigns.delete(campaign_id).success
    with pytest.raises(revox.NotFoundError):
        client.campaigns.retrieve(campaign_id)
    other = new_org(org.stack)
    with pytest.raises(revox.NotFoundError):
        other.client.campaigns.statistics(campaign_id)


def test_statistics_give_the_retry_config_the_campaign_shows(org: Org) -> None:
    """Without its own retry config a campaign's orders get its assistant's: its statistics say so too
    (they read the campaign's own alone, and said null)."""
    client = org.client
    retry = {**ALWAYS_OPEN, "max_retry_attempts": 2, "timezone": "Europe/Paris"}
    assistant = client.assistants.create(name="Retrier", prompt="Hi.", call_retry_config=retry).assistant
    contacts = [{"to_phone_number": "+33612345601"}]
    campaign = client.campaigns.create(name="Inherits", assistant_id=assistant.id, contacts=contacts).campaign
    assert client.campaigns.retrieve(campaign.id).campaign.call_retry_config.max_retry_attempts == 2
    shown = client.campaigns.statistics(campaign.id).statistics.campaign
    assert (shown.max_attempts_per_contact, shown.timezone) == (2, "Europe/Paris")


def test_a_row_whose_number_has_no_calling_window_is_skipped_saying_to_set_the_timezone(org: Org) -> None:
    """A Russian mobile may be anywhere from Kaliningrad to Kamchatka, zones sharing no window: as
    `POST /call` refuses it, the row is skipped (its order ended `errored` without a word on the Call)."""
    client = org.client
    assistant = client.assistants.create(name="Russia", prompt="Hi.").assistant
    contacts = [{"to_phone_number": "+79123456789"}, {"to_phone_number": "+33612345601"}]
    created = client.campaigns.with_raw_response.create(
        name="Everywhere", assistant_id=assistant.id, contacts=contacts
    ).json()
    [skip] = created["skipped_rows"]
    assert (skip["row_index"], skip["reason"]) == (0, "no_calling_window")
    assert "call_retry_config.timezone" in skip["message"]
    moscow = {"timezone": "Europe/Moscow"}
    chosen = client.campaigns.with_raw_response.create(
        name="Moscow", assistant_id=assistant.id, contacts=contacts, call_retry_config=moscow
    ).json()
    assert chosen["skipped_rows"] == []
    # A new retry config must leave its rows not started a window too: launched, the row would only err.
    with pytest.raises(revox.UnprocessableEntityError) as refused:
        client.campaigns.update(chosen["campaign"]["id"], call_retry_config={"max_retry_attempts": 2})
    assert "call_retry_config" in str(refused.value.body) and "+79123456789" in str(refused.value.body)
    assert (
        client.campaigns.retrieve(chosen["campaign"]["id"]).campaign.call_retry_config.timezone
        == "Europe/Moscow"
    )
    moved = {**moscow, "max_retry_attempts": 2}
    assert client.campaigns.update(
        chosen["campaign"]["id"], call_retry_config=moved
    ).campaign.call_retry_config
    shown = [row.call.call_retry_config for row in client.campaigns.get_rows(chosen["campaign"]["id"]).rows]
    assert [(c.max_retry_attempts, c.timezone) for c in shown] == [(2, "Europe/Moscow")] * 2


def test_a_campaign_keeps_the_assistant_and_caller_id_it_was_created_with_once_they_are_deleted(
    org: Org,
) -> None:
    """Its rows were accepted with them (its calls show them from creation): deleting them after does not
    turn every launched row into an `errored` order, as it did (the order looked them up afresh), nor
    move a row accepted with the organization's default number onto another."""
    client = org.client
    with org.raw() as http:
        assert http.post("/phone-numbers", json={"phone_number": "+33159000003"}).status_code == 200
        numbers = {n["phone_number"]: n["id"] for n in http.get("/phone-numbers").json()["phone_numbers"]}
    assistant = client.assistants.create(name="Short-lived", prompt="Offer {{name}} a demo.").assistant
    contacts = [{"to_phone_number": "+33612345601", "prompt_variables": {"name": "Claire"}}]
    named, default = (
        client.campaigns.create(
            name=name,
            assistant_id=assistant.id,
            contacts=contacts,
            call_retry_config=ALWAYS_OPEN,
            **({"from_phone_number": "+33159000003"} if name == "named" else {}),
        ).campaign
        for name in ("named", "default")
    )
    assert client.assistants.delete(assistant.id).success
    with org.raw() as http:
        for number_id in numbers.values():  # the one named and the default (ORG_NUMBER)
            assert http.delete(f"/phone-numbers/{number_id}").status_code == 200
    for campaign, number in ((named, "+33159000003"), (default, ORG_NUMBER)):
        # renamed and its max changed all the same: neither looks the assistant or the number up
        assert client.campaigns.update(campaign.id, name=f"{campaign.name} 2").campaign.name.endswith(" 2")
        assert client.campaigns.update(campaign.id, max_concurrent_calls=3).campaign.max_concurrent_calls == 3
        # a new retry config too (a 422 on the caller id deleted, which the request did not name)
        retry = {**ALWAYS_OPEN, "max_retry_attempts": 2}
        assert client.campaigns.update(campaign.id, call_retry_config=retry).campaign.call_retry_config
        with pytest.raises(revox.UnprocessableEntityError, match="from_phone_number"):  # named: checked
            client.campaigns.update(campaign.id, from_phone_number="+33159000003")
        assert client.campaigns.launch(campaign.id, mode="ai_first", selection={}).launched == 1
        [call] = eventually_sync(
            lambda: client.call.search(**no_filters(campaign_ids=[campaign.id])).calls,  # noqa: B023
            lambda calls: calls[0].status in ("completed", "errored"),
            timeout=60,
        )
        assert call.status == "completed", call.outcome_summary
        assert (call.assistant.id, call.from_phone_number) == (assistant.id, number)
        assert call.call_retry_config.max_retry_attempts == 2


def test_a_campaign_body_may_be_larger_than_any_other(org: Org) -> None:
    """Up to 100,000 contacts: past the API's 16 MB for other bodies, so the limit is the contacts'."""
    contact = {"to_phone_number": "+33612345678", "prompt_variables": {"note": "x" * 150}}
    body = {"name": "Big", "assistant_id": str(uuid.uuid4()), "contacts": [contact] * (MAX_CONTACTS + 1)}
    with org.raw() as http:
        refused = http.post("/campaigns", json=body)
    assert len(json.dumps(body)) > MAX_BODY_BYTES
    assert refused.status_code == 422, refused.text[:300]
    assert refused.json()["error"]["details"][0]["loc"] == ["body", "contacts"]


def test_a_row_whose_order_temporal_refuses_is_skipped_and_the_rest_launch(org: Org) -> None:
    """A row with a 300 KB prompt variable: its order is more than an order can carry (once past
    Temporal's 2 MB payload limit, it was refused; under it, its order stalled after its call). It is
    skipped (`order_refused`) and the batch goes on; before, the batch was retried for ever and its
    other rows, started, were never marked launched."""
    client = org.client
    assistant = client.assistants.create(name="Campaigner", prompt="Offer {{name}} a demo.").assistant
    contacts = [
        {"to_phone_number": "+33612345611", "prompt_variables": {"name": "Big", "notes": "x" * 300_000}},
        {"to_phone_number": "+33612345612", "prompt_variables": {"name": "Small"}},
    ]
    campaign = client.campaigns.create(
        name="Heavy", assistant_id=assistant.id, contacts=contacts, call_retry_config=ALWAYS_OPEN
    ).campaign
    client.campaigns.launch(campaign.id, mode="ai_first", selection={})
    rows = eventually_sync(
        lambda: client.campaigns.with_raw_response.get_rows(campaign.id).json()["rows"],
        lambda rows: [r["state"] for r in rows] == ["skipped", "launched"],
        timeout=60,
    )
    assert (
        rows[0]["skipped"]["reason"] == "order_refused"
        and "are 300028 bytes of JSON, at most 65536 together" in rows[0]["skipped"]["message"]
    )
    done = eventually_sync(
        lambda: client.campaigns.retrieve(campaign.id).campaign,
        lambda c: c.row_stats.completed == 1,
        timeout=60,
    )
    assert done.row_stats.skipped == 1


def test_calls_stored_by_an_earlier_version_are_answered_with_todays_fields(org: Org) -> None:
    """Search and a campaign's rows sent each Call as stored: one written before a field was added
    (the contact, the assistant's stt_model) failed the official client's strict parsing, which
    `GET /call/{id}` passed. A stored Call is answered as today's version reads it, everywhere."""
    from sqlalchemy import update

    from models.tables import CallOrderRecord

    client = org.client
    assistant = client.assistants.create(name="Old", prompt="Offer a demo.").assistant
    campaign = client.campaigns.create(
        name="Old", assistant_id=assistant.id, contacts=[{"to_phone_number": "+33612345601"}]
    ).campaign
    [row] = client.campaigns.get_rows(campaign.id).rows
    with org.stack.database.session() as session:  # as an earlier version wrote it
        stored = session.get(CallOrderRecord, row.call.id)
        assert stored is not None and stored.call["contact"] is not None
        older = {k: v for k, v in stored.call.items() if k != "contact"}
        session.execute(update(CallOrderRecord).where(CallOrderRecord.id == row.call.id).values(call=older))
        session.commit()
    strict = revox.Revox(
        api_key=org.key, base_url=org.stack.url, max_retries=0, _strict_response_validation=True
    )
    [found] = strict.call.search(**no_filters()).calls
    assert found.id == row.call.id and found.contact is not None
    [again] = strict.campaigns.get_rows(campaign.id).rows
    assert again.call is not None and again.call.contact is not None


def one_row_campaign(client: revox.Revox, assistant_id: str, number: str) -> Any:
    """A campaign of one row, to `number`, whose simulated callee answers."""
    contact = {"to_phone_number": number, "prompt_variables": {}, "metadata": {"simulation": "human"}}
    return client.campaigns.create(name="One row", assistant_id=assistant_id, contacts=[contact]).campaign


def test_rows_not_started_show_and_keep_their_assistants_latest_version(org: Org) -> None:
    """The rows' calls showed the assistant as it was when the campaign was created while its launch ran
    the updated one, and once the assistant was deleted they ran the version from the campaign's creation
    (an update undone by a delete): they show, and keep, the version they will run with."""
    client = org.client
    first = {**ALWAYS_OPEN, "max_retry_attempts": 1}
    assistant = client.assistants.create(
        name="V1", prompt="First version.", call_retry_config=first
    ).assistant
    campaign = one_row_campaign(client, assistant.id.upper(), "+33612345631")  # an id in any case finds it
    assert client.campaigns.retrieve(campaign.id).campaign.assistant.id == assistant.id
    client.assistants.update(
        assistant.id,
        name="V2",
        prompt="Second version.",
        call_retry_config={**first, "max_retry_attempts": 3},
    )
    [row] = eventually_sync(  # once the PATCH is answered
        lambda: client.campaigns.get_rows(campaign.id).rows, lambda rows: rows[0].call.assistant.name == "V2"
    )
    assert (row.call.assistant.name, row.call.assistant.prompt) == ("V2", "Second version.")
    assert row.call.call_retry_config.max_retry_attempts == 3
    assert client.assistants.delete(assistant.id).success
    assert client.campaigns.launch(campaign.id, mode="ai_first", selection={}).launched == 1
    done = eventually_sync(lambda: client.call.retrieve(row.call.id).call, lambda c: c.status == "completed")
    assert (done.assistant.name, done.assistant.prompt, done.call_retry_config.max_retry_attempts) == (
        "V2",
        "Second version.",
        3,
    )


def test_a_row_its_assistants_new_windows_leave_without_one_is_skipped_at_launch(org: Org) -> None:
    """The assistant's timezone removed after the campaign was created: its Russian mobile row, in zones
    sharing no window, was launched and its order errored, where creation skips such a row."""
    client = org.client
    day = [
        {"calling_window_start_time": "10:00", "calling_window_end_time": "18:00", "retry_delay_seconds": 60}
    ]
    moscow = {**ALWAYS_OPEN, "calling_windows": day, "max_retry_attempts": 1, "timezone": "Europe/Moscow"}
    assistant = client.assistants.create(name="Moscow", prompt="Hi", call_retry_config=moscow).assistant
    campaign = one_row_campaign(client, assistant.id.upper(), "+79161234567")
    client.assistants.update(assistant.id, call_retry_config={**moscow, "timezone": None})
    client.campaigns.launch(campaign.id, mode="ai_first", selection={})
    [row] = eventually_sync(
        lambda: client.campaigns.get_rows(campaign.id).rows, lambda rows: rows[0].state == "skipped"
    )
    assert (
        row.skipped["reason"] == "no_calling_window" and "share no calling window" in row.skipped["message"]
    )


def test_a_campaign_whose_assistant_is_deleted_still_takes_a_new_retry_config(org: Org) -> None:
    """Its rows run with the copy they keep, yet a PATCH of call_retry_config or from_phone_number was a
    422 on `assistant_id`, a field the request did not have."""
    client = org.client
    assistant = client.assistants.create(name="Gone", prompt="Hi").assistant
    campaign = one_row_campaign(client, assistant.id, "+33612345641")
    assert client.assistants.delete(assistant.id).success
    retry = {**ALWAYS_OPEN, "max_retry_attempts": 2}
    updated = client.campaigns.update(campaign.id, call_retry_config=retry, from_phone_number=ORG_NUMBER)
    assert updated.campaign.from_phone_number == ORG_NUMBER
    [row] = client.campaigns.get_rows(campaign.id).rows
    assert row.call.call_retry_config.max_retry_attempts == 2 and row.call.assistant.name == "Gone"
    client.campaigns.launch(campaign.id, mode="ai_first", selection={})
    done = eventually_sync(lambda: client.call.retrieve(row.call.id).call, lambda c: c.status == "completed")
    assert done.call_retry_config.max_retry_attempts == 2 and done.from_phone_number == ORG_NUMBER
    # every row launched: the copy is read from them still (a 422 on `assistant_id` again)
    assert client.campaigns.update(campaign.id, call_retry_config=retry).campaign.id == campaign.id
