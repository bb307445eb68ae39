"""Training runs: Adam on theta and phi, L_k evaluations, atomic checkpoints and exact resume.

One epoch is: a seeded permutation, (dynamic) binarization, minibatch steps of the chosen
objective, then, every ``eval_every`` epochs and at the last, L_k and the ELBO on the evaluation
splits, then an atomic checkpoint. Evaluation draws from its own generator seeded by
(seed, epoch, split), so it never perturbs the training stream and a resumed run replays the
uninterrupted one exactly.

With ``select_on`` the model of the best bound on that split is kept in ``best.pt`` (written before
the epoch's checkpoint, whose ``selection`` entry holds the best epoch and bound and the patience
counter, so that resume is exact for it too); ``patience`` evaluations without a better bound stop
training (a ``stop`` row). The last epoch's rows end with ``selected`` rows: the evaluations of the
best epoch (the same model and draws), saying which checkpoint they are of.
"""

from __future__ import annotations

import contextlib
import copy
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from vaelab.builders import build_run, check_data_unchanged, dataset_of
from vaelab.config import ExperimentConfig, TrainConfig, config_differences
from vaelab.data import Dataset, to_unit_interval
from vaelab.distributed import (
    Placement,
    average_gradients,
    barrier,
    gather_objects,
    setup,
    teardown,
)
from vaelab.data.binarize import binarize_levels
from vaelab.data.levels import dequantize
from vaelab.errors import ConfigError, Interrupted, RunError
from vaelab.evaluation.evaluate import evaluate_split
from vaelab.evaluation.lines import bound_words
from vaelab.evaluation.protocol import (
    epoch_draw,
    evaluation_images,
    seeded_generator,
    training_images,
)
from vaelab.models import HelmholtzMachine
from vaelab.machine import flushing_subnormals
from vaelab.models.backend import matmul_precision
from vaelab.models.networks import evaluation_mode
from vaelab.objectives import kl_weight_at, objective_from_config, warming_up
from vaelab.preflight import check_experiment, check_loaded_data
from vaelab.progress import bar as progress_bar
from vaelab.progress import write as progress_write
from vaelab.runio import (
    BEST_FILE,
    CHECKPOINT_FILE,
    CHECKPOINT_KEYS,
    CONFIG_FILE,
    ENVIRONMENT_FILE,
    LOCK_FILE,
    METRICS_FILE,
    append_metrics,
    directory_contents,
    environment_info,
    keep_metrics_through_epoch,
    load_checkpoint,
    load_model_state,
    open_run_directory,
    read_metrics,
    run_files,
    save_checkpoint,
    write_json_atomic,
)
from vaelab.schedules import learning_rate_at
from vaelab.tracking import TensorBoardLog, require_tensorboard


class NumericalError(RunError):
    """A loss became NaN or infinite; the last checkpoint is left as it was."""


