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

import numpy as np
import torch
from tqdm import tqdm

from vaelab.estimators.bounds import evaluate_bound, mean_and_standard_error
from vaelab.config import ExperimentConfig, config_differences
from vaelab.data import Dataset, binarize, load_dataset
from vaelab.distributed import Placement, average_gradients, barrier, gather, gather_objects, setup, teardown
from vaelab.errors import ConfigError, Interrupted, RunError
from vaelab.models import BernoulliLayer, HelmholtzMachine, VampPrior, build_model
from vaelab.models.backend import matmul_precision
from vaelab.objectives import objective_from_config
from vaelab.preflight import check_before_training
from vaelab.runio import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    ENVIRONMENT_FILE,
    METRICS_FILE,
    append_metrics,
    environment_info,
    keep_metrics_through_epoch,
    load_checkpoint,
    load_model_state,
    open_run_directory,
    read_metrics,
    save_checkpoint,
    write_json_atomic,
)

SPLIT_TAGS = {"train": 0, "valid": 1, "test": 2}


class NumericalError(RunError):
    """A loss became NaN or infinite; the last checkpoint is left as it was."""


@dataclass
class RunResult:
    run_dir: Path
    config: ExperimentConfig
    model: HelmholtzMachine
    dataset: Dataset
    metrics: list[dict[str, Any]]


