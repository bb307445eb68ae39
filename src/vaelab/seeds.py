"""``train --seeds``: one run per seed under a parent directory, trained as parallel jobs.

Seed s trains ``config`` with ``seed = s`` (initialisation, minibatch order, latent samples;
everything else, the evaluation bits included, identical) into ``PARENT/seed-<s>/`` through
:func:`vaelab.training.train`: each is a complete run that ``--resume`` continues. On a CPU the
seeds train at once, one spawned process each with its own thread count (:mod:`vaelab.jobs`), so a
seed's run is bitwise the lone run ``vaelab train --seed s --threads T``. ``PARENT/seeds.json``
records the seeds (:mod:`vaelab.evaluation.across_seeds`, which also summarises them).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from vaelab.config import ExperimentConfig
from vaelab.errors import ConfigError, RunError
from vaelab.evaluation.across_seeds import load_seeds, save_seeds, seed_run_dir
from vaelab.jobs import processes_and_threads, run_jobs
from vaelab.preflight import check_experiment
from vaelab.progress import write as progress_write
from vaelab.runio import (
    ACROSS_SEEDS_PATTERN,
    LOCK_FILE,
    SEEDS_FILE,
    check_run_directory,
    directory_contents,
    directory_lock,
    make_directory,
    refuse_foreign_contents,
    run_files,
)
from vaelab.training import train


def with_seed(config: ExperimentConfig, seed: int) -> ExperimentConfig:
    """``config`` with its ``seed`` replaced: one seed's run of a multi-seed command."""
    return dataclasses.replace(config, seed=seed)


def check_seeds_parent(parent: Path, seeds: Sequence[int], overwrite: bool) -> None:
    """Refuse ``parent`` unless it is absent, empty, or records the same ``seeds`` (``overwrite``: any seeds).

    Raises:
        RunError: one line saying why.
    """
    if not parent.exists():
        return
    if not parent.is_dir():
        raise RunError(f"{parent}: exists and is not a directory; choose another --out")
    saved = load_seeds(parent)
    if saved is None:
        refuse_foreign_contents(parent, "multi-seed directory")
    elif tuple(saved) != tuple(seeds) and not overwrite:
        raise RunError(
            f"{parent}: records seeds {', '.join(map(str, saved))} in {SEEDS_FILE}, not {', '.join(map(str, seeds))}; "
            "give the same --seeds, --overwrite to replace them, or choose another --out"
        )


def clear_other_seeds(parent: Path, seeds: Sequence[int]) -> None:
    """``--overwrite``: delete what vaelab wrote into ``parent`` beyond the runs of ``seeds`` (which
    ``train`` replaces itself): the runs of the seeds ``seeds.json`` records and ``seeds`` lacks (their
    folders too where nothing else is left in them) and the summaries over seeds; nothing else."""
    for seed in set(load_seeds(parent) or ()) - set(seeds):
        run_dir = seed_run_dir(parent, seed)
        if run_dir.is_dir():
            with directory_lock(run_dir, "train --seeds --overwrite"):
                for path in run_files(run_dir):
                    path.unlink()
            if not directory_contents(run_dir):
                (run_dir / LOCK_FILE).unlink(missing_ok=True)
                run_dir.rmdir()
    for path in parent.glob(ACROSS_SEEDS_PATTERN):  # of the old seeds' runs
        path.unlink()


def train_seeds(
    config: ExperimentConfig,
    seeds: Sequence[int],
    parent: str | Path,
    *,
    data_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    device: str = "auto",
    tensorboard: bool = False,
    jobs: int | None = None,
    threads: int | None = None,
    announce: Callable[[], None] | None = None,
) -> dict[int, Path]:
    """Train (``resume``: continue; ``overwrite``: replace) one run of ``config`` per seed in
    ``parent/seed-<s>/``; returns seed -> run directory.

    ``jobs``, ``threads``: as for ``compare`` (:func:`vaelab.jobs.processes_and_threads`; None: one
    process per seed up to the usable CPUs). ``parent`` is locked while the seeds train, and every
    seed's directory is checked before the first starts, so a refusal leaves nothing half-begun;
    ``overwrite`` also removes the old seeds' runs and summaries (:func:`clear_other_seeds`).

    Raises:
        ConfigError: the config cannot train, ``jobs`` above 1 off the CPU, or under torchrun.
        RunError: ``parent`` or a seed's directory cannot be written as asked (see
            :func:`check_seeds_parent`, :func:`vaelab.runio.check_run_directory`).
    """
    parent = Path(parent)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--seeds trains its seeds as jobs of one machine; under torchrun train one seed at a time (--seed)")
    configs = {seed: with_seed(config, seed) for seed in seeds}
    for seed_config in configs.values():
        check_experiment(seed_config)
    processes, threads = processes_and_threads(len(seeds), jobs, threads, device)
    check_seeds_parent(parent, seeds, overwrite)
    make_directory(parent, "multi-seed directory")
    with directory_lock(parent, "train --seeds"):
        check_seeds_parent(parent, seeds, overwrite)  # again, now that no one else writes
        for seed in seeds:
            check_run_directory(seed_run_dir(parent, seed), resume=resume, overwrite=overwrite)
        if overwrite:
            clear_other_seeds(parent, seeds)
        save_seeds(parent, seeds)
        if announce is not None:
            announce()
        # a partial of the importable train pickles into a spawned job
        run = functools.partial(train, data_dir=data_dir, resume=resume, overwrite=overwrite, progress=progress, device=device, tensorboard=tensorboard)
        arguments = [(configs[seed], seed_run_dir(parent, seed)) for seed in seeds]
        if processes > 1:
            progress_write(f"{len(seeds)} seeds, {processes} at once, one process of {threads} thread(s) each: {parent}/seed-<s>")
            run_jobs(run, arguments, processes, threads)
        else:
            for seed_config, run_dir in arguments:
                progress_write(f"seed {seed_config.seed}: {run_dir}")
                run(seed_config, run_dir)
    return {seed: seed_run_dir(parent, seed) for seed in seeds}