@dataclass(frozen=True)
class TrainingHooks:
    """Where a caller may watch or alter a run (tests inject faults here); each hook defaults to none.

    ``wrap_objective(objective) -> objective``: the objective every step calls, ``(model, x [B, D_x],
    generator, kl_weight) -> output``, wrapped (e.g. to poison or count steps). ``on_epoch_start(epoch, lr)``:
    after the epoch's learning rate is set. ``on_checkpoint(path, state)``: before each checkpoint
    file (``checkpoint.pt``, ``best.pt``) is saved (rank 0). ``on_replay(first_batch)``: a fault
    check replays its window from that batch.
    ``check_every`` and ``save_every``: steps between two fault checks and between two saves of the
    state a fault is replayed from (:class:`_Window`).
    """

    wrap_objective: Callable[[Callable], Callable] | None = None
    on_epoch_start: Callable[[int, float], None] | None = None
    on_checkpoint: Callable[[Path, dict[str, Any]], None] | None = None
    on_replay: Callable[[int], None] | None = None
    check_every: int = 50  # each check reads the device (losses, parameters, progress bar): not every step
    save_every: int = 500  # at most this many steps are replayed to name a fault


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
    overwrite: bool = False,
    progress: bool = True,
    device: str = "auto",
    tensorboard: bool = False,
    curve_ks: tuple[int, ...] = (),
    announce: Callable[[], None] | None = None,
    hooks: TrainingHooks = TrainingHooks(),
) -> RunResult:
    """Train (or resume) the run of ``config`` in ``run_dir``; returns the model and all metrics.
    The model comes back in train mode, as training left it: evaluate it inside
    :func:`vaelab.models.networks.evaluation_mode` (no dropout, no BatchNorm statistics of the images scored).

    Under torchrun (WORLD_SIZE > 1) every process calls this; rank 0 alone writes files.
    The first SIGINT or SIGTERM lets the current epoch finish and checkpoint, then raises
    :class:`~vaelab.errors.Interrupted`; a second one interrupts at once (the previous checkpoint
    stays intact). ``tensorboard``: also log every epoch's rows and image grids under
    ``run_dir/tensorboard`` (:mod:`vaelab.tracking`; needs the tensorboard package). ``progress``: a
    bar per epoch and evaluation pass, on a terminal (:mod:`vaelab.progress`); each evaluation's line
    is printed either way.

    The run computes with subnormal floats flushed to zero (:func:`vaelab.machine.flushing_subnormals`);
    the calling thread's setting is restored on return.

    ``curve_ks`` (each dividing ``eval_k``): the last epoch's test evaluation also writes each
    image's L_j for every j, from its own draws, to its per-image file
    (:func:`vaelab.evaluation.evaluate.evaluate_split`; the compare study's L_k-against-k curve).

    ``run_dir`` is locked while training (:func:`vaelab.runio.directory_lock`). A directory that
    holds a run is continued only with ``resume`` and replaced only with ``overwrite``
    (:func:`vaelab.runio.check_run_directory`); one that holds anything else is refused.

    ``announce``: called once ``config`` and ``run_dir`` are accepted, before training starts (rank 0
    only): the command line prints its plan there, after the one check of the config.

    ``hooks``: observers and wrappers of the loop (:class:`TrainingHooks`); none by default.

    Raises:
        ConfigError: the algorithm cannot train the model as configured (the registry's rules), or a
            k of ``curve_ks`` does not divide ``eval_k``.
        RunError: the directory holds another run (without ``resume`` or ``overwrite``), or
            files that are not a run, or is in use by another process; its config differs from
            ``config``; it cannot be written; or a loss or gradient became non-finite.
    """
    check_experiment(config)  # before anything is allocated or written
    if any(j < 1 or config.train.eval_k % j for j in curve_ks):
        raise ConfigError(f"every k of the curve must divide eval_k = {config.train.eval_k} (got {list(curve_ks)})")
    if tensorboard:
        require_tensorboard()  # before any training
    placement = setup(device)
    run_dir = Path(run_dir)
    existed = run_dir.exists()
    # rank 0 alone writes, so it alone checks, creates and locks the directory
    directory = open_run_directory(run_dir, "train", resume=resume, overwrite=overwrite) if placement.is_main else contextlib.nullcontext()
    undo = _undoing_a_failed_start(run_dir, existed) if placement.is_main else contextlib.nullcontext()
    try:
        # subnormals as zero: 2x faster steps on a trained model's confident logits (vaelab.models.backend)
        with _stop_requests() as stop, directory, undo, flushing_subnormals():
            if announce is not None and placement.is_main:
                announce()
            return _train(config, run_dir, data_dir, resume, progress and placement.is_main, placement, stop, tensorboard, curve_ks, hooks)
    finally:
        teardown(placement)
        if placement.is_main and not existed:
            _remove_if_left_empty(run_dir)


@contextlib.contextmanager
def _undoing_a_failed_start(run_dir: Path, existed: bool):
    """Held inside the run's lock: a failure before the first checkpoint (a refused start, a user
    network that fails) deletes the run files this command wrote, so that the same command can be
    run again without --overwrite. Files that were there before (a run killed in its first epoch,
    resumed) are kept, and nothing is deleted once a checkpoint exists."""
    before = set(run_files(run_dir)) if existed else set()
    try:
        yield
    except Exception:
        if not (run_dir / CHECKPOINT_FILE).exists():
            for path in set(run_files(run_dir)) - before:
                path.unlink(missing_ok=True)
        raise


