"""L_k of a model on a split under the evaluation protocol, and of a saved run; AIS and BDMC of a saved run.

Every evaluation row says which estimator made it (``estimator``: 'iwae' for L_k, 'ais', 'bdmc';
rows written before the key existed are L_k) and names its per-image file (``bounds_file``,
:mod:`vaelab.evaluation.per_image`). A saved run's rows say which checkpoint they are of
(``checkpoint``: 'best', with ``selected_on``, or 'last'; :func:`checkpoint_fields`). Where the
data are discrete, each number in nats has its bits/dim beside it (``<key>_bpd``, ``<key>_bpd_stderr``:
:func:`vaelab.evaluation.units.bits_per_dim_fields`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import torch

from vaelab.builders import load_run
from vaelab.config import ExperimentConfig
from vaelab.data import Dataset
from vaelab.distributed import Placement, gather
from vaelab.errors import RunError
from vaelab.estimators.ais import AISSettings, bdmc_on_simulated, decoder_passes, evaluate_ais, rows_at_once, sandwich_summary, simulate
from vaelab.estimators.bounds import (
    evaluate_bound,
    evaluate_bound_and_k_hat,
    evaluate_bound_curve_and_k_hat,
    mean_and_standard_error,
)
from vaelab.estimators.pareto import RELIABLE_BELOW
from vaelab.evaluation.across_seeds import seed_runs, summarise_rows, summary_file
from vaelab.evaluation.per_image import bounds_file_name, save_per_image
from vaelab.evaluation.protocol import SPLIT_TAGS, evaluation_images, seeded_generator
from vaelab.evaluation.units import bits_per_dim_fields
from vaelab.models import HelmholtzMachine
from vaelab.models.backend import matmul_precision
from vaelab.models.networks import evaluation_mode
from vaelab.preflight import ais_memory_needed, check_before_training, check_memory
from vaelab.runio import (
    CONFIG_FILE,
    METRICS_FILE,
    append_metrics,
    directory_lock,
    read_metrics,
    write_json_atomic,
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
    bounds_dir: str | Path | None = None,
    kind: str = "eval",
    curve_ks: tuple[int, ...] = (),
) -> dict[str, Any]:
    """L_k and the ELBO (L_1) of ``split`` (its first ``num_images``; None: all): a metrics row with
    means and standard errors in nats, the same in bits/dim where the data are discrete
    (``bound_bpd``, ``bound_bpd_stderr``, ``elbo_bpd``, ``elbo_bpd_stderr``:
    :func:`vaelab.evaluation.units.bits_per_dim_fields`), and the Pareto k-hat of each image's k weights summarised as
    ``k_hat_mean`` and ``k_hat_above`` (the fraction of images above 0.7, where Vehtari et al. call the
    estimate unreliable; both null for k < 25). ``precision='bf16'`` multiplies in bfloat16 (see
    :func:`vaelab.models.backend.matmul_precision`); the row records it. ``progress``: a bar with
    an ETA for each pass (on the main process).

    With ``bounds_dir`` the per-image L_k, ELBO and k-hat are written there (by the main process),
    named in the row's ``bounds_file`` (:mod:`vaelab.evaluation.per_image`); ``kind`` is the row's kind
    and part of the file's name.

    ``curve_ks`` (each dividing k; e.g. 1, 2, 5, ..., 1000 for k = 1000): per-image L_j for each j from
    the same draws (:func:`vaelab.estimators.bounds.evaluate_bound_curve_and_k_hat`), written to the
    per-image file as ``bound_k<j>`` for j < k (L_k is ``bound``; needs ``bounds_dir``). The row's
    L_k is then one log-sum-exp of the k weights instead of a running one: the same up to rounding.

    Under torchrun each process scores every world_size-th image; the values are gathered so
    every process returns the same row.
    """
    if curve_ks and bounds_dir is None:
        raise ValueError("curve_ks needs bounds_dir: the curve is written to the per-image file")
    if any(j < 1 or k % j for j in curve_ks):
        raise ValueError(f"every k of the curve must divide k = {k} (got {curve_ks})")
    placement = placement or Placement(next(model.parameters()).device)
    images, _ = evaluation_images(config, dataset, split)
    indices = torch.arange(images.shape[0])[:num_images][placement.rank :: placement.world_size]  # [n]: positions in the split
    images = images[:num_images][placement.rank :: placement.world_size]
    started = time.perf_counter()
    generator = seeded_generator(config.seed, epoch, SPLIT_TAGS[split], k, placement.rank, device=placement.device)
    batch_size = config.train.eval_batch_size
    shown = progress and placement.is_main
    with matmul_precision(precision), evaluation_mode(model):  # no dropout, no BatchNorm statistics of the images scored
        # the same draws as L_k alone: k-hat reads the weights L_k is made of
        title = f"{config.train.algorithm} {split} L_{k}" if shown else None
        if curve_ks:
            curve, k_hats = evaluate_bound_curve_and_k_hat(model, images, tuple(sorted({*curve_ks, k})), generator, batch_size, title)
            bounds = curve.pop(k)
            curve = {f"bound_k{j}": gather(values.to(placement.device), placement) for j, values in curve.items()}
        else:
            (bounds, k_hats), curve = evaluate_bound_and_k_hat(model, images, k, generator, batch_size, title), {}
        bounds, k_hats = gather(bounds.to(placement.device), placement), gather(k_hats.to(placement.device), placement)
        elbos = gather(evaluate_bound(model, images, 1, generator, batch_size, f"{config.train.algorithm} {split} ELBO" if shown else None).to(placement.device), placement)
    indices = gather(indices.to(placement.device), placement)
    bound, bound_stderr = mean_and_standard_error(bounds.cpu())
    elbo, elbo_stderr = mean_and_standard_error(elbos.cpu())
    row = {
        "kind": kind,
        "estimator": "iwae",
        "split": split,
        "k": k,
        "bound": bound,
        "bound_stderr": bound_stderr,
        "elbo": elbo,
        "elbo_stderr": elbo_stderr,
        **k_hat_summary(k_hats.cpu()),
        "num_images": bounds.numel(),
        "eval_seconds": time.perf_counter() - started,
        **({} if precision == "fp32" else {"precision": precision}),
    }
    row.update(bits_per_dim_fields(row, config, dataset))
    if bounds_dir is not None:
        suffix = ("" if num_images is None else f"-n{bounds.numel()}") + ("" if precision == "fp32" else f"-{precision}")
        row["bounds_file"] = bounds_file_name(kind, split, epoch, f"k{k}{suffix}")
        if placement.is_main:
            save_per_image(Path(bounds_dir) / row["bounds_file"], indices, bound=bounds, elbo=elbos, k_hat=k_hats, **curve)
    return row


def k_hat_summary(k_hats: torch.Tensor) -> dict[str, float | None]:
    """``k_hat_mean`` (over images with a finite k-hat) and ``k_hat_above`` (the fraction of all images with
    k-hat > 0.7) of per-image k-hats ``[N]``; None for both where every k-hat is nan (k < 25)."""
    if torch.isnan(k_hats).all():
        return {"k_hat_mean": None, "k_hat_above": None}
    finite = k_hats[torch.isfinite(k_hats)]
    return {
        "k_hat_mean": finite.double().mean().item() if finite.numel() else None,
        "k_hat_above": (k_hats > RELIABLE_BELOW).double().mean().item(),
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
    trust_code: bool = False,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """Estimate L_k (and the ELBO) of ``split`` (its first ``num_images``; None: all) at the run's
    ``checkpoint`` ('best', 'last'; None: best where the run selected one, else last;
    :func:`vaelab.builders.checkpoint_file`), multiplying in ``precision`` ('fp32' or 'bf16');
    appends the row to its metrics.

    ``progress``: a bar with an ETA for each pass. Holds the run's lock (it appends to the
    metrics): refused in one line while another process trains or evaluates the run."""
    _check_run_dir(run_dir)
    with directory_lock(run_dir, "evaluate"):
        return _evaluate_run(run_dir, k, split, data_dir, device, num_images, precision, progress, trust_code, checkpoint)


def evaluate_seeds(
    parent: str | Path,
    k: int,
    split: str = "test",
    data_dir: str | Path | None = None,
    device: str = "auto",
    num_images: int | None = None,
    precision: str = "fp32",
    progress: bool = False,
    trust_code: bool = False,
    checkpoint: str | None = None,
) -> list[str]:
    """:func:`evaluate_run` on every seed's run under the multi-seed ``parent`` (``--seeds``;
    :func:`vaelab.evaluation.across_seeds.seed_runs`), then L_k summarised over seeds per group
    (mean, sd, 95% interval, per-seed values; a test of every pair of groups), written to
    ``parent/across-seeds-<split>-L<k>.json``; returns the lines to print. Holds ``parent``'s lock.
    ``checkpoint``: each run's, as for :func:`evaluate_run`.
    """
    parent = Path(parent)
    runs = seed_runs(parent)
    with directory_lock(parent, "evaluate"):
        rows = {
            group: {
                seed: evaluate_run(run_dir, k, split, data_dir, device, num_images, precision, progress, trust_code, checkpoint)
                for seed, run_dir in by_seed.items()
            }
            for group, by_seed in runs.items()
        }
        summary, lines = summarise_rows(f"{split} L_{k}", rows)
        write_json_atomic(parent / summary_file(split, k), summary)
        return lines


def _evaluate_run(run_dir, k, split, data_dir, device, num_images, precision, progress, trust_code, which) -> dict[str, Any]:
    config, model, dataset, checkpoint = load_run(run_dir, data_dir, device, trust_code, which)
    check_before_training(dataclasses.replace(config, train=dataclasses.replace(config.train, eval_k=k)))  # memory for k samples
    read_metrics(Path(run_dir) / METRICS_FILE)  # refuse a corrupt metrics file before the costly part, not after it
    row = {
        "epoch": checkpoint["epoch"],
        "step": checkpoint["step"],
        "algorithm": config.train.algorithm,
        **evaluate_split(
            model, config, dataset, split, k, checkpoint["epoch"], num_images=num_images, precision=precision, progress=progress,
            bounds_dir=run_dir, kind="evaluate",
        ),
        **checkpoint_fields(checkpoint),
    }
    append_metrics(Path(run_dir) / METRICS_FILE, row)
    return row


def checkpoint_fields(checkpoint: dict[str, Any]) -> dict[str, str]:
    """What a row of an evaluation of a saved ``checkpoint`` records of it: ``checkpoint`` 'best'
    and what it is the best of (``selected_on``, e.g. 'valid L_1000'), or 'last'."""
    if "selected_on" in checkpoint:
        return {"checkpoint": "best", "selected_on": checkpoint["selected_on"]}
    return {"checkpoint": "last"}


# Entropy of the random streams of BDMC's simulated images (beside the split tags 0-2).
BDMC_TAG = 7


def evaluate_ais_run(
    run_dir: str | Path,
    steps: int,
    chains: int,
    split: str = "test",
    data_dir: str | Path | None = None,
    device: str = "auto",
    num_images: int | None = None,
    start: str = "proposal",
    progress: bool = False,
    trust_code: bool = False,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """log p(x) of ``split`` (its first ``num_images``) by forward AIS (:mod:`vaelab.estimators.ais`) at
    the run's ``checkpoint`` (as :func:`evaluate_run`'s): T = ``steps`` intermediate distributions, M = ``chains`` chains per
    image, starting from q(z|x) (``start='proposal'``) or p(z) ('prior'). Appends a row with
    ``estimator: 'ais'``, ``log_px`` ± ``log_px_stderr`` (a stochastic lower bound on the mean log p(x)),
    mean acceptance and decoder passes per image, and writes the per-image estimates beside it.

    The draws come from the generator L_M of the same epoch and split uses, image batches of
    ``eval_batch_size`` alike: with T = 0 and M <= 4096 / eval_batch_size (40 for batches of 100) the
    chains start from exactly L_M's draws, so the estimate is the L_M row's, up to float32 rounding.

    Raises:
        ConfigError: the model has Bernoulli latents (HMC cannot move them).
    """
    _check_run_dir(run_dir)
    with directory_lock(run_dir, "evaluate"):
        config, model, dataset, checkpoint = load_run(run_dir, data_dir, device, trust_code, checkpoint)
        read_metrics(Path(run_dir) / METRICS_FILE)  # refuse a corrupt metrics file before the costly part
        settings = AISSettings(steps=steps, chains=chains, start=start)
        _check_ais_memory(config, dataset.data_dim, settings)
        images, _ = evaluation_images(config, dataset, split)
        images = images[:num_images]
        started = time.perf_counter()
        generator = seeded_generator(config.seed, checkpoint["epoch"], SPLIT_TAGS[split], chains, 0, device=next(model.parameters()).device)
        result = evaluate_ais(model, images, settings, generator, progress=progress, batch_size=config.train.eval_batch_size)
        log_px, acceptance = result.log_marginal, result.acceptance
        mean, stderr = mean_and_standard_error(log_px)
        estimator = f"ais-T{steps}-M{chains}" + ("" if start == "proposal" else f"-{start}") + ("" if num_images is None else f"-n{images.shape[0]}")
        row = {
            "epoch": checkpoint["epoch"],
            "step": checkpoint["step"],
            "algorithm": config.train.algorithm,
            "kind": "evaluate",
            "estimator": "ais",
            "split": split,
            "steps": steps,
            "chains": chains,
            "start": start,
            "log_px": mean,
            "log_px_stderr": stderr,
            "acceptance": _mean_or_none(acceptance),
            "decoder_passes": decoder_passes(settings),
            "num_images": images.shape[0],
            "eval_seconds": time.perf_counter() - started,
            "bounds_file": bounds_file_name("evaluate", split, checkpoint["epoch"], estimator),
            **checkpoint_fields(checkpoint),
        }
        row.update(bits_per_dim_fields(row, config, dataset))
        save_per_image(Path(run_dir) / row["bounds_file"], torch.arange(images.shape[0]), log_px=log_px, acceptance=acceptance)
        append_metrics(Path(run_dir) / METRICS_FILE, row)
        return row


def evaluate_bdmc_run(
    run_dir: str | Path,
    num_images: int,
    steps: tuple[int, ...],
    chains: int,
    data_dir: str | Path | None = None,
    device: str = "auto",
    start: str = "proposal",
    progress: bool = False,
    trust_code: bool = False,
    checkpoint: str | None = None,
) -> list[dict[str, Any]]:
    """Bidirectional Monte Carlo (Grosse et al. 2015) at the run's ``checkpoint`` (as :func:`evaluate_run`'s): ``num_images`` images
    simulated from the model (z ~ p(z), x ~ p(x|z): the same images for every T), then for each T in
    ``steps`` forward AIS (a stochastic lower bound on log p(x)) and reverse AIS from the simulated z
    (an upper bound). Appends one row per T with ``estimator: 'bdmc'``: ``lower``, ``upper`` (means over
    images, with standard errors) and the sandwich width upper - lower (``width_abs_mean``, ``width_mean``,
    ``width_max``, and ``inverted``, the share of images whose upper estimate is below the lower one:
    :func:`vaelab.estimators.ais.sandwich_summary`), which bounds the forward estimate's error on data
    like these where the sandwich is not inverted; writes the per-image bounds beside it.

    Raises:
        ConfigError: the model has Bernoulli latents.
    """
    _check_run_dir(run_dir)
    with directory_lock(run_dir, "evaluate"):
        config, model, dataset, checkpoint = load_run(run_dir, data_dir, device, trust_code, checkpoint)
        read_metrics(Path(run_dir) / METRICS_FILE)
        device_of_model = next(model.parameters()).device
        epoch = checkpoint["epoch"]
        # refuse bad settings, and sizes beyond this machine's memory, before simulating
        _check_ais_memory(config, dataset.data_dim, AISSettings(steps=max(steps), chains=chains, start=start), num_images)
        x, z = simulate(model, num_images, seeded_generator(config.seed, epoch, BDMC_TAG, device=device_of_model))
        rows = []
        for steps_now in steps:
            settings = AISSettings(steps=steps_now, chains=chains, start=start)
            started = time.perf_counter()
            generator = seeded_generator(config.seed, epoch, BDMC_TAG, steps_now, chains, device=device_of_model)
            result = bdmc_on_simulated(model, x, z, settings, generator, progress=progress, batch_size=config.train.eval_batch_size)
            lower, upper, acceptance = result.forward.log_marginal, result.reverse.log_marginal, result.forward.acceptance
            (lower_mean, lower_stderr), (upper_mean, upper_stderr) = mean_and_standard_error(lower), mean_and_standard_error(upper)
            row = {
                "epoch": epoch,
                "step": checkpoint["step"],
                "algorithm": config.train.algorithm,
                "kind": "evaluate",
                "estimator": "bdmc",
                "split": "simulated",
                "steps": steps_now,
                "chains": chains,
                "start": start,
                "lower": lower_mean,
                "lower_stderr": lower_stderr,
                "upper": upper_mean,
                "upper_stderr": upper_stderr,
                **sandwich_summary(lower, upper),
                "acceptance": _mean_or_none(acceptance),
                "decoder_passes": decoder_passes(settings) + decoder_passes(settings, reverse=True),
                "num_images": num_images,
                "eval_seconds": time.perf_counter() - started,
                "bounds_file": bounds_file_name("bdmc", "simulated", epoch, f"T{steps_now}-M{chains}-n{num_images}" + ("" if start == "proposal" else f"-{start}")),
                **checkpoint_fields(checkpoint),
            }
            row.update(bits_per_dim_fields(row, config, dataset))
            save_per_image(Path(run_dir) / row["bounds_file"], torch.arange(num_images), lower=lower, upper=upper)
            append_metrics(Path(run_dir) / METRICS_FILE, row)
            rows.append(row)
        return rows


def _check_ais_memory(config: ExperimentConfig, data_dim: int, settings: AISSettings, simulated_images: int = 0) -> None:
    """Refuse, in one line, AIS (or BDMC on ``simulated_images`` images) that needs more memory than this
    machine has (``--k 10**9`` chains would otherwise reach the allocator)."""
    rows = rows_at_once(settings, config.train.eval_batch_size)
    what = "BDMC" if simulated_images else "AIS"
    check_memory(
        ais_memory_needed(config, data_dim, rows, simulated_images),
        f"{what} with M = {settings.chains} chains per image",
        f"for {rows:,} chains at once" + (f" and {simulated_images:,} simulated images" if simulated_images else ""),
        "lower --k (the chains per image M)" + (" or --bdmc (the simulated images)" if simulated_images else ""),
    )


def _check_run_dir(run_dir) -> None:
    if not (Path(run_dir) / CONFIG_FILE).is_file():  # checked before the lock file is made: never write into a non-run
        raise RunError(f"{run_dir}: not a vaelab run directory (no {CONFIG_FILE})")


def _mean_or_none(values: torch.Tensor) -> float | None:
    mean = values.double().mean().item()
    return None if math.isnan(mean) else mean