def seeded_generator(*entropy: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded from a tuple of integers (e.g. seed, epoch, split tag)."""
    seed = int(np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator(device).manual_seed(seed)


def uses_binarization(config: ExperimentConfig, dataset: Dataset) -> bool:
    """True when grey pixels are turned into Bernoulli targets (Bernoulli likelihood, grey data)."""
    likelihood = dataset.likelihood if config.model.likelihood == "auto" else config.model.likelihood
    return likelihood == "bernoulli" and not dataset.is_binary


def evaluation_images(config: ExperimentConfig, dataset: Dataset, split: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The images ``[N, D]`` (and labels ``[N]`` or None) on which L_k of ``split`` is measured.

    Grey data under a Bernoulli likelihood is binarized once with ``binarization_seed``
    (``threshold`` and ``none`` keep their own fixed transform), so every run and every algorithm
    is measured on the same bits. The train split is subsampled to ``eval_train_size`` images.
    """
    if split not in dataset.splits:
        raise RunError(f"dataset {dataset.name} has no '{split}' split (it has {', '.join(dataset.splits)})")
    images, labels = dataset.splits[split].images, dataset.splits[split].labels
    if uses_binarization(config, dataset):
        mode = "static" if config.data.binarization == "dynamic" else config.data.binarization
        images = binarize(images, mode, seeded_generator(config.data.binarization_seed, SPLIT_TAGS[split]))
    subset = config.train.eval_train_size
    if split == "train" and subset is not None and subset < images.shape[0]:
        keep = torch.randperm(images.shape[0], generator=seeded_generator(config.data.binarization_seed, 99))[:subset]
        images, labels = images[keep], None if labels is None else labels[keep]
    return images, labels


def evaluate_split(
    model: HelmholtzMachine,
    config: ExperimentConfig,
    dataset: Dataset,
    split: str,
    k: int,
    epoch: int,
    placement: Placement | None = None,
    num_images: int | None = None,
    precision: str = "fp32",
) -> dict[str, Any]:
    """L_k and the ELBO (L_1) of ``split`` (its first ``num_images``; None: all): a metrics row with
    means and standard errors in nats. ``precision='bf16'`` multiplies in bfloat16 (see
    :func:`vaelab.models.backend.matmul_precision`); the row records it.

    Under torchrun each process scores every world_size-th image; the values are gathered so
    every process returns the same row.
    """
    placement = placement or Placement(next(model.parameters()).device)
    images, _ = evaluation_images(config, dataset, split)
    images = images[:num_images][placement.rank :: placement.world_size]
    started = time.perf_counter()
    generator = seeded_generator(config.seed, epoch, SPLIT_TAGS[split], k, placement.rank, device=placement.device)
    batch_size = config.train.eval_batch_size
    with matmul_precision(precision):
        bounds = gather(evaluate_bound(model, images, k, generator, batch_size).to(placement.device), placement)
        elbos = gather(evaluate_bound(model, images, 1, generator, batch_size).to(placement.device), placement)
    bound, bound_stderr = mean_and_standard_error(bounds.cpu())
    elbo, elbo_stderr = mean_and_standard_error(elbos.cpu())
    return {
        "kind": "eval",
        "split": split,
        "k": k,
        "bound": bound,
        "bound_stderr": bound_stderr,
        "elbo": elbo,
        "elbo_stderr": elbo_stderr,
        "num_images": bounds.numel(),
        "eval_seconds": time.perf_counter() - started,
        **({} if precision == "fp32" else {"precision": precision}),
    }


def initial_model(config: ExperimentConfig, dataset: Dataset) -> HelmholtzMachine:
    """The model of ``config``, initialised from ``config.seed`` (output biases and pseudo-inputs from the data)."""
    torch.manual_seed(config.seed)  # nn.Linear initialisers draw from the global RNG
    model = build_model(config.model, dataset.data_dim, dataset.likelihood)
    train_images = dataset.splits["train"].images
    if isinstance(model.generative, BernoulliLayer):
        model.generative.init_output_bias(train_images.mean(0))
    if isinstance(model.prior, VampPrior):  # pseudo-inputs start at random training images
        model.prior.init_pseudo_inputs(train_images[torch.randint(len(train_images), (config.model.prior_size,))])
    return model


def build_run(config: ExperimentConfig, dataset: Dataset) -> tuple[HelmholtzMachine, torch.optim.Adam]:
    """The initial model and Adam with theta and phi as separate groups.

    Adam's fused kernel (one pass over each parameter instead of about ten) is used where this
    PyTorch has it for the parameters' device; it is Adam all the same.
    """
    model = initial_model(config, dataset)
    groups = [
        {"params": model.generative_parameters(), "name": "theta"},
        {"params": model.recognition_parameters(), "name": "phi"},
    ]
    try:
        optimizer = torch.optim.Adam(groups, lr=config.train.learning_rate, fused=True)
    except RuntimeError:  # PyTorch < 2.4 fuses Adam on CUDA only
        optimizer = torch.optim.Adam(groups, lr=config.train.learning_rate)
    return model, optimizer


def train(
    config: ExperimentConfig,
    run_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    device: str = "auto",
) -> RunResult:
    """Train (or resume) the run of ``config`` in ``run_dir``; returns the model and all metrics.

    Under torchrun (WORLD_SIZE > 1) every process calls this; rank 0 alone writes files.
    The first SIGINT or SIGTERM lets the current epoch finish and checkpoint, then raises
    :class:`~vaelab.errors.Interrupted`; a second one interrupts at once (the previous checkpoint
    stays intact).

    ``run_dir`` is locked while training (:func:`vaelab.runio.directory_lock`). A directory that
    holds a run is continued only with ``resume`` and replaced only with ``overwrite``
    (:func:`vaelab.runio.check_run_directory`); one that holds anything else is refused.

    Raises:
        RunError: the directory holds another run (without ``resume`` or ``overwrite``), or
            files that are not a run, or is in use by another process; its config differs from
            ``config``; it cannot be written; or a loss or gradient became non-finite.
    """
    check_before_training(config)  # before anything is allocated or written
    placement = setup(device)
    run_dir = Path(run_dir)
    # rank 0 alone writes, so it alone checks, creates and locks the directory
    directory = open_run_directory(run_dir, "train", resume=resume, overwrite=overwrite) if placement.is_main else contextlib.nullcontext()
    try:
        with _stop_requests() as stop, directory:
            return _train(config, run_dir, data_dir, resume, progress and placement.is_main, placement, stop)
    finally:
        teardown(placement)


def _train(config, run_dir, data_dir, resume, progress, placement, stop) -> RunResult:
    if placement.is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunError(f"{run_dir}: cannot create the run directory ({error.strerror})") from None
    dataset = load_dataset(config.data.dataset, data_dir)
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
    train_images = _training_images(config, dataset)
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
                row = evaluate_split(model, config, dataset, split, config.train.eval_k, epoch, placement)
                wall_seconds += row["eval_seconds"]
                rows.append({**base, **row, "wall_seconds": wall_seconds})
                if progress:
                    tqdm.write(f"epoch {epoch}: {split} L_{row['k']} = {row['bound']:.3f} ± {row['bound_stderr']:.3f} nats")
        noise_states = gather_objects(noise_generator.get_state().cpu(), placement)
        if placement.is_main:
            for row in rows:
                append_metrics(metrics_path, row)
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
            raise Interrupted(stop.signum)
    return RunResult(run_dir, config, model, dataset, read_metrics(metrics_path) if placement.is_main else [])


def _training_images(config: ExperimentConfig, dataset: Dataset) -> torch.Tensor:
    """The training split as the objective sees it before any per-epoch (dynamic) binarization."""
    images = dataset.splits["train"].images
    if uses_binarization(config, dataset) and config.data.binarization != "dynamic":
        images = binarize(images, config.data.binarization, seeded_generator(config.data.binarization_seed, SPLIT_TAGS["train"]))
    return images


# What a checkpoint holds (written at the end of every epoch by ``_train``).
CHECKPOINT_KEYS = frozenset({"epoch", "step", "wall_seconds", "model", "optimizer", "data_generator", "noise_generators", "config"})


def _start_or_resume(config, run_dir, model, optimizer, data_generator, noise_generator, placement, resume) -> dict[str, Any]:
    """Restore the checkpoint in ``run_dir`` (if resuming) and return epoch, step, wall seconds."""
    checkpoint_path = run_dir / CHECKPOINT_FILE
    fresh = {"epoch": 0, "step": 0, "wall_seconds": 0.0}
    if not checkpoint_path.exists():
        if resume and (run_dir / CONFIG_FILE).exists():  # killed in its first epoch: restart it, with the same config only
            _refuse_a_different_config(ExperimentConfig.load(run_dir / CONFIG_FILE), config, run_dir)
        if placement.is_main:
            keep_metrics_through_epoch(run_dir / METRICS_FILE, 0)
        return fresh
    if not resume:
        raise RunError(f"{run_dir}: already holds a run; pass --resume to continue it, or choose another --out")
    checkpoint = load_checkpoint(checkpoint_path, CHECKPOINT_KEYS)
    try:
        saved = ExperimentConfig.from_dict(checkpoint["config"])
    except ConfigError as error:
        raise RunError(f"{checkpoint_path}: its embedded config is invalid ({error})") from None
    _refuse_a_different_config(saved, config, run_dir)
    if config.train.epochs < checkpoint["epoch"]:
        raise RunError(f"{run_dir}: already trained for {checkpoint['epoch']} epochs; --epochs {config.train.epochs} cannot go back")
    if len(checkpoint["noise_generators"]) != placement.world_size:
        raise RunError(
            f"{run_dir}: the checkpoint was written by {len(checkpoint['noise_generators'])} process(es); "
            f"resume it with the same number (this run has {placement.world_size})"
        )
    load_model_state(model, checkpoint["model"], checkpoint_path)
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
        data_generator.set_state(checkpoint["data_generator"])
        noise_generator.set_state(checkpoint["noise_generators"][placement.rank].to(noise_generator.device))
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:
        raise RunError(f"{checkpoint_path}: cannot restore its optimizer or random state ({type(error).__name__})") from None
    if placement.is_main:
        keep_metrics_through_epoch(run_dir / METRICS_FILE, checkpoint["epoch"])
        if saved.train.epochs != config.train.epochs:
            config.save(run_dir / CONFIG_FILE)
    return {key: checkpoint[key] for key in fresh}


def _refuse_a_different_config(saved: ExperimentConfig, config: ExperimentConfig, run_dir: Path) -> None:
    differences = [key for key in config_differences(saved, config) if key != "train.epochs"]
    if differences:
        raise RunError(f"{run_dir}: cannot resume with a different config (differs in {', '.join(differences)})")


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
    """SIGINT and SIGTERM handler: the first signal asks the loop to stop after the epoch's
    checkpoint; a second one stops at once. SIGTERM is what Slurm and Kubernetes send before a
    kill, so it gets the same safe stop (exit 143 from the CLI)."""

    requested = False
    signum = signal.SIGINT

    def __call__(self, signum, frame) -> None:
        if self.requested:
            raise Interrupted(signum)
        self.requested, self.signum = True, signum
        tqdm.write(f"{signal.Signals(signum).name}: finishing this epoch and its checkpoint, then stopping (interrupt again to stop now)")


@contextlib.contextmanager
def _stop_requests():
    stop = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