def _remove_if_left_empty(run_dir: Path) -> None:
    """Remove the directory this command created if it holds nothing but its lock file."""
    if run_dir.is_dir() and not directory_contents(run_dir):
        (run_dir / LOCK_FILE).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty after all (another process wrote into it): keep it
            run_dir.rmdir()


def _train(config, run_dir, data_dir, resume, progress, placement, stop, tensorboard=False, curve_ks=(), hooks=TrainingHooks()) -> RunResult:
    dataset = dataset_of(config.data, data_dir)
    check_loaded_data(config, dataset)  # data by path: its splits, levels and size are known now
    if resume:
        check_data_unchanged(run_dir, dataset)
    model, optimizer = build_run(config, dataset)
    model.to(placement.device)
    data_generator = seeded_generator(config.seed)  # minibatch order and dynamic binarization: shared by all processes
    noise_generator = seeded_generator(config.seed, placement.rank, device=placement.device)  # latent samples: one per process
    state = _start_or_resume(config, run_dir, model, optimizer, data_generator, noise_generator, placement, resume)
    epoch, step, wall_seconds = state["epoch"], state["step"], state["wall_seconds"]
    if epoch == 0 and placement.is_main:
        # environment.json first: it marks the directory as a vaelab run (vaelab.runio.is_vaelab_run)
        write_json_atomic(run_dir / ENVIRONMENT_FILE, environment_info(dataset.files, placement))
        config.save(run_dir / CONFIG_FILE)
    barrier(placement)

    objective = objective_from_config(config.train)
    if hooks.wrap_objective is not None:
        objective = hooks.wrap_objective(objective)
    epoch_images = _EpochImages(training_images(config, dataset), dataset.levels, epoch_draw(config, dataset))
    log = _tensorboard_log(config, dataset, run_dir) if tensorboard and placement.is_main else None
    metrics_path = run_dir / METRICS_FILE
    parameters = list(model.parameters())
    groups = (model.generative_parameters(), model.recognition_parameters())  # theta, phi: listed once, not per step
    loop = _Loop(objective, model, optimizer, noise_generator, groups, parameters, placement, hooks, config.train)
    window = _Window(loop)
    selection = _Selection(**state["selection"]) if config.train.select_on else None
    best_rows = _rows_of_epoch(metrics_path, selection.best_epoch) if selection and selection.best_epoch and placement.is_main else []
    if selection and selection.stopped and placement.is_main:
        progress_write(f"{run_dir}: stopped early at epoch {epoch} (best {_selected_on(config)} at epoch {selection.best_epoch}); not training on")
    last_epoch = epoch if selection and selection.stopped else config.train.epochs
    for epoch in range(epoch + 1, last_epoch + 1):
        started = time.perf_counter()
        for group in optimizer.param_groups:  # the schedule is a function of the epoch: resume needs no more state
            group["lr"] = learning_rate_at(config.train, epoch)
        if hooks.on_epoch_start is not None:
            hooks.on_epoch_start(epoch, optimizer.param_groups[0]["lr"])
        order, shuffled = epoch_images.draw(data_generator)
        # the running bound stays on the device (float64, as the Python float it replaces) and is read once a window
        bound_sum, seen = torch.zeros((), dtype=torch.float64, device=placement.device), 0
        bar = progress_bar(total=shuffled.shape[0], desc=f"{config.train.algorithm} epoch {epoch}/{config.train.epochs}", unit="img", disable=not progress)
        batches = order.split(config.train.batch_size)
        losses = []
        with matmul_precision(config.train.precision):  # the forward passes; backward follows the graph's dtypes
            for batch_index, global_batch in enumerate(batches):
                if batch_index % hooks.save_every == 0:
                    window.save(batch_index)
                start = batch_index * config.train.batch_size
                images = epoch_images.batch(start, global_batch.numel(), placement)  # this process's part
                kl_weight = kl_weight_at(config.train, epoch, batch_index, len(batches))
                try:
                    output, step_losses = _step(loop, images, kl_weight)
                except (RuntimeError, ValueError):
                    # a non-finite parameter from an unchecked step can make this one fail (e.g. Bernoulli(NaN)): name that fault instead
                    _check_window(loop, window, batch_index, [], batches, epoch_images, epoch, state, failed=True)
                    raise
                losses.extend(step_losses)
                bound_sum += output.bound.sum()
                seen += images.shape[0]
                step += 1
                if (batch_index + 1) % hooks.check_every == 0 or batch_index + 1 == len(batches):
                    _check_window(loop, window, batch_index, losses, batches, epoch_images, epoch, state)
                    losses = []
                    bar.update(start + global_batch.numel() - bar.n)
                    bar.set_postfix(bound=f"{bound_sum.item() / seen:.2f}", refresh=False)
        bound_sum = bound_sum.item()
        bar.close()
        wall_seconds += time.perf_counter() - started
        base = {"epoch": epoch, "step": step, "algorithm": config.train.algorithm}
        rows = [
            {**base, "kind": "train", "split": "train", "k": None, "bound": _mean_over_processes(bound_sum, seen, placement),
             "epoch_seconds": time.perf_counter() - started, "wall_seconds": wall_seconds,
             **({"kl_weight": kl_weight} if warming_up(config.train) else {})}  # the epoch's last step's
        ]
        evaluated = epoch % config.train.eval_every == 0 or epoch == config.train.epochs
        if evaluated:
            for split in config.train.eval_splits:
                curve = curve_ks if split == "test" and epoch == config.train.epochs else ()
                row = evaluate_split(model, config, dataset, split, config.train.eval_k, epoch, placement, progress=progress, bounds_dir=run_dir, curve_ks=curve)
                wall_seconds += row["eval_seconds"]
                rows.append({**base, **row, "wall_seconds": wall_seconds})
                if placement.is_main:  # with or without bars: a log needs every evaluation as it comes
                    progress_write(f"{config.train.algorithm} epoch {epoch}: {bound_words(row)}")
        best_state = None
        if selection and evaluated:
            evaluations = [{**row, "checkpoint": "last"} for row in rows[1:]]
            rows[1:] = evaluations
            if selection.update(next(row for row in evaluations if row["split"] == config.train.select_on), config.train.patience):
                best_state, best_rows = copy.deepcopy(model.state_dict()), evaluations
            if selection.stopped:
                rows.append({**base, "kind": "stop", "reason": "patience", "patience": config.train.patience, "best_epoch": selection.best_epoch})
                if placement.is_main:
                    progress_write(f"{config.train.algorithm} epoch {epoch}: stopped early, {config.train.patience} evaluation(s) without a better "
                                   f"{_selected_on(config)} than epoch {selection.best_epoch}'s")
            if selection.stopped or epoch == config.train.epochs:
                rows += [{**row, **base, "kind": "selected", "checkpoint": "best", "checkpoint_epoch": selection.best_epoch,
                          "selected_on": _selected_on(config)} for row in best_rows]
        noise_states = gather_objects(noise_generator.get_state().cpu(), placement)
        if placement.is_main:
            for row in rows:
                append_metrics(metrics_path, row)
            if log is not None:
                with evaluation_mode(model):  # its samples and reconstructions are evaluations too
                    log.write([row for row in rows if row["kind"] in ("train", "eval")], model)  # not the selection's rows
            if best_state is not None:  # before checkpoint.pt: a kill between the two replays this epoch, rewriting it
                _save(hooks, run_dir / BEST_FILE, {"epoch": epoch, "step": step, "model": best_state, "config": config.to_dict(),
                                                   "selected_on": _selected_on(config), "bound": selection.best_bound})
            _save(
                hooks,
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
                    **({"selection": asdict(selection)} if selection else {}),
                },
            )
        barrier(placement)
        state = {"epoch": epoch}
        if _any_process(stop.requested, placement):
            raise Interrupted(stop.signum)
        if selection and selection.stopped:
            break
    if log is not None:
        log.close()
    return RunResult(run_dir, config, model, dataset, read_metrics(metrics_path) if placement.is_main else [])


