"""CSV exports hold text from outside (what a callee said, metadata, a contact's columns): no cell may run
as a spreadsheet formula, and numbers and phone numbers stay as they are."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from api.call_records import render_csv
from api.campaign_stats import export_csv
from api.spreadsheet import FORMULA_STARTS, csv_text
from api.store import ExportedCall
from models.tables import CallAttemptRecord, CallOrderRecord, CampaignRowRecord

NOW = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)


def read_back(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@given(st.text())
def test_a_cell_reads_back_as_given_or_as_text_and_never_as_a_formula(value: str) -> None:
    header, [back] = csv.reader(io.StringIO(csv_text([["v"], [value]])))
    assert header == ["v"]
    assert back in (value, "'" + value)
    if back.startswith(FORMULA_STARTS):  # left as it is: digits and signs at most, nothing to run
        assert re.fullmatch(r"[-+\d\s().]+", back) and back == value


def test_numbers_and_phone_numbers_are_left_as_they_are() -> None:
    values = ["+33612345678", "-5", "+1 (415) 555-0100", "42", "hello", ""]
    [row] = read_back(csv_text([[f"c{i}" for i in range(len(values))], values]))
    assert list(row.values()) == values


def test_a_call_export_keeps_a_callees_formula_as_text() -> None:
    call = ExportedCall(
        id="c1",
        to_phone_number="+33612345678",
        from_phone_number="+33159000000",
        status="completed",
        outcome=None,
        assistant_id=None,
        created_at=NOW,
        scheduled_at=None,
        outcome_summary=None,
        metadata={"crm_id": '=HYPERLINK("https://evil.example","open")'},
    )
    attempt = CallAttemptRecord(
        id="a1",
        call_id="c1",
        organization_id="org",
        number=1,
        phone_number="+33612345678",
        status="completed",
        structured_output={"name": "@SUM(1+1)*cmd|' /C calc'!A0", "budget": "-2000"},
        outcome_summary="-the callee asked for a brochure",
    )
    [row] = read_back(render_csv([(call, [attempt])], metadata=True, structured=True))
    assert row["to_phone_number"] == "+33612345678" and row["structured_output.budget"] == "-2000"
    assert row["metadata.crm_id"] == '\'=HYPERLINK("https://evil.example","open")'
    assert row["structured_output.name"] == "'@SUM(1+1)*cmd|' /C calc'!A0"


def campaign_row(**input_data: str) -> CampaignRowRecord:
    return CampaignRowRecord(
        id="r1",
        campaign_id="k1",
        organization_id="org",
        row_index=0,
        phone_number="+33612345678",
        state="not_launched",
        input_data=input_data,
    )


def test_a_campaign_export_keeps_a_contacts_formula_as_text() -> None:
    row = campaign_row(name="=1+2", company="+ACME")
    [line] = read_back(export_csv([(row, None)], ["name", "company"]))
    assert (line["name"], line["company"], line["to_phone_number"]) == ("'=1+2", "'+ACME", "+33612345678")


def test_a_contact_column_named_as_an_export_column_keeps_its_own() -> None:
    """A prompt variable `outcome`: headed `contact.outcome`, beside the call's own `outcome` (a CSV
    reader kept only one of two columns named alike)."""
    row = campaign_row(outcome="theirs", name="Ada")
    [line] = read_back(export_csv([(row, None)], ["outcome", "name"]))
    assert (line["contact.outcome"], line["outcome"], line["name"]) == ("theirs", "", "Ada")
    again = campaign_row(outcome="2nd", **{"contact.outcome": "1st"})  # an export read back as a campaign
    text = export_csv([(again, None)], ["outcome", "contact.outcome"])
    header = text.splitlines()[0].split(",")
    assert len(header) == len(set(header)), header  # a reader kept one of two columns named alike
    [line] = read_back(text)
    assert (line["contact.contact.outcome"], line["contact.outcome"]) == ("2nd", "1st")


def test_a_campaign_export_holds_each_rows_metadata_and_what_its_call_extracted() -> None:
    """The CRM id a row carried and the data its call extracted were left out (`POST /call/export` had
    them): the export could not be matched back to the CRM."""
    row = campaign_row(name="Ada", **{"metadata.crm_id": "theirs"})  # a variable named as a column of ours
    row.row_metadata = {"crm_id": "A-1"}
    attempts = [{"id": "a2", "structured_output": {"email": "ada@example.com", "budget": 42}}, {"id": "a1"}]
    call = CallOrderRecord(
        id="c1", organization_id="org", status="completed", calls_count=2, call={"call_attempts": attempts}
    )
    other = campaign_row(name="Bob")
    other.id = "r2"
    lines = read_back(export_csv([(row, call), (other, None)], ["name", "metadata.crm_id"]))
    assert lines[0]["contact.metadata.crm_id"] == "theirs"
    assert [(line["metadata.crm_id"], line["structured_output.budget"]) for line in lines] == [
        ("A-1", "42"),
        ("", ""),
    ]
    assert lines[0]["structured_output.email"] == "ada@example.com" and lines[0]["name"] == "Ada"
