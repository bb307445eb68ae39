"""Fair CPU threading on a shared machine: OpenMP threads that sleep, not spin, while they wait.

PyTorch's CPU kernels run on an OpenMP thread pool. By default an idle OpenMP thread spins for a
while before it sleeps (``OMP_WAIT_POLICY=ACTIVE``-like behaviour), which is free on an idle
machine but, beside other busy processes, burns the cores that the descheduled peers of the same
pool are waiting for: measured for issue 17, 5 epochs on digits took 8.5 s alone, 32.8 s beside two
other PyTorch trainings, 18.1 s with ``OMP_WAIT_POLICY=PASSIVE``, and alone PASSIVE cost nothing
measurable (benchmarks/run.py, section contention, measures the main command both ways).

The runtime reads its environment once, when torch loads it, so :func:`configure_threads` must
run before the first ``import torch`` of the process. It changes nothing the user set.
"""

from __future__ import annotations

import os
import sys

WAIT_POLICY = "PASSIVE"


def configure_threads(threads: int | None = None) -> bool:
    """Set the OpenMP wait policy to PASSIVE, and the pool's size to ``threads`` where given (else
    the runtime's default, which already follows the process's CPU affinity mask), unless the
    environment already sets them.

    Returns False (and changes nothing) when torch is already imported: the runtime has read its
    settings then, and only ``torch.set_num_threads`` still has an effect.
    """
    if "torch" in sys.modules:
        return False
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    return True