@dataclass
class _Selection:
    """``select_on``'s state: the best bound so far and its epoch, the evaluations since (the
    patience counter), and whether training stopped early. Saved in every checkpoint."""

    best_epoch: int | None = None
    best_bound: float | None = None
    stale: int = 0
    stopped: bool = False

    def update(self, row: dict[str, Any], patience: int | None) -> bool:
        """Take an evaluation row of the selection split; True when its bound is the best so far
        (strictly: the earliest of equal bounds is kept)."""
        if self.best_bound is None or row["bound"] > self.best_bound:
            self.best_epoch, self.best_bound, self.stale = row["epoch"], row["bound"], 0
            return True
        self.stale += 1
        self.stopped = patience is not None and self.stale >= patience
        return False


def _selected_on(config: ExperimentConfig) -> str:
    """What the best checkpoint is the best of, e.g. 'valid L_1000'."""
    return f"{config.train.select_on} L_{config.train.eval_k}"


def _rows_of_epoch(metrics_path: Path, epoch: int) -> list[dict[str, Any]]:
    """The training evaluations of ``epoch`` in the metrics file (the best epoch's, on resume)."""
    return [row for row in read_metrics(metrics_path) if row["epoch"] == epoch and row["kind"] == "eval"]


def _save(hooks: TrainingHooks, path: Path, state: dict[str, Any]) -> None:
    """:func:`save_checkpoint`, after ``hooks.on_checkpoint`` (which may raise: a crash before the file is written)."""
    if hooks.on_checkpoint is not None:
        hooks.on_checkpoint(path, state)
    save_checkpoint(path, state)


