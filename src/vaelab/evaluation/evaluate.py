"""L_k of a model on a split under the evaluation protocol, and of a saved run."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from vaelab.builders import load_run
from vaelab.config import ExperimentConfig
from vaelab.data import Dataset
from vaelab.distributed import Placement, gather
from vaelab.errors import RunError
from vaelab.estimators.bounds import evaluate_bound, mean_and_standard_error
from vaelab.evaluation.protocol import SPLIT_TAGS, evaluation_images, seeded_generator
from vaelab.models import HelmholtzMachine
from vaelab.models.backend import matmul_precision
from vaelab.preflight import check_before_training
from vaelab.runio import (
    CONFIG_FILE,
    METRICS_FILE,
    append_metrics,
    directory_lock,
    read_metrics,
)


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
    progress: bool = False,
) -> dict[str, Any]:
    """L_k and the ELBO (L_1) of ``split`` (its first ``num_images``; None: all): a metrics row with
    means and standard errors in nats. ``precision='bf16'`` multiplies in bfloat16 (see
    :func:`vaelab.models.backend.matmul_precision`); the row records it. ``progress``: a bar with
    an ETA for each pass (on the main process).

    Under torchrun each process scores every world_size-th image; the values are gathered so
    every process returns the same row.
    """
    placement = placement or Placement(next(model.parameters()).device)
    images, _ = evaluation_images(config, dataset, split)
    images = images[:num_images][placement.rank :: placement.world_size]
    started = time.perf_counter()
    generator = seeded_generator(config.seed, epoch, SPLIT_TAGS[split], k, placement.rank, device=placement.device)
    batch_size = config.train.eval_batch_size
    shown = progress and placement.is_main
    with matmul_precision(precision):
        bounds = gather(evaluate_bound(model, images, k, generator, batch_size, f"{split} L_{k}" if shown else None).to(placement.device), placement)
        elbos = gather(evaluate_bound(model, images, 1, generator, batch_size, f"{split} ELBO" if shown else None).to(placement.device), placement)
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


def evaluate_run(
    run_dir: str | Path,
    k: int,
    split: str = "test",
    data_dir: str | Path | None = None,
    device: str = "auto",
    num_images: int | None = None,
    precision: str = "fp32",
    progress: bool = False,
) -> dict[str, Any]:
    """Estimate L_k (and the ELBO) of ``split`` (its first ``num_images``; None: all) at the run's
    last checkpoint, multiplying in ``precision`` ('fp32' or 'bf16'); appends the row to its metrics.

    ``progress``: a bar with an ETA for each pass. Holds the run's lock (it appends to the
    metrics): refused in one line while another process trains or evaluates the run."""
    if not (Path(run_dir) / CONFIG_FILE).is_file():  # checked before the lock file is made: never write into a non-run
        raise RunError(f"{run_dir}: not a vaelab run directory (no {CONFIG_FILE})")
    with directory_lock(run_dir, "evaluate"):
        return _evaluate_run(run_dir, k, split, data_dir, device, num_images, precision, progress)


def _evaluate_run(run_dir, k, split, data_dir, device, num_images, precision, progress) -> dict[str, Any]:
    config, model, dataset, checkpoint = load_run(run_dir, data_dir, device)
    check_before_training(dataclasses.replace(config, train=dataclasses.replace(config.train, eval_k=k)))  # memory for k samples
    read_metrics(Path(run_dir) / METRICS_FILE)  # refuse a corrupt metrics file before the costly part, not after it
    row = {
        "epoch": checkpoint["epoch"],
        "step": checkpoint["step"],
        "algorithm": config.train.algorithm,
        **evaluate_split(model, config, dataset, split, k, checkpoint["epoch"], num_images=num_images, precision=precision, progress=progress),
        "kind": "evaluate",
    }
    append_metrics(Path(run_dir) / METRICS_FILE, row)
    return row
