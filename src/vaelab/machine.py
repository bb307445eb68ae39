"""What this machine offers a computation, asked of the machine itself: the memory available to a
new allocation, and whether this thread computes with subnormal floats as zero.

The bottom layer: the data readers (declared sizes against memory), the preflight checks, the run
files (environment.json records the subnormal setting), the jobs and the CLI all ask here.
:func:`flushing_subnormals` keeps the kernels off the CPU's slow path for subnormal floats, which
a trained decoder's confident logits otherwise feed them (2x on an AEVB step on an Intel CPU).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@contextlib.contextmanager
def flushing_subnormals() -> Iterator[None]:
    """Within the block, the CPU treats subnormal floats (below 1.2e-38 in fp32) as zero:
    flush-to-zero and denormals-are-zero (``torch.set_flush_denormal(True)``) for this thread and
    the threads it starts meanwhile, PyTorch's intra-op pool among them when it starts then (as
    in a fresh ``vaelab`` process). This thread's previous setting is restored on exit, because
    the setting also governs Python's own float arithmetic.

    A trained decoder's confident logits put subnormals into softplus, sigmoid and the gradients
    that the output layer's matmuls then multiply, and x86 CPUs compute with them on a slow path:
    on an Intel AVX-512 CPU an AEVB step of the trained MNIST study model took 8.1-10.1 ms with
    subnormals and 4.3-4.6 ms without (wake-sleep 9.1-11.6 and 7.0-8.1 ms; batch 100, 2 threads).
    Values that small are below the resolution of every sum they enter (a log-likelihood of ~100
    nats has fp32 rounding of ~1e-5), so no reported number moves beyond rounding; the bits of a
    run do change, which is why its environment.json records the setting. vaelab's commands and
    :func:`vaelab.training.train` run inside this block.
    """
    import torch  # not at import: the CLI asks for memory before torch loads

    previous = subnormals_flushed()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(previous)


def subnormals_flushed() -> bool:
    """Whether this thread computes with subnormal floats as zero (a product that would be subnormal is 0)."""
    import torch

    tiny = torch.tensor([2.0**-125])
    return bool((tiny * 2.0**-10)[0] == 0)
