"""Fair CPU threading on a shared machine: OpenMP threads that sleep, not spin, while they wait,
when other processes want the cores.

PyTorch's CPU kernels run on an OpenMP thread pool. By default an idle OpenMP thread spins for a
while before it sleeps, which is free on an idle machine but, beside other busy processes, burns
the cores that the descheduled peers of the same pool are waiting for. Measured with the README's
main command (``vaelab compare`` on digits; benchmarks/run.py, section contention) on the 2-core
machine: with ``OMP_WAIT_POLICY=PASSIVE`` it took 77 s alone and 194 s beside two competing
PyTorch trainings (2.5x); spinning (ACTIVE) 45 s alone and 583 s beside them (13x). PASSIVE is
fair but slows the idle machine by 1.7x (small parallel regions wake sleeping threads), so it is
chosen only when another process is runnable as vaelab starts (``/proc/loadavg``): the wait
policy changes no number, so choosing it from the machine's state costs no reproducibility.

The runtime reads its environment once, when torch loads it, so :func:`configure_threads` must
run before the first ``import torch`` of the process. It changes nothing the user set.
"""

from __future__ import annotations

import os
import sys
import time

WAIT_POLICY = "PASSIVE"


def other_runnable_processes(samples: int = 3, interval: float = 0.01) -> int | None:
    """Processes other than this one runnable right now (the least of ``samples`` readings of
    /proc/loadavg's running count, so a passing blip does not count); None where unknown."""
    counts = []
    for sample in range(samples):
        try:
            with open("/proc/loadavg") as file:
                counts.append(int(file.read().split()[3].split("/")[0]))
        except (OSError, ValueError, IndexError):
            return None
        if sample + 1 < samples:
            time.sleep(interval)
    return max(0, min(counts) - 1)


def configure_threads(threads: int | None = None, busy: bool | None = None) -> bool:
    """Set the OpenMP wait policy to PASSIVE when the machine is ``busy`` (default: another process
    is runnable now, or that cannot be known), and the pool's size to ``threads`` where given (else
    the runtime's default, which already follows the process's CPU affinity mask), unless the
    environment already sets them.

    Returns False (and changes nothing) when torch is already imported: the runtime has read its
    settings then, and only ``torch.set_num_threads`` still has an effect.
    """
    if "torch" in sys.modules:
        return False
    if busy is None:
        others = other_runnable_processes()
        busy = others is None or others > 0
    if busy:
        os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    return True
