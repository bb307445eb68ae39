"""How far L_k is from the truth: log p(x) by quadrature for a trained run with a 2-D latent.

For each image of a split, log p(x) comes from :func:`vaelab.exact.quadrature.quadrature_log_marginal`
and L_k for k in ``EXACT_KS`` from one set of max(k) importance samples (block estimates,
:func:`vaelab.estimators.bounds.bound_curve`). The gap log p(x) - L_k >= 0 in expectation (the homework's 1.4);
its mean and standard error over the images are written to ``exact-<split>.json`` in the run, and
every image's log p(x) and L_k to a per-image file (:mod:`vaelab.evaluation.per_image`; ``log_px``,
as AIS's file names it, so that the two pair up image by image, and ``bound_k<k>``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from vaelab.builders import load_run
from vaelab.errors import RunError
from vaelab.estimators.bounds import bound_curve, mean_and_standard_error, plus_minus
from vaelab.evaluation.evaluate import checkpoint_fields
from vaelab.evaluation.per_image import bounds_file_name, save_per_image
from vaelab.evaluation.protocol import SPLIT_TAGS, evaluation_images, seeded_generator
from vaelab.exact.quadrature import (
    LATENT_DIM,
    QuadratureSettings,
    quadrature_log_marginal,
)
from vaelab.runio import CONFIG_FILE, directory_lock, write_json_atomic

EXACT_KS = (1, 10, 100, 1000, 5000)  # each divides the largest, so one set of 5000 samples serves all
NUM_LARGEST_GAPS = 10  # images listed with their gap at the largest k: a few can dominate the mean


def exact_file(run_dir: str | Path, split: str) -> Path:
    return Path(run_dir) / f"exact-{split}.json"


def load_2d_run(run_dir: str | Path, data_dir: str | Path | None = None, device: str = "cpu", trust_code: bool = False, checkpoint: str | None = None):
    """:func:`vaelab.builders.load_run` (at ``checkpoint``: 'best', 'last', None for the run's selected
    one) for a run whose latent is 2-D.

    Raises:
        RunError: the run's latent is not 2-D (quadrature would need a grid in more dimensions).
    """
    config, model, dataset, state = load_run(run_dir, data_dir, device, trust_code, checkpoint)
    if config.model.latent_dims != (LATENT_DIM,) or config.model.latent != "gaussian":
        raise RunError(
            f"{run_dir}: exact log p(x) needs a 2-D latent in one Gaussian layer "
            f"(this run's latent_dim is {config.model.latent_dim}, its latents {config.model.latent})"
        )
    return config, model, dataset, state


def evaluate_exact(
    run_dir: str | Path,
    split: str = "test",
    data_dir: str | Path | None = None,
    device: str = "cpu",
    settings: QuadratureSettings = QuadratureSettings(),
    num_images: int | None = None,
    progress: bool = False,
    trust_code: bool = False,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """log p(x), L_k and log p(x) - L_k of ``split`` (its first ``num_images``; None: all) at the
    run's ``checkpoint`` ('best', 'last'; None: best where the run was trained with ``select_on``,
    else last; the result says which, :func:`vaelab.evaluation.evaluate.checkpoint_fields`), in
    nats; also written as JSON, and per image to the file the result names in ``bounds_file``.
    ``progress``: a bar with an ETA for each pass.

    Holds the run's lock (it writes into the run): refused in one line while another process
    trains or evaluates it.

    Raises:
        RunError: the run's latent is not 2-D, the run is in use, or it has no such checkpoint.
    """
    if not (Path(run_dir) / CONFIG_FILE).is_file():  # checked before the lock file is made: never write into a non-run
        raise RunError(f"{run_dir}: not a vaelab run directory (no {CONFIG_FILE})")
    with directory_lock(run_dir, "evaluate --exact"):
        return _evaluate_exact(run_dir, split, data_dir, device, settings, num_images, progress, trust_code, checkpoint)


def _evaluate_exact(run_dir, split, data_dir, device, settings, num_images, progress, trust_code, which) -> dict[str, Any]:
    config, model, dataset, checkpoint = load_2d_run(run_dir, data_dir, device, trust_code, which)
    images = evaluation_images(config, dataset, split)[0][:num_images]
    batch_size = config.train.eval_batch_size
    started = time.perf_counter()
    exact = quadrature_log_marginal(model, images, settings, batch_size, f"{split} quadrature" if progress else None)
    quadrature_seconds = time.perf_counter() - started
    generator = seeded_generator(config.seed, checkpoint["epoch"], SPLIT_TAGS[split], max(EXACT_KS), device=next(model.parameters()).device)
    bounds = bound_curve(model, images, EXACT_KS, generator, batch_size, f"{split} L_k, k up to {max(EXACT_KS)}" if progress else None)
    log_marginal, log_marginal_stderr = mean_and_standard_error(exact.log_marginal)
    estimator = "exact" + ("" if num_images is None else f"-n{images.shape[0]}")
    bounds_file = bounds_file_name("evaluate", split, checkpoint["epoch"], estimator)
    save_per_image(
        Path(run_dir) / bounds_file, torch.arange(images.shape[0]), log_px=exact.log_marginal, quadrature_error=exact.error,
        **{f"bound_k{k}": bounds[k] for k in EXACT_KS},
    )
    result = {
        "split": split,
        "epoch": checkpoint["epoch"],
        **checkpoint_fields(checkpoint),
        "algorithm": config.train.algorithm,
        "num_images": images.shape[0],
        "log_marginal": log_marginal,
        "log_marginal_stderr": log_marginal_stderr,
        "quadrature_error_mean": exact.error.mean().item(),
        "quadrature_error_max": exact.error.max().item(),
        "bounds": [_row(k, bounds[k], exact.log_marginal) for k in EXACT_KS],
        "largest_gaps": _largest_gaps(exact.log_marginal - bounds[max(EXACT_KS)].double()),
        "quadrature": dataclasses.asdict(settings),
        "quadrature_seconds": quadrature_seconds,
        "bound_seconds": time.perf_counter() - started - quadrature_seconds,
        "bounds_file": bounds_file,
    }
    write_json_atomic(exact_file(run_dir, split), result)
    return result


def _row(k, bound, log_marginal) -> dict[str, float]:
    mean, stderr = mean_and_standard_error(bound)
    gaps = log_marginal - bound.double()
    gap, gap_stderr = mean_and_standard_error(gaps)
    return {"k": k, "bound": mean, "bound_stderr": stderr, "gap": gap, "gap_stderr": gap_stderr, "gap_median": gaps.median().item()}


def _largest_gaps(gaps) -> list[dict[str, float]]:
    """The images (index in the split) with the largest gaps ``[N]``, largest first."""
    values, indices = gaps.topk(min(NUM_LARGEST_GAPS, gaps.numel()))
    return [{"index": index, "gap": value} for index, value in zip(indices.tolist(), values.tolist())]


def summary_lines(result: dict[str, Any]) -> list[str]:
    """What ``vaelab evaluate --exact`` prints: log p(x) and the checkpoint it is of, then L_k and the gap for each k."""
    # results written before the checkpoint was recorded are of the last one
    of = f"best on {result['selected_on']}" if result.get("checkpoint") == "best" else "last"
    lines = [
        f"{result['split']} log p(x) = {plus_minus(result['log_marginal'], result['log_marginal_stderr'])} by quadrature "
        f"(error estimate: mean {result['quadrature_error_mean']:.1e}, max {result['quadrature_error_max']:.1e} nats; "
        f"{result['num_images']} images, epoch {result['epoch']}, {result['quadrature_seconds']:.1f} s); checkpoint: {of}"
    ]
    for row in result["bounds"]:
        lines.append(
            f"  L_{row['k']:<5} = {plus_minus(row['bound'], row['bound_stderr'], unit='')}   "
            f"log p(x) - L_{row['k']:<5} = {plus_minus(row['gap'], row['gap_stderr'], 4)} (median {row['gap_median']:.4f})"
        )
    largest = result["largest_gaps"][:3]
    lines.append(f"  largest gaps at k = {max(EXACT_KS)}: " + ", ".join(f"image {row['index']}: {row['gap']:.2f}" for row in largest) + " nats")
    return lines
