"""Training runs: Adam on theta and phi, L_k evaluations, atomic checkpoints and exact resume.

One epoch is: a seeded permutation, (dynamic) binarization, minibatch steps of the chosen
objective, then, every ``eval_every`` epochs and at the last, L_k and the ELBO on the evaluation
splits, then an atomic checkpoint. Evaluation draws from its own generator seeded by
(seed, epoch, split), so it never perturbs the training stream and a resumed run replays the
uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from vaelab.builders import build_run, check_data_unchanged, dataset_of
from vaelab.config import ExperimentConfig, config_differences
from vaelab.data import Dataset, binarize
from vaelab.distributed import Placement, average_gradients, barrier, gather_objects, setup, teardown
from vaelab.errors import RunError
from vaelab.evaluation.evaluate import evaluate_split
from vaelab.evaluation.protocol import evaluation_images, seeded_generator, training_images, uses_binarization
from vaelab.models import HelmholtzMachine
from vaelab.models.backend import matmul_precision
from vaelab.objectives import check_config, objective_from_config
from vaelab.runio import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    ENVIRONMENT_FILE,
    METRICS_FILE,
    append_metrics,
    environment_info,
    keep_metrics_through_epoch,
    load_checkpoint,
    read_metrics,
    save_checkpoint,
    write_json_atomic,
)
from vaelab.tracking import TensorBoardLog, require_tensorboard


class NumericalError(RunError):
    """A loss became NaN or infinite; the last checkpoint is left as it was."""


@dataclass
class RunResult:
    run_dir: Path
    config: ExperimentConfig
    model: HelmholtzMachine
    dataset: Dataset
    metrics: list[dict[str, Any]]


def train(
    config: ExperimentConfig,
    run_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    device: str = "auto",
    tensorboard: bool = False,
) -> RunResult:
    """Train (or resume) the run of ``config`` in ``run_dir``; returns the model and all metrics.

    Under torchrun (WORLD_SIZE > 1) every process calls this; rank 0 alone writes files.
    The first SIGINT lets the current epoch finish and checkpoint, then raises KeyboardInterrupt;
    a second one interrupts at once (the previous checkpoint stays intact).
    ``tensorboard``: also log every epoch's rows and image grids under ``run_dir/tensorboard``
    (:mod:`vaelab.tracking`; needs the tensorboard package).

    Raises:
        ConfigError: the algorithm cannot train the model as configured (the registry's rules).
        RunError: the directory holds another run (without ``resume``), its config differs from
            ``config``, it cannot be written, or a loss or gradient became non-finite.
    """
    check_config(config)
    if tensorboard:
        require_tensorboard()  # before any training
    placement = setup(device)
    try:
        with _stop_requests() as stop:
            return _train(config, Path(run_dir), data_dir, resume, progress and placement.is_main, placement, stop, tensorboard)
    finally:
        teardown(placement)


def _train(config, run_dir, data_dir, resume, progress, placement, stop, tensorboard=False) -> RunResult:
    if placement.is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunError(f"{run_dir}: cannot create the run directory ({error.strerror})") from None
    dataset = dataset_of(config.data, data_dir)
    if resume:
        check_data_unchanged(run_dir, dataset)
    model, optimizer = build_run(config, dataset)
    model.to(placement.device)
    data_generator = seeded_generator(config.seed)  # minibatch order and dynamic binarization: shared by all processes
    noise_generator = seeded_generator(config.seed, placement.rank, device=placement.device)  # latent samples: one per process
    state = _start_or_resume(config, run_dir, model, optimizer, data_generator, noise_generator, placement, resume)
    epoch, step, wall_seconds = state["epoch"], state["step"], state["wall_seconds"]
    if epoch == 0 and placement.is_main:
        config.save(run_dir / CONFIG_FILE)
        write_json_atomic(run_dir / ENVIRONMENT_FILE, environment_info(dataset.files, placement))
    barrier(placement)

    objective = objective_from_config(config.train)
    train_images = training_images(config, dataset)
    log = _tensorboard_log(config, dataset, run_dir) if tensorboard and placement.is_main else None
    metrics_path = run_dir / METRICS_FILE
    parameters = list(model.parameters())
    for epoch in range(epoch + 1, config.train.epochs + 1):
        started = time.perf_counter()
        epoch_images = (
            binarize(train_images, "dynamic", data_generator)
            if config.data.binarization == "dynamic" and uses_binarization(config, dataset)
            else train_images
        )
        order = torch.randperm(epoch_images.shape[0], generator=data_generator)
        bound_sum, seen = 0.0, 0
        bar = tqdm(
            total=epoch_images.shape[0],
            desc=f"{config.train.algorithm} epoch {epoch}/{config.train.epochs}",
            unit="img",
            disable=not progress,
            leave=False,
        )
        for batch_index, global_batch in enumerate(order.split(config.train.batch_size)):
            shard = global_batch[placement.rank :: placement.world_size]  # this process's part of the minibatch
            with matmul_precision(config.train.precision):  # the forward pass; backward follows the graph's dtypes
                output = objective(model, epoch_images[shard].to(placement.device), noise_generator)
            _check_finite(output, epoch, batch_index, state)
            optimizer.zero_grad(set_to_none=True)
            _backward(output, model)
            average_gradients(parameters, placement)
            _check_finite_gradients(model, epoch, batch_index, state)
            optimizer.step()
            step += 1
            bound_sum += output.bound.sum().item()
            seen += shard.numel()
            bar.update(global_batch.numel())
            bar.set_postfix(bound=f"{bound_sum / seen:.2f}", refresh=False)
        bar.close()
        wall_seconds += time.perf_counter() - started
        base = {"epoch": epoch, "step": step, "algorithm": config.train.algorithm}
        rows = [
            {**base, "kind": "train", "split": "train", "k": None, "bound": _mean_over_processes(bound_sum, seen, placement),
             "epoch_seconds": time.perf_counter() - started, "wall_seconds": wall_seconds}
        ]
        if epoch % config.train.eval_every == 0 or epoch == config.train.epochs:
            for split in config.train.eval_splits:
                row = evaluate_split(model, config, dataset, split, config.train.eval_k, epoch, placement, progress=progress)
                wall_seconds += row["eval_seconds"]
                rows.append({**base, **row, "wall_seconds": wall_seconds})
                if progress:
                    tqdm.write(f"epoch {epoch}: {split} L_{row['k']} = {row['bound']:.3f} ± {row['bound_stderr']:.3f} nats")
        noise_states = gather_objects(noise_generator.get_state().cpu(), placement)
        if placement.is_main:
            for row in rows:
                append_metrics(metrics_path, row)
            if log is not None:
                log.write(rows, model)
            save_checkpoint(
                run_dir / CHECKPOINT_FILE,
                {
                    "epoch": epoch,
                    "step": step,
                    "wall_seconds": wall_seconds,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "data_generator": data_generator.get_state(),
                    "noise_generators": noise_states,
                    "config": config.to_dict(),
                },
            )
        barrier(placement)
        state = {"epoch": epoch}
        if _any_process(stop.requested, placement):
            raise KeyboardInterrupt
    if log is not None:
        log.close()
    return RunResult(run_dir, config, model, dataset, read_metrics(metrics_path) if placement.is_main else [])


def _tensorboard_log(config: ExperimentConfig, dataset: Dataset, run_dir: Path) -> TensorBoardLog:
    shape = (1, *dataset.image_shape) if dataset.flat else dataset.data_shape
    return TensorBoardLog(run_dir, shape, evaluation_images(config, dataset, "test")[0], config.seed)


# What a checkpoint holds (written at the end of every epoch by ``_train``).
CHECKPOINT_KEYS = frozenset({"epoch", "step", "wall_seconds", "model", "optimizer", "data_generator", "noise_generators", "config"})


def _start_or_resume(config, run_dir, model, optimizer, data_generator, noise_generator, placement, resume) -> dict[str, Any]:
    """Restore the checkpoint in ``run_dir`` (if resuming) and return epoch, step, wall seconds."""
    checkpoint_path = run_dir / CHECKPOINT_FILE
    fresh = {"epoch": 0, "step": 0, "wall_seconds": 0.0}
    if not checkpoint_path.exists():
        if placement.is_main:
            keep_metrics_through_epoch(run_dir / METRICS_FILE, 0)
        return fresh
    if not resume:
        raise RunError(f"{run_dir}: already holds a run; pass --resume to continue it, or choose another --out")
    checkpoint = load_checkpoint(checkpoint_path)
    missing = sorted(CHECKPOINT_KEYS - set(checkpoint))
    if missing:
        raise RunError(f"{checkpoint_path}: not a checkpoint this version of vaelab can resume (missing {', '.join(missing)})")
    saved = ExperimentConfig.from_dict(checkpoint["config"])
    differences = [key for key in config_differences(saved, config) if key != "train.epochs"]
    if differences:
        raise RunError(f"{run_dir}: cannot resume with a different config (differs in {', '.join(differences)})")
    if config.train.epochs < checkpoint["epoch"]:
        raise RunError(f"{run_dir}: already trained for {checkpoint['epoch']} epochs; --epochs {config.train.epochs} cannot go back")
    if len(checkpoint["noise_generators"]) != placement.world_size:
        raise RunError(
            f"{run_dir}: the checkpoint was written by {len(checkpoint['noise_generators'])} process(es); "
            f"resume it with the same number (this run has {placement.world_size})"
        )
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    data_generator.set_state(checkpoint["data_generator"])
    noise_generator.set_state(checkpoint["noise_generators"][placement.rank].to(noise_generator.device))
    if placement.is_main:
        keep_metrics_through_epoch(run_dir / METRICS_FILE, checkpoint["epoch"])
        if saved.train.epochs != config.train.epochs:
            config.save(run_dir / CONFIG_FILE)
    return {key: checkpoint[key] for key in fresh}


def _backward(output, model: HelmholtzMachine) -> None:
    """Accumulate d(-theta_surrogate)/d theta and d(-phi_surrogate)/d phi into ``.grad``.

    When one tensor serves both groups (AEVB) a single backward pass does it; otherwise each
    surrogate's gradient goes only to its own group (``inputs=``), so e.g. a phi surrogate that
    depends on theta never moves theta.
    """
    if output.theta_surrogate is output.phi_surrogate:
        (-output.theta_surrogate.mean()).backward()
        return
    (-output.theta_surrogate.mean()).backward(inputs=model.generative_parameters(), retain_graph=True)
    (-output.phi_surrogate.mean()).backward(inputs=model.recognition_parameters())


def _check_finite(output, epoch: int, batch_index: int, state: dict[str, Any]) -> None:
    for name in ("theta_surrogate", "phi_surrogate"):
        value = getattr(output, name)
        if not torch.isfinite(value).all():
            kind = "NaN" if torch.isnan(value).any() else "infinite"
            _stop_on_numerical_fault(f"the {name.replace('_', ' ')} is {kind}", epoch, batch_index, state)


def _check_finite_gradients(model: HelmholtzMachine, epoch: int, batch_index: int, state: dict[str, Any]) -> None:
    for group, parameters in (("theta", model.generative_parameters()), ("phi", model.recognition_parameters())):
        grads = [p.grad for p in parameters if p.grad is not None]
        # a NaN or inf anywhere makes its tensor's sum non-finite: one reduction per tensor, no boolean copies
        if grads and not torch.isfinite(torch.stack([g.sum() for g in grads])).all():
            _stop_on_numerical_fault(f"the {group} gradient is not finite", epoch, batch_index, state)


def _stop_on_numerical_fault(what: str, epoch: int, batch_index: int, state: dict[str, Any]) -> None:
    raise NumericalError(f"epoch {epoch}, batch {batch_index}: {what}; stopped with the checkpoint of epoch {state['epoch']} intact")


def _mean_over_processes(total: float, count: int, placement: Placement) -> float:
    totals = gather_objects((total, count), placement)
    return sum(t for t, _ in totals) / sum(n for _, n in totals)


def _any_process(flag: bool, placement: Placement) -> bool:
    return any(gather_objects(flag, placement))


class _StopRequest:
    """SIGINT handler: the first signal asks the loop to stop after the epoch's checkpoint."""

    requested = False

    def __call__(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write("interrupt: finishing this epoch and its checkpoint, then stopping (interrupt again to stop now)")


@contextlib.contextmanager
def _stop_requests():
    stop = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
