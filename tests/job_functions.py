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
    """Write this process's id, thread count and subnormal setting to ``path``."""
    from vaelab.machine import subnormals_flushed

    Path(path).write_text(json.dumps({"pid": os.getpid(), "threads": torch.get_num_threads(), "flushed": subnormals_flushed()}))


def _wait_until_ready(waiter: str) -> None:
    """Wait (at most a minute) until the job at ``waiter`` waits for its signal."""
    deadline = time.monotonic() + 60
    while not Path(waiter + ".ready").exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def refuse_or_wait(message: str | None, waiter: str) -> None:
    """Refuse with ``message`` once the job waiting at ``waiter`` waits; without a message, be that job."""
    if message is None:
        wait_for_a_stop(waiter)
    _wait_until_ready(waiter)
    raise ConfigError(message)


def crash() -> None:
    raise ValueError("a bug")


def _wait_for_a_signal(path: str) -> int | None:
    """Mark ``path``.ready, then wait (at most a minute) for SIGTERM or SIGINT; its number, or None."""
    received = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, frame: received.append(number))
    Path(path + ".ready").touch()
    deadline = time.monotonic() + 60
    while not received and time.monotonic() < deadline:
        time.sleep(0.01)
    return received[0] if received else None


def wait_for_a_stop(path: str) -> None:
    """Wait for SIGTERM or SIGINT, then write its number to ``path`` and stop as training does."""
    received = _wait_for_a_signal(path)
    Path(path).write_text(str(received if received is not None else "none"))
    raise KeyboardInterrupt


def wait_then_chatter(path: str) -> None:
    """Wait for SIGTERM or SIGINT, write [its number, this process's id] to ``path`` once the parent
    has gone, then send more progress lines than a pipe holds (256 kB) and stop as training does."""
    parent = os.getppid()  # before the signal: the kernel reparents this process as it sends it, so later is too late
    received = _wait_for_a_signal(path)
    deadline = time.monotonic() + 60
    while os.getppid() == parent and time.monotonic() < deadline:  # as training finishes its epoch: the parent has gone by then
        time.sleep(0.01)
    written = Path(path + ".part")
    written.write_text(json.dumps([received, os.getpid()]))
    written.replace(path)  # whole when it appears
    for _ in range(256):
        progress.write("x" * 1000)
    raise KeyboardInterrupt


def show_progress(name: str) -> None:
    """A bar titled ``name`` and a line between its updates, as training shows them; this process's
    own output goes nowhere, so what is seen was drawn by the parent."""
    with open(os.devnull, "w") as nowhere:
        os.dup2(nowhere.fileno(), 1)
        os.dup2(nowhere.fileno(), 2)
    shown = progress.bar(10, name, "img")
    shown.update(5)
    shown.set_postfix(bound="1.00", refresh=False)
    progress.write(f"{name}: half way")
    shown.update(5)
    shown.close()


def die() -> None:
    """Be killed, as by the out-of-memory killer."""
    os.kill(os.getpid(), signal.SIGKILL)


def stop_once_waited(waiter: str, stops: bool) -> None:
    """Stop as training does on a signal sent to this process alone, once the job waiting at
    ``waiter`` waits; without ``stops``, be that job."""
    if not stops:
        wait_for_a_stop(waiter)
    _wait_until_ready(waiter)
    raise KeyboardInterrupt
