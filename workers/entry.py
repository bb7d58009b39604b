"""The `outdial` command's entry point: Ctrl-C while the CLI still loads (its imports take seconds on
a small machine: the Temporal SDK, the workflows, every timezone) ends it quietly, not with a
KeyboardInterrupt traceback from deep inside an import."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

INTERRUPTED = 128 + signal.SIGINT  # as a shell reports a command Ctrl-C ended


def main() -> None:
    guard_the_start()
    from workers.cli import main as run  # the long part

    signal.signal(signal.SIGINT, signal.default_int_handler)  # the commands handle Ctrl-C themselves
    run()


def guard_the_start() -> None:
    signal.signal(signal.SIGINT, _interrupted)


def _interrupted(_signal: int, _frame: FrameType | None) -> None:
    sys.stderr.flush()
    os._exit(INTERRUPTED)
