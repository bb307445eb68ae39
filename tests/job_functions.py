"""Jobs for vaelab.jobs' tests: importable by name, as a spawned process needs them."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import torch

from vaelab import progress
from vaelab.errors import ConfigError


def record(path: str) -> None:
    """Write this process's id and thread count to ``path``."""
    Path(path).write_text(json.dumps({"pid": os.getpid(), "threads": torch.get_num_threads()}))


def refuse_or_wait(message: str | None, waiter: str) -> None:
    """Refuse with ``message`` once the job waiting at ``waiter`` waits; without a message, be that job."""
    if message is None:
        wait_for_a_stop(waiter)
    deadline = time.monotonic() + 60
    while not Path(waiter + ".ready").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    raise ConfigError(message)


def crash() -> None:
    raise ValueError("a bug")


def wait_for_a_stop(path: str) -> None:
    """Wait (at most a minute) for SIGTERM or SIGINT, then write its number to ``path`` and stop as training does."""
    received = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, frame: received.append(number))
    Path(path + ".ready").touch()
    deadline = time.monotonic() + 60
    while not received and time.monotonic() < deadline:
        time.sleep(0.01)
    Path(path).write_text(str(received[0] if received else "none"))
    raise KeyboardInterrupt


def show_progress(name: str) -> None:
    """A bar titled ``name`` and a line between its updates, as training shows them."""
    shown = progress.bar(10, name, "img")
    shown.update(5)
    shown.set_postfix(bound="1.00", refresh=False)
    progress.write(f"{name}: half way")
    shown.update(5)
    shown.close()


def die() -> None:
    """Be killed, as by the out-of-memory killer."""
    os.kill(os.getpid(), signal.SIGKILL)


def stopped() -> None:
    """Stop as training does on a signal sent to this process alone."""
    raise KeyboardInterrupt
