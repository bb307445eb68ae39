"""The experiments of ``vaelab bounds``: the homework's sections 1.4 and 1.5 against exact log p(x).

1. L_k against k beside the exact log p(x) on three models: a linear-Gaussian model with a
   mean-field q (closed form), a sigmoid belief network (enumeration of its 2^K latents) and a
   2-D model trained on digits (quadrature, :mod:`vaelab.exact.quadrature`).
2. The counterexample (:mod:`vaelab.exact.counterexample`): L_k - log p(x) and the effective sample
   size of the weights for a matched, a light-tailed and a truncated proposal.

Every curve is the mean over data points of L_k, estimated ``repetitions`` times from fresh
sets of max(ks) samples per point (block estimates for the smaller k); the standard error is
over repetitions, i.e. Monte Carlo error only, since log p(x) is known for the same points.
The results are plain numbers, written to ``bounds.json``; figures and the page read that file.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vaelab.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from vaelab.estimators.bounds import (
    block_bound,
    bound_curve,
    log_weights_in_chunks,
    mean_and_standard_error,
)
from vaelab.evaluation.exact import load_2d_run
from vaelab.evaluation.protocol import evaluation_images, seeded_generator
from vaelab.exact.counterexample import (
    SCALE_FACTORS,
    fit_light_tailed_constant,
    limit_gap,
    proposal_models,
    samples_for_gap,
)
from vaelab.exact.linear_gaussian import (
    linear_gaussian_log_marginal,
    linear_gaussian_model,
)
from vaelab.exact.quadrature import LATENT_DIM, quadrature_log_marginal
from vaelab.exact.sigmoid_belief import enumerated_log_marginal, sigmoid_belief_model
from vaelab.models.sampling import ancestral_sample
from vaelab.runio import BOUNDS_RESULTS_FILE as RESULTS_FILE
from vaelab.runio import directory_lock, make_directory, write_json_atomic
from vaelab.training import train

TRAINED_RUN = "digits-run"  # where the digits model is trained when no run is given


@dataclass(frozen=True)
class StudySettings:
    """Sample sizes of the study. Every k must divide max(ks) (block estimates)."""

    ks: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000)
    repetitions: int = 10
    num_points: int = 20  # data points of each tractable model
    num_images: int = 100  # digits test images of the trained model
    epochs: int = 30  # of the digits model trained when no run is given
    seed: int = 0

    def __post_init__(self) -> None:
        if any(max(self.ks) % k for k in self.ks):
            raise ValueError(f"every k must divide max(ks) = {max(self.ks)} (got {self.ks})")


QUICK = StudySettings(ks=(1, 10, 100, 1000), repetitions=3, num_points=8, num_images=10, epochs=2)


def repeated_bound_curve(model, x, ks, repetitions, generator) -> torch.Tensor:
    """Mean over the rows of x of L_k, ``[repetitions, len(ks)]``: one fresh set of max(ks) samples per repetition."""
    curves = [bound_curve(model, x, ks, generator) for _ in range(repetitions)]
    return torch.tensor([[curve[k].double().mean().item() for k in ks] for curve in curves])


def block_effective_sample_size(log_weights: torch.Tensor, k: int) -> torch.Tensor:
    """(sum w)^2 / sum w^2 of each disjoint block of k weights: ``[K / k, B]`` from log-weights ``[K, B]``."""
    blocks = log_weights.reshape(-1, k, *log_weights.shape[1:])
    return torch.exp(2 * torch.logsumexp(blocks, 1) - torch.logsumexp(2 * blocks, 1))


def _mean_and_stderr(per_repetition: torch.Tensor) -> tuple[list[float], list[float]]:
    """Mean and standard error over repetitions of ``[R, len(ks)]`` values, one k (column) at a time (NaN errors when R = 1)."""
    means, stderrs = zip(*(mean_and_standard_error(column) for column in per_repetition.T))
    return list(means), list(stderrs)


def _curve(per_repetition: torch.Tensor, exact: float) -> dict[str, list[float]]:
    """L_k ``[R, len(ks)]`` summarised: its mean and standard error over repetitions, and the gap log p(x) - mean."""
    bound, stderr = _mean_and_stderr(per_repetition)
    return {"bound": bound, "bound_stderr": stderr, "gap": [exact - value for value in bound]}


def tractable_curves(settings: StudySettings, generator: torch.Generator) -> list[dict[str, Any]]:
    """L_k against k on the linear-Gaussian model (closed form) and the sigmoid belief network (enumeration)."""
    weight = torch.randn(5, 2, generator=generator, dtype=torch.float64)
    bias = torch.randn(5, generator=generator, dtype=torch.float64)
    models = [
        ("linear-gaussian", "linear-Gaussian, 2-D latent, mean-field q", "closed form",
         linear_gaussian_model(weight, bias, noise_scale=0.5, posterior_scale_factor=1.5), linear_gaussian_log_marginal),
        ("sigmoid-belief", "sigmoid belief net, 8 binary latents", "sum over 256 configurations",
         sigmoid_belief_model(8, 16, generator, weight_scale=1.0), enumerated_log_marginal),
    ]
    curves = []
    for name, title, method, model, log_marginal in models:
        _, x = ancestral_sample(model, (settings.num_points,), generator)
        with torch.no_grad():
            exact = log_marginal(model, x).mean().item()
        per_repetition = repeated_bound_curve(model, x, settings.ks, settings.repetitions, generator)
        curves.append({"name": name, "title": title, "method": method, "num_points": x.shape[0],
                       "exact": exact, "exact_error": 0.0, **_curve(per_repetition, exact)})
    return curves


def trained_curve(run_dir: Path, settings: StudySettings, generator: torch.Generator, data_dir=None, trust_code: bool = False) -> dict[str, Any]:
    """L_k against k on the first ``num_images`` test images of a trained 2-D run; log p(x) by quadrature.
    ``trust_code``: a run of user networks imports and runs their code (:func:`vaelab.builders.require_trust`)."""
    config, model, dataset, checkpoint = load_2d_run(run_dir, data_dir, trust_code=trust_code)
    images = evaluation_images(config, dataset, "test")[0][: settings.num_images]
    exact = quadrature_log_marginal(model, images)
    log_marginal = exact.log_marginal.mean().item()
    per_repetition = repeated_bound_curve(model, images, settings.ks, settings.repetitions, generator)
    title = f"{config.train.algorithm} on {config.data.dataset}, 2-D latent, epoch {checkpoint['epoch']}"
    return {"name": "trained", "title": title, "method": "quadrature", "num_points": images.shape[0], "run": str(run_dir),
            "exact": log_marginal, "exact_error": exact.error.mean().item(), **_curve(per_repetition, log_marginal)}


def counterexample(settings: StudySettings, generator: torch.Generator) -> dict[str, Any]:
    """L_k - log p(x) and the effective sample size against k for each proposal of :mod:`vaelab.exact.counterexample`."""
    q_matrix, _ = torch.linalg.qr(torch.randn(5, 2, generator=generator, dtype=torch.float64))
    weight = q_matrix * torch.tensor([2.0, 1.0], dtype=torch.float64)  # orthogonal columns: a diagonal posterior
    bias = torch.randn(5, generator=generator, dtype=torch.float64)
    models = proposal_models(weight, bias, noise_scale=0.5)
    _, x = ancestral_sample(models["matched"], (settings.num_points,), generator)
    with torch.no_grad():
        exact = linear_gaussian_log_marginal(models["matched"], x)  # [N]
    proposals = {}
    for name, model in models.items():
        gaps, sizes = [], []
        for _ in range(settings.repetitions):
            log_weights = log_weights_in_chunks(model, x, max(settings.ks), generator)  # [K, N]
            gaps.append([(exact - block_bound(log_weights, k)).mean().item() for k in settings.ks])
            sizes.append([block_effective_sample_size(log_weights, k).mean().item() for k in settings.ks])
        gap, gap_stderr = _mean_and_stderr(torch.tensor(gaps))
        proposals[name] = {"scale_factor": SCALE_FACTORS[name], "limit_gap": limit_gap(name, weight.shape[1]),
                           "gap": gap, "gap_stderr": gap_stderr, "ess": torch.tensor(sizes).mean(0).tolist()}
    constant = fit_light_tailed_constant(torch.tensor(settings.ks), torch.tensor(proposals["light-tailed"]["gap"]))
    proposals["light-tailed"]["fit_constant"] = constant
    proposals["light-tailed"]["samples_for_0.1_nats"] = samples_for_gap(0.1, constant)
    return {"num_points": x.shape[0], "exact": exact.mean().item(), "latent_dim": weight.shape[1], "proposals": proposals}


def train_digits_model(run_dir: Path, settings: StudySettings, data_dir=None, progress: bool = False) -> Path:
    """A small AEVB model with a 2-D latent on digits (resumed, i.e. skipped, when ``run_dir`` holds it)."""
    config = ExperimentConfig(
        data=DataConfig(dataset="digits"),
        model=ModelConfig(latent_dim=LATENT_DIM, hidden=(128,)),
        train=TrainConfig(epochs=settings.epochs, eval_every=settings.epochs, eval_k=100, eval_splits=("test",)),
        seed=settings.seed,
    )
    train(config, run_dir, data_dir=data_dir, resume=True, progress=progress, device="cpu")
    return run_dir


def run_study(
    out_dir: str | Path,
    run_dir: str | Path | None = None,
    settings: StudySettings = StudySettings(),
    data_dir=None,
    progress: bool = False,
    trust_code: bool = False,
) -> dict[str, Any]:
    """Run every experiment, write ``bounds.json`` into ``out_dir`` and return its contents.

    ``run_dir``: a trained run with a 2-D latent; without one, a small model is trained on digits
    into ``out_dir/digits-run``. ``trust_code``: ``run_dir`` may name user networks, whose code then runs.
    """
    out_dir = Path(out_dir)
    make_directory(out_dir, "output directory")
    with directory_lock(out_dir, "bounds"):  # a second `vaelab bounds` there is refused in one line
        return _run_study(out_dir, run_dir, settings, data_dir, progress, trust_code)


def _run_study(out_dir: Path, run_dir, settings: StudySettings, data_dir, progress: bool, trust_code: bool) -> dict[str, Any]:
    started = time.perf_counter()
    run_dir = Path(run_dir) if run_dir else train_digits_model(out_dir / TRAINED_RUN, settings, data_dir, progress)
    seconds = {"training": time.perf_counter() - started}
    generator = seeded_generator(settings.seed)
    results: dict[str, Any] = {"settings": dataclasses.asdict(settings)}
    started = time.perf_counter()
    trained = trained_curve(run_dir, settings, generator, data_dir, trust_code)  # first: a run without a 2-D latent fails at once
    results["curves"] = [*tractable_curves(settings, generator), trained]
    seconds["curves"] = time.perf_counter() - started
    started = time.perf_counter()
    results["counterexample"] = counterexample(settings, generator)
    seconds["counterexample"] = time.perf_counter() - started
    results["seconds"] = seconds
    write_json_atomic(out_dir / RESULTS_FILE, results)
    return results


def summary_lines(results: dict[str, Any]) -> list[str]:
    """What ``vaelab bounds`` prints: the gap at the largest k for every curve and proposal."""
    k = max(results["settings"]["ks"])
    lines = [
        f"{curve['title']}: log p(x) = {curve['exact']:.3f}, log p(x) - L_{k} = {curve['gap'][-1]:.4f} ± {curve['bound_stderr'][-1]:.4f} nats"
        for curve in results["curves"]
    ]
    for name, proposal in results["counterexample"]["proposals"].items():
        lines.append(
            f"counterexample, {name} q: log p(x) - L_{k} = {proposal['gap'][-1]:.3f} ± {proposal['gap_stderr'][-1]:.3f} nats "
            f"(limit {proposal['limit_gap']:.3f})"
        )
    return lines
