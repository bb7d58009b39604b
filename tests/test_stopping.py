"""Ctrl-C, SIGTERM (`kill`, `docker stop`, systemd) and a closed terminal stop outdial's long-lived
commands alike: their `async with` blocks unwind, so a worker drains and the dev server `outdial dev`
started stops with it instead of being left running on its port."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import eventually, free_ports
from tests.processes import Stack

REPO = Path(__file__).resolve().parent.parent


def answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


async def exit_code(process: subprocess.Popen[bytes], timeout: float = 60) -> int:
    return await asyncio.wait_for(asyncio.to_thread(process.wait), timeout)


async def ended(process: subprocess.Popen[bytes], log: Path) -> tuple[int, str]:
    """The exit code of a command expected to end by itself (killed if it does not), and its output."""
    try:
        code = await exit_code(process)
    finally:
        if process.poll() is None:
            process.kill()
    return code, await asyncio.to_thread(log.read_text, errors="replace")


def outdial_dev(
    tmp_path: Path, ports: list[int], database_url: str | None = None, address: str | None = None
) -> tuple[subprocess.Popen[bytes], Path]:
    """`outdial dev` in `tmp_path` on these ports (dev server, its UI, API, SMTP sink, codec), its
    output in the log file returned."""
    port, ui_port, api_port, smtp_port, codec_port = ports
    config = yaml.safe_load((REPO / "temporal-dev.yaml").read_text())
    if database_url:
        config["database_url"] = database_url
    config["temporal"]["address"] = address or f"127.0.0.1:{port}"
    config["temporal"]["dev_server"].update(port=port, ui_port=ui_port)
    config["local_stack"].update(api_port=api_port, smtp_sink_port=smtp_port, codec_server_port=codec_port)
    (tmp_path / "temporal-dev.yaml").write_text(yaml.safe_dump(config))
    log = tmp_path / "dev.log"
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "OUTDIAL_CONFIG": str(tmp_path / "temporal-dev.yaml"),
        "COLUMNS": "200",
    }
    # As a terminal's shell starts a command, hangups not ignored: under nohup (a suite run in the
    # background) the stack would inherit nohup's and, by design, ignore a closed terminal.
    hangup = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(Path(sys.executable).parent / "outdial"), "dev"],
                cwd=tmp_path,  # the stack keeps its files in ./.outdial
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a process group of its own, as a terminal gives a command
            )
    finally:
        signal.signal(signal.SIGHUP, hangup)
    return process, log


STOPS = {
    "sigterm": ("SIGTERM to outdial (kill, docker stop, systemd)", signal.SIGTERM, False),
    "ctrl-c": ("Ctrl-C: SIGINT to the terminal's process group", signal.SIGINT, True),
    "hangup": ("the terminal closed: SIGHUP to its process group", signal.SIGHUP, True),
    "kill-9": ("SIGKILL to outdial: nothing of it unwinds", signal.SIGKILL, False),
}


@pytest.mark.parametrize("how", list(STOPS))
async def test_outdial_dev_stops_with_the_dev_server_it_started(tmp_path: Path, how: str) -> None:
    """However `outdial dev` ends, the dev server it started ends too, not left on its port. Ctrl-C
    reaches outdial alone (the server has a process group of its own), so the worker's shutdown still
    finds the server answering: before, one Ctrl-C in three printed the SDK's `shutdown_worker rpc
    errored` WARN. Only kill -9 skips the unwinding: then the kernel stops the server (Linux)."""
    _, sent, to_group = STOPS[how]
    ports = free_ports(5)
    port, _, api_port, _, _ = ports
    process, log = outdial_dev(tmp_path, ports)
    try:

        async def output() -> str:
            assert process.poll() is None, f"outdial dev exited: {log.read_text(errors='replace')}"
            return log.read_text(errors="replace")

        await eventually(output, lambda text: "press Ctrl-C to stop" in text, timeout=120)
        assert answers(port) and answers(api_port)

        if to_group:
            os.killpg(process.pid, sent)
        else:
            process.send_signal(sent)
        code = await exit_code(process)
        printed = log.read_text(errors="replace")
        if sent == signal.SIGKILL:
            assert code == -signal.SIGKILL
            await eventually(lambda: asyncio.to_thread(answers, port), lambda up: not up, timeout=30)
            return
        assert code == 0, printed
        assert "Traceback" not in printed and " WARN" not in printed, printed
        assert not answers(api_port)
        assert not answers(port), "the dev server outlived `outdial dev`"
    finally:
        if process.poll() is None:
            process.kill()
        if answers(port):  # do not leave a dev server behind for the next tests
            pattern = f"start-dev .* --port {port} "
            await asyncio.to_thread(subprocess.run, ["pkill", "-f", "--", pattern], check=False)


async def test_sigterm_stops_a_worker_cleanly(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    await stack.start_server()
    try:
        worker = await stack.start_worker()
        worker.send_signal(signal.SIGTERM)
        assert await exit_code(worker) == 0, (tmp_path / "worker-1.log").read_text(errors="replace")
    finally:
        await stack.stop()


@pytest.mark.parametrize(
    ("taken", "said"),
    [
        (0, "address already in use"),  # held by a program that is not Temporal: it never answers
        (1, "can't set UI port {port}"),
        (1, "set temporal.dev_server.port or ui_port in {config}"),  # the file OUTDIAL_CONFIG names
        (2, "HTTP API: port {port} on 127.0.0.1 is in use; set local_stack.api_port"),
    ],
    ids=["dev server", "dev server UI", "dev server UI: where", "API"],
)
async def test_outdial_dev_with_a_port_in_use_says_which_in_a_line(
    tmp_path: Path, taken: int, said: str
) -> None:
    """A port of the stack already in use (another program, another outdial) ends `outdial dev` at
    once: exit 1, one line naming the port and where to change it, no traceback; the dev server it may
    have started stopped with it."""
    ports = free_ports(5)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", ports[taken]))
        holder.listen()
        code, printed = await ended(*outdial_dev(tmp_path, ports))
    assert code == 1, printed
    said = said.format(port=ports[taken], config=tmp_path / "temporal-dev.yaml")
    assert said in printed and "Traceback" not in printed, printed
    assert not answers(ports[0]), "the dev server outlived `outdial dev`"
    if taken == 2:  # tried before anything starts: no dev server started, no uvicorn error line
        assert "dev server" not in printed and "Errno" not in printed, printed


async def test_outdial_dev_whose_address_is_not_its_dev_servers_says_so_in_a_line(tmp_path: Path) -> None:
    """temporal.dev_server.port changed (as a port in use tells you to) but not temporal.address: the
    dev server starts where the stack cannot reach it. Before, a traceback of about 220 lines."""
    ports = free_ports(6)
    code, printed = await ended(*outdial_dev(tmp_path, ports[:5], address=f"127.0.0.1:{ports[5]}"))
    assert code == 1, printed
    assert f"Temporal does not answer at 127.0.0.1:{ports[5]}: set temporal.address" in printed, printed
    assert "Traceback" not in printed, printed
    assert not answers(ports[0]), "the dev server outlived `outdial dev`"


async def test_outdial_dev_with_its_database_unreachable_says_so_in_a_line_and_starts_nothing(
    tmp_path: Path,
) -> None:
    """Exit 1 with one line naming the database (its password hidden) and where to set it, before the
    dev server or anything else starts: before, a traceback of about 600 lines after the dev server."""
    ports = free_ports(6)
    unreachable = f"postgresql://outdial:hunter2@127.0.0.1:{ports[5]}/outdial"
    code, printed = await ended(*outdial_dev(tmp_path, ports[:5], database_url=unreachable))
    assert code == 1, printed
    assert printed.startswith(f"the database at postgresql://outdial:***@127.0.0.1:{ports[5]}/outdial is")
    assert f"set OUTDIAL_DATABASE_URL or database_url in {tmp_path / 'temporal-dev.yaml'}" in printed, printed
    assert "hunter2" not in printed and "Traceback" not in printed and len(printed.splitlines()) == 1
    assert not answers(ports[0]), "a dev server was started"


@pytest.mark.parametrize(
    ("command", "what"), [(["codec", "serve"], "the codec server"), (["api"], "the HTTP API")]
)
def test_a_server_command_on_a_port_in_use_says_so_in_a_line(command: list[str], what: str) -> None:
    """Exit 1 and one line naming the port; before, a traceback of 115 lines (the codec server), or
    uvicorn's own log lines and exit 3 (the API)."""
    [port] = free_ports(1)
    key = "A" * 43 + "="  # 32 bytes, base64
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "OUTDIAL_CONFIG": "/dev/null",
        "OUTDIAL_CODEC_KEY": key,
    }
    outdial = str(Path(sys.executable).parent / "outdial")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        done = subprocess.run(
            [outdial, *command, "--port", str(port)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"{what} cannot listen on 127.0.0.1:{port}: ") and "in use" in line, line
    beyond = subprocess.run(
        [outdial, *command, "--port", "99999"], env=environment, capture_output=True, text=True
    )
    assert beyond.returncode == 2 and "Traceback" not in beyond.stderr and "65535" in beyond.stderr


def test_ctrl_c_while_the_command_loads_ends_it_quietly() -> None:
    """The CLI's imports take seconds on a small machine; Ctrl-C then printed a KeyboardInterrupt
    traceback from inside an import. `outdial`'s entry point takes it from its first line: exit 130."""
    loading = (
        "import os, signal, time\n"
        "from workers.entry import guard_the_start\n"
        "guard_the_start()\n"
        "os.kill(os.getpid(), signal.SIGINT)  # delivered at once, as while `workers.cli` is imported\n"
        "import workers.cli\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", loading], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stderr) == (130, ""), done.stderr
