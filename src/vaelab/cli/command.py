"""What a command is (:class:`Command`), and what running the commands shares: the torchrun rank
that speaks, the thread count, the training plan and the bf16 warning."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vaelab.config import ExperimentConfig
from vaelab.errors import ConfigError


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line help, description, arguments, what runs it (parse ->
    call the library -> print; returns the exit status), and what to tell the user after an
    interrupt (only ``train`` has --resume). Built-in commands live in :mod:`vaelab.cli`, each
    study's in its ``command`` module; :func:`vaelab.cli.register_command` adds one at run time."""

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    after_interrupt: str  # what an interrupted run left, and how to go on


def main_process() -> bool:
    """False in a torchrun process other than rank 0 (which alone announces and reports)."""
    return os.environ.get("RANK", "0") == "0"


MAX_THREADS_PER_CORE = 8  # beyond this, threads only cost memory (a stack each) and switching


def set_threads(threads: int) -> None:
    """``torch.set_num_threads``, after refusing counts no machine could use (``--threads 1000000``
    would reserve a stack per thread and end in the allocator's traceback)."""
    import torch

    cores = os.cpu_count() or 1
    if threads > MAX_THREADS_PER_CORE * cores:
        raise ConfigError(f"--threads {threads} is more than {MAX_THREADS_PER_CORE} per core of this machine's {cores}")
    torch.set_num_threads(threads)


def warn_if_bf16_is_slow_here(precision: str, device: str) -> None:
    """Say on stderr when ``precision`` is bf16 on a CPU where oneDNN has no bfloat16 kernels (no
    AVX-512): the products then run several times slower than in fp32 (8.5x for an AEVB training
    epoch on an AVX2 CPU, benchmarks/run.py). A warning, not an error: the numbers are valid."""
    if precision != "bf16" or not main_process():
        return
    import torch

    from vaelab.models.backend import ONEDNN_LINEAR_BF16

    if (device == "cpu" or (device == "auto" and not torch.cuda.is_available())) and not ONEDNN_LINEAR_BF16:
        print(
            f"vaelab: warning: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no bfloat16 kernels: --precision bf16 "
            "runs several times slower than fp32 here (8.5x in a training benchmark on an AVX2 CPU)",
            file=sys.stderr,
        )


def plan(config: ExperimentConfig, algorithms: Sequence[str], out: Path) -> str:
    """One line saying what a training command will do before it starts: algorithms, data,
    epochs, evaluations and where it writes."""
    train = config.train
    evaluations = len({*range(train.eval_every, train.epochs + 1, train.eval_every), train.epochs})
    return (
        f"{' and '.join(algorithms)} on {config.data.dataset}: {train.epochs} epochs of batch {train.batch_size}; "
        f"L_{train.eval_k} on {', '.join(train.eval_splits)} at {evaluations} epoch(s); writing {out}"
    )


def announcer(args: argparse.Namespace, config: ExperimentConfig, algorithms: Sequence[str]) -> Callable[[], None]:
    """What a training command says once the library has accepted its config and directory (it
    calls this, on rank 0, before the first epoch): the bf16 warning, and the plan, in a log too
    (--no-progress hides the bars alone)."""

    def announce() -> None:
        warn_if_bf16_is_slow_here(config.train.precision, args.device)
        print(plan(config, algorithms, args.out), flush=True)

    return announce
