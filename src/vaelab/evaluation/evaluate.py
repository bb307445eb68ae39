"""Loading a finished (or interrupted) run and estimating its bound after training."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from vaelab.config import ExperimentConfig
from vaelab.data import Dataset, load_dataset
from vaelab.distributed import resolve_device
from vaelab.errors import RunError
from vaelab.models import HelmholtzMachine
from vaelab.preflight import check_before_training
from vaelab.runio import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, append_metrics, directory_lock, load_checkpoint, load_model_state, read_metrics
from vaelab.training import evaluate_split, initial_model


def load_run(
    run_dir: str | Path, data_dir: str | Path | None = None, device: str = "cpu"
) -> tuple[ExperimentConfig, HelmholtzMachine, Dataset, dict[str, Any]]:
    """The config, the model at its last checkpoint (on ``device``), the dataset and the checkpoint of ``run_dir``.

    Takes no lock: the files it reads are replaced atomically, so it reads a consistent snapshot
    even while the run trains.

    Raises:
        RunError: not a run; a config or checkpoint that is unreadable, of another shape, or
            whose model does not fit the config; a parameter holding NaN or infinity (refused
            before any evaluation, naming the tensor).
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).exists():
        raise RunError(f"{run_dir}: not a vaelab run directory (no {CONFIG_FILE})")
    config = ExperimentConfig.load(run_dir / CONFIG_FILE)
    checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE)
    dataset = load_dataset(config.data.dataset, data_dir)
    model = initial_model(config, dataset)
    load_model_state(model, checkpoint["model"], run_dir / CHECKPOINT_FILE)
    model.to(resolve_device(device))
    model.eval()
    return config, model, dataset, checkpoint


def evaluate_run(
    run_dir: str | Path,
    k: int,
    split: str = "test",
    data_dir: str | Path | None = None,
    device: str = "auto",
    num_images: int | None = None,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Estimate L_k (and the ELBO) of ``split`` (its first ``num_images``; None: all) at the run's
    last checkpoint, multiplying in ``precision`` ('fp32' or 'bf16'); appends the row to its metrics.

    Holds the run's lock (it appends to the metrics): refused in one line while another process
    trains or evaluates the run."""
    if not (Path(run_dir) / CONFIG_FILE).is_file():  # checked before the lock file is made: never write into a non-run
        raise RunError(f"{run_dir}: not a vaelab run directory (no {CONFIG_FILE})")
    with directory_lock(run_dir, "evaluate"):
        return _evaluate_run(run_dir, k, split, data_dir, device, num_images, precision)


def _evaluate_run(run_dir, k, split, data_dir, device, num_images, precision) -> dict[str, Any]:
    config, model, dataset, checkpoint = load_run(run_dir, data_dir, device)
    check_before_training(dataclasses.replace(config, train=dataclasses.replace(config.train, eval_k=k)))  # memory for k samples
    read_metrics(Path(run_dir) / METRICS_FILE)  # refuse a corrupt metrics file before the costly part, not after it
    row = {
        "epoch": checkpoint["epoch"],
        "step": checkpoint["step"],
        "algorithm": config.train.algorithm,
        **evaluate_split(model, config, dataset, split, k, checkpoint["epoch"], num_images=num_images, precision=precision),
        "kind": "evaluate",
    }
    append_metrics(Path(run_dir) / METRICS_FILE, row)
    return row