def _tensorboard_log(config: ExperimentConfig, dataset: Dataset, run_dir: Path) -> TensorBoardLog:
    shape = (1, *dataset.image_shape) if dataset.flat else dataset.data_shape
    return TensorBoardLog(run_dir, shape, evaluation_images(config, dataset, "test")[0], config.seed)


class _EpochImages:
    """Each epoch's training images: (dynamically binarized or dequantized, then) shuffled, drawn
    into buffers allocated once for the run; each minibatch becomes what the model sees (float32
    in [0, 1]) as it is taken.

    ``images`` ``[N, D]`` as :func:`training_images` gives them (uint8 levels stay uint8, a
    quarter of float32's memory, when nothing is drawn over them); ``draw``: :func:`epoch_draw`'s.
    New ``[N, D]`` tensors every epoch (188 MB each for MNIST in float32) would be memory the kernel
    maps and zeroes page by page, and returns at their release: 150k page faults per MNIST epoch,
    0.42 s against 0.25-0.31 s with the buffers reused (2 threads). The draws are those of
    ``binarize(grey, 'dynamic', generator)`` (or :func:`dequantize`) followed by ``torch.randperm``,
    bit for bit, from the run's data generator: the same in every process, and restored on resume.
    """

    def __init__(self, images: torch.Tensor, levels: int | None, draw: str | None):
        self.images, self.levels, self.kind = images, levels, draw
        # contiguous whatever the images' strides: the uniforms fill the buffer in memory order
        self.drawn = torch.empty(images.shape, dtype=torch.float32, device=images.device) if draw else None
        self.shuffled = torch.empty(images.shape, dtype=torch.float32 if draw else images.dtype, device=images.device)

    def draw(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The epoch's order ``[N]`` and its images in that order ``[N, D]`` (each minibatch is then a slice, see :meth:`batch`)."""
        images = self.images
        if self.kind == "binarize":
            images = binarize_levels(self.images, self.levels, generator, out=self.drawn)
        elif self.kind == "dequantize":
            images = dequantize(self.images, self.levels, generator, out=self.drawn)
        order = torch.randperm(images.shape[0], generator=generator)
        return order, torch.index_select(images, 0, order, out=self.shuffled)

    def batch(self, start: int, count: int, placement: Placement) -> torch.Tensor:
        """This process's part of the epoch's images ``start .. start + count - 1`` (in :meth:`draw`'s
        order), as the model sees them, on its device: float32 ``[B, D]``."""
        rows = self.shuffled[start : start + count][placement.rank :: placement.world_size]
        return to_unit_interval(rows, self.levels).to(placement.device)  # converted here, so every device sees the same values


def _start_or_resume(config, run_dir, model, optimizer, data_generator, noise_generator, placement, resume) -> dict[str, Any]:
    """Restore the checkpoint in ``run_dir`` (if resuming) and return epoch, step, wall seconds."""
    checkpoint_path = run_dir / CHECKPOINT_FILE
    fresh = {"epoch": 0, "step": 0, "wall_seconds": 0.0, "selection": {}}
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
        if saved.train.epochs != config.train.epochs and not checkpoint.get("selection", {}).get("stopped"):  # a stopped run trains no more
            config.save(run_dir / CONFIG_FILE)
    return {key: checkpoint.get(key, value) for key, value in fresh.items()}


@dataclass(frozen=True)
class _Loop:
    """What every training step of a run uses; theta and phi (``groups``) are listed once, not per step."""

    objective: Any
    model: HelmholtzMachine
    optimizer: torch.optim.Optimizer
    noise_generator: torch.Generator
    groups: tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]
    parameters: list[torch.nn.Parameter]
    placement: Placement
    hooks: TrainingHooks
    train: TrainConfig


