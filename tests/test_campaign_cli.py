"""`outdial campaign create FILE.csv` and `status`: columns become prompt variables or metadata."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api import campaign_store, store
from api.auth import api_keys_of
from models.settings import Settings
from models.tables import Database, Organization
from workers.cli import app


def test_create_from_csv_then_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'outdial.db'}"
    monkeypatch.setenv("OUTDIAL_DATABASE_URL", url)
    monkeypatch.setenv("OUTDIAL_CONFIG", "/dev/null")
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")  # status shows the launch only if Temporal answers
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text(
        "to_phone_number,name,company,metadata.simulation\n"
        "+33612345678,Claire,Acme,human:interested\n"
        "[/bold],Bad,Nope,human\n"  # rich markup in a cell and in the name: printed as written
        "+33612345679,Short\n"  # cells missing: empty (the whole file was refused)
        "+33612345670,Long,Corp,human,extra\n"  # a cell past the header's: ignored (was a traceback)
    )
    runner = CliRunner()
    created = runner.invoke(app, ["campaign", "create", str(csv_file), "--name", "CSV [/] pilot"])
    assert created.exit_code == 0, created.output
    assert "4 rows, 1 skipped" in created.output and "([/bold]): invalid_phone_number" in created.output

    settings = Settings.load()
    (campaign,) = campaign_store.list_campaigns(Database.for_url(url), settings.organization_id)
    (row, call), _, (short, _), (long, _) = campaign_store.rows_with_calls(Database.for_url(url), campaign.id)
    assert row.input_data == {"name": "Claire", "company": "Acme"}
    assert short.input_data == {"name": "Short", "company": ""} and long.input_data == {
        "name": "Long",
        "company": "Corp",
    }
    assert row.row_metadata == {"simulation": "human:interested"} and call.status == "not_launched"

    status = runner.invoke(app, ["campaign", "status", campaign.id])
    assert status.exit_code == 0, status.output
    assert "CSV [/] pilot" in status.output and "'not_launched': 3" in status.output
    missing = runner.invoke(app, ["campaign", "status", "nope"])
    assert missing.exit_code == 2 and "not found" in missing.output


def test_apikey_list_shows_whole_ids_that_revoke_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a narrow terminal too: the id column is never cut, so it can be copied into `revoke`."""
    monkeypatch.setenv("OUTDIAL_DATABASE_URL", f"sqlite:///{tmp_path / 'outdial.db'}")
    monkeypatch.setenv("OUTDIAL_CONFIG", "/dev/null")
    runner = CliRunner()
    assert runner.invoke(app, ["apikey", "create", "--name", "a-rather-long-key-name-for-ci"]).exit_code == 0
    listed = runner.invoke(app, ["apikey", "list"], env={"COLUMNS": "60"})
    assert listed.exit_code == 0, listed.output
    (key_id,) = re.findall(r"key_[0-9a-f]+", listed.output)
    # piped: a key a line, every value whole (the table cut the times to "2026-12-07…")
    [header, line] = listed.output.splitlines()
    assert header.split("\t") == ["id", "name", "prefix", "created", "revoked"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", line.split("\t")[3]), line
    revoked = runner.invoke(app, ["apikey", "revoke", key_id])
    assert revoked.exit_code == 0 and f"revoked {key_id}" in revoked.output, revoked.output
    unknown = runner.invoke(app, ["apikey", "revoke", "key_0000"])  # an unknown id: exit 2, as for a call
    assert unknown.exit_code == 2 and "no key key_0000" in unknown.output, unknown.output


def test_apikey_create_refuses_what_the_tables_cannot_hold_naming_the_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A usage error (exit 2), on SQLite too, which would have kept it: PostgreSQL refused it with a
    traceback. Nothing is created."""
    url = f"sqlite:///{tmp_path / 'outdial.db'}"
    monkeypatch.setenv("OUTDIAL_DATABASE_URL", url)
    monkeypatch.setenv("OUTDIAL_CONFIG", "/dev/null")
    runner = CliRunner()
    refusals = (("--name", "x" * 201), ("--org", "o" * 65), ("--name", ""), ("--email", "e" * 321))
    # an organization "a:b" would share organization "a"'s concurrency keys ("b:...")
    for option, value in (*refusals, ("--org", "org_a:b")):
        refused = runner.invoke(app, ["apikey", "create", option, value], env={"COLUMNS": "200"})
        assert refused.exit_code == 2, refused.output
        assert f"Invalid value for {option}" in refused.output and "Traceback" not in refused.output
    assert api_keys_of(Database.for_url(url), Settings.load().organization_id) == []
    assert api_keys_of(Database.for_url(url), "org_a:b") == []
    for command in ("show", "rotate"):  # the webhook secret's --org alike: it made the organization
        refused = runner.invoke(app, ["webhook-secret", command, "--org", "o" * 65], env={"COLUMNS": "200"})
        assert refused.exit_code == 2 and "Invalid value for '--org'" in refused.output, refused.output
    with Database.for_url(url).session() as session:
        assert session.get(Organization, "o" * 65) is None


def test_create_refuses_a_file_that_is_not_a_contacts_csv_in_one_line_and_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Missing, not UTF-8, without a to_phone_number column, a --retry that is not JSON, or no contacts:
    a usage error naming the problem (exit 2), no traceback, and no campaign or new assistant left."""
    url = f"sqlite:///{tmp_path / 'outdial.db'}"
    monkeypatch.setenv("OUTDIAL_DATABASE_URL", url)
    monkeypatch.setenv("OUTDIAL_CONFIG", "/dev/null")
    files = {
        "utf16.csv": "to_phone_number\n+33612345678\n".encode("utf-16"),
        "columns.csv": b"name,company\nA,B\n",
    }
    files |= {"header-only.csv": b"to_phone_number\n", "good.csv": b"to_phone_number\n+33612345678\n"}
    files |= {"retry.json": b"{not json"}
    files |= {"twice.csv": b"to_phone_number,name,name\n+33612345678,A,B\n"}
    files |= {"latin1.csv": b"to_phone_number,name\n+33612345678,Claire\n+33612345679,Ren\xe9e\n"}
    files |= {"huge.csv": b"to_phone_number,notes\n+33612345678," + b"x" * 200_000 + b"\n"}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    runner = CliRunner()
    for arguments, said in (
        (["missing.csv"], "does not exist"),
        (["utf16.csv"], "Invalid value for FILE: not UTF-8 text (line 1: invalid start byte)"),
        (["twice.csv"], "Invalid value for FILE: columns named twice: name"),
        (["latin1.csv"], "Invalid value for FILE: not UTF-8 text (line 3: invalid continuation byte)"),
        (["huge.csv"], "Invalid value for FILE: line 2: field larger than field limit"),
        (["columns.csv"], "Invalid value for FILE: no to_phone_number column (its columns: name, company)"),
        (["good.csv", "--retry", "retry.json"], "Invalid value for --retry: not JSON"),
        (["header-only.csv"], "contacts: List should have at least 1 item after validation, not 0"),
    ):
        paths = [str(tmp_path / argument) if "." in argument else argument for argument in arguments]
        refused = runner.invoke(app, ["campaign", "create", *paths, "--name", "N"], env={"COLUMNS": "200"})
        assert refused.exit_code == 2 and said in refused.output, (arguments, refused.output)
        assert "Traceback" not in refused.output
    database, organization_id = Database.for_url(url), Settings.load().organization_id
    assert campaign_store.list_campaigns(database, organization_id) == []
    assert store.list_assistants(database, organization_id) == []


def test_a_spreadsheets_empty_columns_and_blank_rows_are_dropped(tmp_path: Path) -> None:
    """An export with stray empty columns (`,,` in its header) was refused as "columns named twice: "
    naming nothing, and a row of only commas became a skipped row."""
    from workers.cli import read_contacts

    exported = tmp_path / "export.csv"
    exported.write_bytes(
        b"to_phone_number,name,,\r\n+33612345678,Claire,,\r\n,,,\r\n+33612345679,Oliver,,\r\n"
    )
    assert read_contacts(exported) == [
        {"to_phone_number": "+33612345678", "prompt_variables": {"name": "Claire"}, "metadata": None},
        {"to_phone_number": "+33612345679", "prompt_variables": {"name": "Oliver"}, "metadata": None},
    ]


def test_a_hand_typed_csvs_spaces_after_commas_and_around_names_are_not_part_of_them(tmp_path: Path) -> None:
    """`to_phone_number, name` made the prompt variable ` name` (its `{{name}}` never filled), and
    `to_phone_number ,name` was refused as having no to_phone_number column."""
    from workers.cli import read_contacts

    typed = tmp_path / "typed.csv"
    typed.write_text("to_phone_number , name, metadata. crm_id\n+33612345678 , Claire , A-1 \n")
    assert read_contacts(typed) == [
        {
            "to_phone_number": "+33612345678",
            "prompt_variables": {"name": "Claire"},
            "metadata": {"crm_id": "A-1"},
        }
    ]


def test_temporal_unreachable_is_one_line_saying_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It quoted the transport's nested error (`tonic::transport::Error(Transport, ConnectError(...`) and
    said nothing of where the address is set, unlike the namespace's error beside it."""
    config = tmp_path / "mine.yaml"
    config.write_text("temporal:\n  address: 127.0.0.1:1\n")
    monkeypatch.setenv("OUTDIAL_CONFIG", str(config))
    monkeypatch.setenv("OUTDIAL_DATABASE_URL", f"sqlite:///{tmp_path / 'outdial.db'}")
    monkeypatch.setenv("OUTDIAL_CODEC_KEY", "plaintext")
    monkeypatch.delenv("TEMPORAL_ADDRESS", raising=False)
    failed = CliRunner().invoke(
        app, ["call", "--to", "+33612345678", "--prompt", "Hello"], env={"COLUMNS": "400"}
    )
    assert failed.exit_code == 1
    message = " ".join(failed.output.split())
    assert message.startswith("Temporal at 127.0.0.1:1 is unreachable (") and "tonic" not in message
    assert (
        f"start the local stack (`outdial dev`), or set TEMPORAL_ADDRESS or temporal.address in {config}"
        in message
    )


def test_a_worker_whose_analyzer_has_no_default_endpoint_says_so_and_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It started without a word, and every answered call of an assistant without its own LLM endpoint
    ended without an outcome. Not refused: assistants that all bring their own endpoint need none."""
    monkeypatch.setenv("OUTDIAL_CONFIG", "/dev/null")
    monkeypatch.setenv("OUTDIAL_CODEC_KEY", "plaintext")
    monkeypatch.setenv("OUTDIAL_DATABASE_URL", f"sqlite:///{tmp_path / 'outdial.db'}")
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")  # it goes on as far as connecting
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENROUTER_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OUTDIAL_ANALYZER", "openai")
    started = CliRunner().invoke(app, ["worker"], env={"COLUMNS": "400"})
    said = " ".join(started.output.split())
    assert "the openai analyzer has no OPENAI_API_KEY (nor OPENAI_BASE_URL)" in said, said
    assert "is unreachable" in said  # it went on: this setup may be on purpose
