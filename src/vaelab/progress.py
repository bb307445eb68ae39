"""Progress bars with an ETA for the long steps (training epochs, evaluation passes, bound curves,
quadrature), and the lines printed between them.

A step that walks a split in batches iterates :func:`image_batches`; given a description it shows
a tqdm bar counting images, with their rate and the time left, on stderr, and removes it when done.
Every bar is made by :func:`bar` and every line between bars printed by :func:`write`. Bars are
drawn on a terminal only: where stderr is not one (a log file, a pipe, a cluster's output) they are
left out, while the lines are printed all the same, as they come. In a job
process of :mod:`vaelab.jobs` both are sent to the parent (:func:`send_to`), which draws the bars
of all its jobs and their lines on one terminal (:class:`BarServer`); one process drawing them all
is what keeps the lines apart.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import torch
from tqdm import tqdm

_parent: tuple[Any, int] | None = None  # (the queue to the process that draws, this job's number), in a job process


def send_to(queue: Any, job: int) -> None:
    """From now on, send this process's bars and lines to ``queue`` as job ``job`` (:class:`BarServer`)."""
    global _parent
    _parent = (queue, job)


def bar(total: int, desc: str | None, unit: str, disable: bool = False) -> Any:
    """A bar of ``total`` ``unit``s titled ``desc``, removed when closed; drawn here or by the parent,
    on a terminal only (:func:`_terminal_bar`)."""
    if _parent is None or disable:
        return _terminal_bar(total, desc, unit, disable)
    return _SentBar(*_parent, total, desc, unit)


def stderr_is_a_terminal() -> bool:
    """Whether bars are drawn: stderr is a terminal (not a log file or a pipe)."""
    return sys.stderr.isatty()


def _terminal_bar(total: int, desc: str | None, unit: str, disable: bool = False) -> tqdm:
    # no bar where stderr is no terminal: a log would hold every redraw of it
    return tqdm(total=total, desc=desc, unit=unit, disable=disable or not stderr_is_a_terminal(), leave=False)


def write(message: str) -> None:
    """Print ``message`` on its own line on stdout, above the bars, at once (a log piped to a file shows it then)."""
    if _parent is None:
        tqdm.write(message, file=sys.stdout)
        sys.stdout.flush()
    else:
        queue, job = _parent
        queue.put(("write", job, message))


def image_batches(images: torch.Tensor, batch_size: int, description: str | None = None) -> Iterator[torch.Tensor]:
    """``images.split(batch_size)``, with a progress bar titled ``description`` (None: no bar)."""
    shown = bar(images.shape[0], description, "img", disable=description is None)
    try:
        for batch in images.split(batch_size):
            yield batch
            shown.update(batch.shape[0])
    finally:
        shown.close()


class _SentBar:
    """The part of tqdm's interface vaelab uses, sent to the process that draws."""

    def __init__(self, queue: Any, job: int, total: int, desc: str | None, unit: str):
        self.queue, self.job, self.n = queue, job, 0
        queue.put(("open", job, (total, desc, unit)))

    def update(self, count: int) -> None:
        self.n += count
        self.queue.put(("update", self.job, count))

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.queue.put(("postfix", self.job, values))

    def close(self) -> None:
        self.queue.put(("close", self.job, None))


class BarServer:
    """Draws the bars and lines that job processes send (:func:`send_to`), one bar per job at a time,
    from a thread of this process, until :meth:`stop`."""

    def __init__(self, queue: Any):
        self.queue = queue
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        bars: dict[int, tqdm] = {}
        for kind, job, value in iter(self.queue.get, None):
            if kind == "open":
                total, desc, unit = value
                bars[job] = _terminal_bar(total, desc, unit)
            elif kind == "write":
                write(value)
            elif job in bars:
                if kind == "update":
                    bars[job].update(value)
                elif kind == "postfix":
                    bars[job].set_postfix(**value)
                else:
                    bars.pop(job).close()
        for shown in bars.values():  # a job that ended without closing its bar
            shown.close()

    def stop(self, timeout: float = 10) -> None:
        """Draw what was sent, then end the thread (waiting at most ``timeout`` seconds: a job
        killed while it held the queue's lock would otherwise keep the end from arriving)."""
        self.queue.put(None)
        self.thread.join(timeout)