def _step(loop: _Loop, images: torch.Tensor, kl_weight: float, checked: tuple[int, int, dict[str, Any]] | None = None):
    """One minibatch step on ``images`` ``[B, D_x]`` with the step's KL weight (:func:`kl_weight_at`);
    returns the objective's output and the losses it differentiated (device scalars, not read here).

    ``checked=(epoch, batch_index, state)`` checks the surrogates and the gradients before the
    update and raises :class:`NumericalError` naming the first non-finite one (the replay of a window).
    """
    output = loop.objective(loop.model, images, loop.noise_generator, kl_weight=kl_weight)
    if checked:
        _check_finite(output, *checked)
    loop.optimizer.zero_grad(set_to_none=True)
    losses = _backward(output, *loop.groups)
    average_gradients(loop.parameters, loop.placement)
    if checked:
        _check_finite_gradients(loop.groups, *checked)
    loop.optimizer.step()
    return output, losses


class _Window:
    """The state at the start of a window of steps (the model's parameters and buffers, Adam's
    state, the noise generator), saved every ``save_every`` steps, so that a fault found by a check
    (every ``check_every`` steps; :class:`TrainingHooks`) can be replayed from it, checked step by step.

    Saved by copying into tensors allocated once per run: a fresh deep copy of the state dicts
    every 50 steps (its allocation, page faults and Python) cost about 0.07 ms a step of MNIST
    AEVB, 3% of the step; saved in place every 500 steps it costs nothing measurable.
    """

    def __init__(self, loop: _Loop):
        self.loop = loop
        self.first_batch = 0
        self.copies: list[torch.Tensor] = []
        self.stateful: list[torch.nn.Parameter] = []  # the parameters Adam held state for at the save

    def _live(self) -> list[torch.Tensor]:
        """The tensors a step changes, in a fixed order: the model's state, then Adam's per parameter."""
        optimizer_state = self.loop.optimizer.state
        return [*self.loop.model.state_dict().values(),
                *(value for parameter in self.stateful for value in optimizer_state[parameter].values() if isinstance(value, torch.Tensor))]

    def save(self, first_batch: int) -> None:
        self.first_batch = first_batch
        self.stateful = [parameter for parameter in self.loop.parameters if self.loop.optimizer.state.get(parameter)]
        live = self._live()
        if [saved.shape for saved in self.copies] != [tensor.shape for tensor in live]:  # the run's first window, or Adam's first step
            self.copies = [tensor.detach().clone() for tensor in live]
        else:
            for saved, tensor in zip(self.copies, live):
                saved.copy_(tensor.detach())
        self.noise = self.loop.noise_generator.get_state()

    def restore(self) -> None:
        optimizer_state = self.loop.optimizer.state
        kept = {id(parameter) for parameter in self.stateful}
        for parameter in [parameter for parameter in optimizer_state if id(parameter) not in kept]:
            del optimizer_state[parameter]  # created after the save: Adam creates it again at its next step
        with torch.no_grad():
            for tensor, saved in zip(self._live(), self.copies):
                tensor.copy_(saved)
        self.loop.noise_generator.set_state(self.noise)


