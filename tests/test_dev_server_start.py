"""Starting the embedded dev server: the `temporal` CLI picks its HTTP API's port itself, and another
process can take that port before the server binds it (seen once in the suite: the server exited).
outdial starts it again; any other failure is reported at once, with the log to read."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import workers.devserver
from tests.processes import Stack
from workers.devserver import start_dev_server, stop_dev_server

RACE = (
    "failed listening for HTTP API on 127.0.0.1:43747: listen tcp 127.0.0.1:43747: "
    "bind: address already in use"
)

# Stands in front of the real CLI: its first launches print `said` and exit; later ones exec the CLI.
FRONT = """
import os, sys
counter, failures, said, *command = sys.argv[1:]
launches = int(open(counter).read() or 0) + 1 if os.path.exists(counter) else 1
open(counter, "w").write(str(launches))
if launches <= int(failures):
    print("Error: failed starting server: " + said, flush=True)
    sys.exit(1)
os.execv(command[0], command)
"""


def front_the_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, failures: int, said: str) -> Path:
    script, counter = tmp_path / "front.py", tmp_path / "launches"
    script.write_text(FRONT)
    real = workers.devserver.dev_server_command
    front = [sys.executable, str(script), str(counter), str(failures), said]
    monkeypatch.setattr(
        workers.devserver, "dev_server_command", lambda settings, **kw: [*front, *real(settings, **kw)]
    )
    return counter


async def test_a_lost_port_race_is_started_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = front_the_cli(monkeypatch, tmp_path, failures=2, said=RACE)
    stack = Stack(tmp_path)
    server = await start_dev_server(stack.settings)
    try:
        assert server.poll() is None
        assert counter.read_text() == "3"
        await stack.client()  # it answers
    finally:
        stop_dev_server(server)


async def test_any_other_failure_is_reported_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = front_the_cli(monkeypatch, tmp_path, failures=1, said="unable to open database file")
    stack = Stack(tmp_path)
    said = r"exited \(1\): failed starting server: unable to open database file; see .*temporal-server\.log"
    with pytest.raises(RuntimeError, match=said):  # its own words, then where to read more
        await start_dev_server(stack.settings)
    assert counter.read_text() == "1"
    assert "unable to open database file" in (tmp_path / "temporal-server.log").read_text()


async def test_a_race_lost_every_time_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = front_the_cli(monkeypatch, tmp_path, failures=5, said=RACE)
    with pytest.raises(RuntimeError, match="exited"):
        await start_dev_server(Stack(tmp_path).settings)
    assert counter.read_text() == str(workers.devserver._START_ATTEMPTS)