def _check_window(loop, window, batch_index, losses, batches, epoch_images, epoch, state, failed=False) -> None:
    """Raise :class:`NumericalError` if a step since the last check (up to ``batch_index``; their
    ``losses``) met a non-finite loss or gradient, naming the first such step and quantity exactly
    as a check after every step would.

    Two reads cover every step since the last check: the losses (a non-finite surrogate makes its
    mean non-finite) and the parameters (Adam carries a non-finite gradient into its moments and so
    into the parameter, where it stays: m / (sqrt(v) + eps) is NaN for m, v = +-inf or NaN, and
    NaN is absorbing). A fault found is named by replaying the steps from the last save
    (``window.first_batch``, at most ``save_every`` steps back) with the per-step checks.
    ``failed``: step ``batch_index`` raised; if the parameters are not finite and the replay names
    no fault before that step, the caller re-raises its error.
    """
    suspect = not _all_finite([*losses, *(p.detach() for p in loop.parameters)])
    if loop.placement.distributed:
        suspect = _any_process(suspect, loop.placement)  # every process replays, so the all-reduces pair up
    if not suspect:
        return
    if loop.hooks.on_replay is not None:
        loop.hooks.on_replay(window.first_batch)
    window.restore()
    size = batches[0].numel()
    for index in range(window.first_batch, batch_index + 1):
        images = epoch_images.batch(index * size, batches[index].numel(), loop.placement)
        _step(loop, images, kl_weight_at(loop.train, epoch, index, len(batches)), checked=(epoch, index, state))
    if not failed:
        _stop_on_numerical_fault(
            f"a loss or parameter was not finite after batch {batch_index}, and a replay of batches "
            f"{window.first_batch}-{batch_index} checked step by step did not reproduce it",
            epoch, window.first_batch, state,
        )


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    """True when no tensor holds a NaN or inf: one reduction per tensor, one read of the device.

    A NaN or inf anywhere makes its tensor's sum non-finite (no boolean copies of the parameters).
    """
    return bool(torch.isfinite(torch.stack([t.sum() for t in tensors])).all()) if tensors else True


def _refuse_a_different_config(saved: ExperimentConfig, config: ExperimentConfig, run_dir: Path) -> None:
    differences = [key for key in config_differences(saved, config) if key != "train.epochs"]
    if differences:
        raise RunError(f"{run_dir}: cannot resume with a different config (differs in {', '.join(differences)})")


def _backward(output, theta: list[torch.nn.Parameter], phi: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    """Accumulate d(-theta_surrogate)/d theta and d(-phi_surrogate)/d phi into ``.grad``; returns
    the losses differentiated (device scalars; one is non-finite when a surrogate is).

    When one tensor serves both groups (AEVB) a single backward pass does it; otherwise each
    surrogate's gradient goes only to its own group (``inputs=``), so e.g. a phi surrogate that
    depends on theta never moves theta.
    """
    if output.theta_surrogate is output.phi_surrogate:
        loss = -output.theta_surrogate.mean()
        loss.backward()
        return [loss.detach()]
    theta_loss, phi_loss = -output.theta_surrogate.mean(), -output.phi_surrogate.mean()
    theta_loss.backward(inputs=theta, retain_graph=True)
    phi_loss.backward(inputs=phi)
    return [theta_loss.detach(), phi_loss.detach()]


def _check_finite(output, epoch: int, batch_index: int, state: dict[str, Any]) -> None:
    for name in ("theta_surrogate", "phi_surrogate"):
        value = getattr(output, name)
        if not torch.isfinite(value).all():
            kind = "NaN" if torch.isnan(value).any() else "infinite"
            _stop_on_numerical_fault(f"the {name.replace('_', ' ')} is {kind}", epoch, batch_index, state)


def _check_finite_gradients(groups, epoch: int, batch_index: int, state: dict[str, Any]) -> None:
    for group, parameters in zip(("theta", "phi"), groups):
        grads = [p.grad for p in parameters if p.grad is not None]
        # a NaN or inf anywhere makes its tensor's sum non-finite: one reduction per tensor, no boolean copies
        if grads and not _all_finite(grads):
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
        progress_write(f"{signal.Signals(signum).name}: finishing this epoch and its checkpoint, then stopping (interrupt again to stop now)")


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
