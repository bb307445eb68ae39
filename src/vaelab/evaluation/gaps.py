"""The inference gap split in two (Cremer, Li & Duvenaud 2018), per image:

    log p(x) - ELBO(q_phi(.|x)) = [log p(x) - ELBO(q*)]  +  [ELBO(q*) - ELBO(q_phi(.|x))],
                                   approximation gap         amortization gap

q* the best member of the encoder's family for that one x: its local parameters (the base
Gaussian's mean and log-scale, and a flow's parameters that the encoder computes from h(x)),
started at the encoder's and raised by Adam on the ELBO (``steps`` steps of ``samples`` draws).
log p(x) is forward AIS started from q_phi (:mod:`vaelab.estimators.ais`). Both ELBOs use the same
k base draws (common random numbers: their difference has a small standard error), from which the
encoder's L_k comes too. Convergence: each image's ELBO (on those fixed draws) over the last 10%
of steps, which should be near zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributions import Independent, Normal

from vaelab.builders import load_run
from vaelab.errors import ConfigError, RunError
from vaelab.estimators.ais import AISSettings, evaluate_ais
from vaelab.estimators.bounds import DEFAULT_MAX_ROWS, mean_and_standard_error, plus_minus
from vaelab.evaluation.per_image import gaps_file, save_per_image
from vaelab.evaluation.protocol import SPLIT_TAGS, evaluation_images, seeded_generator
from vaelab.models import HelmholtzMachine
from vaelab.objectives.core import log_mean_exp
from vaelab.posteriors.flow import FlowPosterior
from vaelab.runio import CONFIG_FILE, directory_lock

__all__ = ["GapSettings", "evaluate_gaps_run", "gap_lines", "gaps_file", "inference_gaps"]

# The tail of the optimisation over which convergence is read.
CONVERGENCE_FRACTION = 0.1


@dataclass(frozen=True)
class GapSettings:
    """How the gaps are measured: L_k's and the ELBOs' k draws, q*'s optimiser, and AIS."""

    k: int = 1000
    steps: int = 1000  # Adam steps of q*
    learning_rate: float = 0.01
    samples: int = 16  # draws per Adam step
    ais: AISSettings = AISSettings()


def _local_parameters(model: HelmholtzMachine, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, FlowPosterior | None]:
    """The encoder's local parameters for x ``[B, D_x]``: mean and log-scale ``[B, D]``, and a flow's ``[B, T, P]`` (or None)."""
    with torch.no_grad():
        posterior = model.posterior(x)
    flow = posterior if isinstance(posterior, FlowPosterior) else None
    base = flow.base if flow is not None else posterior
    if model.upper_recognition or not isinstance(base, Independent) or not isinstance(base.base_dist, Normal):
        raise ConfigError("--gaps needs one stochastic layer of Gaussian latents")
    return base.base_dist.loc, base.base_dist.scale.log(), None if flow is None else flow.params, flow


def _log_weights(model, x, flow, loc, log_scale, params, noise) -> torch.Tensor:
    """``[S, B]`` log w of the family member (loc, log_scale, params) at base noise ``[S, B, D]``."""
    base = Independent(Normal(loc, log_scale.exp()), 1)
    z0 = loc + log_scale.exp() * noise
    z, log_det = (z0, 0.0) if flow is None else flow.flow.transform(params, z0)
    return model.prior_distribution().log_prob(z) + model.log_likelihood(x, z) - base.log_prob(z0) + log_det


def _standard_error(values: torch.Tensor) -> torch.Tensor:
    """``[B]`` standard error of the mean over dim 0 of ``[S, B]``."""
    return values.std(0) / math.sqrt(values.shape[0])


def _log_mean_exp_standard_error(log_weights: torch.Tensor) -> torch.Tensor:
    """``[B]`` delta-method standard error of log-mean-exp over dim 0 of ``[M, B]``: std(w) / (sqrt(M) mean(w))."""
    weights = torch.exp(log_weights - log_weights.max(0).values)
    return weights.std(0) / (math.sqrt(weights.shape[0]) * weights.mean(0))


def inference_gaps(
    model: HelmholtzMachine,
    x: torch.Tensor,
    settings: GapSettings = GapSettings(),
    generator: torch.Generator | None = None,
    progress: bool = False,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> dict[str, torch.Tensor]:
    """Per-image ``[B]`` tensors (in x's dtype) for x ``[B, D_x]``: ``log_px`` (AIS) and ``log_px_se``,
    ``elbo_encoder``, ``lk_encoder``, ``elbo_optimised`` (each with ``_se``), ``approximation_gap``,
    ``amortization_gap`` (each with ``_se``) and ``convergence`` (q*'s ELBO change over the last 10% of steps).
    The k draws are scored ``max_rows`` decoder rows at a time; q*'s steps hold B * ``samples`` rows.

    Raises:
        ConfigError: the model has more than one stochastic layer or non-Gaussian latents.
    """
    loc, log_scale, params, flow = _local_parameters(model, x)
    noise = torch.randn((settings.k, *loc.shape), generator=generator, dtype=loc.dtype, device=loc.device)

    @torch.no_grad()
    def scored(loc, log_scale, params) -> torch.Tensor:  # [k, B] log w on the fixed draws, max_rows decoder rows at a time
        chunks = noise.split(max(1, max_rows // x.shape[0]))
        return torch.cat([_log_weights(model, x, flow, loc, log_scale, params, chunk) for chunk in chunks])

    encoder = scored(loc, log_scale, params)
    leaves = [tensor.detach().clone().requires_grad_(True) for tensor in (loc, log_scale, params) if tensor is not None]
    optimizer = torch.optim.Adam(leaves, lr=settings.learning_rate)
    checkpoint = settings.steps - max(1, round(CONVERGENCE_FRACTION * settings.steps))

    def local() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:  # q*'s current parameters
        return leaves[0], leaves[1], leaves[2] if flow is not None else None

    for step in range(settings.steps):
        if step == checkpoint:
            before = scored(*local()).mean(0)
        draws = torch.randn((settings.samples, *loc.shape), generator=generator, dtype=loc.dtype, device=loc.device)
        loss = -_log_weights(model, x, flow, *local(), draws).mean(0).sum()  # the images are independent: one sum optimises each
        for leaf, gradient in zip(leaves, torch.autograd.grad(loss, leaves)):
            leaf.grad = gradient
        optimizer.step()
    optimised = scored(*local())  # [k, B], the same draws as the encoder's
    with torch.no_grad():
        ais = evaluate_ais(model, x, settings.ais, generator, max_rows, progress)
    log_px = ais.log_marginal.to(loc.dtype).to(loc.device)
    log_px_se = _log_mean_exp_standard_error(ais.log_weights.to(loc.device)).to(loc.dtype)
    elbo_encoder, elbo_optimised = encoder.mean(0), optimised.mean(0)
    return {
        "log_px": log_px,
        "log_px_se": log_px_se,
        "elbo_encoder": elbo_encoder,
        "elbo_encoder_se": _standard_error(encoder),
        "lk_encoder": log_mean_exp(encoder),
        "lk_encoder_se": _log_mean_exp_standard_error(encoder),
        "elbo_optimised": elbo_optimised,
        "elbo_optimised_se": _standard_error(optimised),
        "approximation_gap": log_px - elbo_optimised,
        "approximation_gap_se": (log_px_se**2 + _standard_error(optimised) ** 2).sqrt(),
        "amortization_gap": elbo_optimised - elbo_encoder,
        "amortization_gap_se": _standard_error(optimised - encoder),
        "convergence": elbo_optimised - before,
    }


def evaluate_gaps_run(
    run_dir: str | Path,
    num_images: int,
    settings: GapSettings = GapSettings(),
    split: str = "test",
    data_dir: str | Path | None = None,
    device: str = "auto",
    trust_code: bool = False,
    checkpoint: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """:func:`inference_gaps` of the first ``num_images`` images of ``split`` at the run's checkpoint,
    written per image into the run (:func:`gaps_file`); returns the summary (mean and standard
    error across images of each quantity, the settings, the file's name)."""
    if not (Path(run_dir) / CONFIG_FILE).is_file():
        raise RunError(f"{run_dir}: not a vaelab run directory (no {CONFIG_FILE})")
    with directory_lock(run_dir, "evaluate"):
        config, model, dataset, state = load_run(run_dir, data_dir, device, trust_code, checkpoint)
        images, _ = evaluation_images(config, dataset, split)
        images = images[:num_images].to(next(model.parameters()).device)
        generator = seeded_generator(config.seed, state["epoch"], SPLIT_TAGS[split], 7, device=images.device)
        # a batch at a time: q*'s Adam steps and the k draws of every image in it are held at once
        parts = [inference_gaps(model, batch, settings, generator, progress) for batch in images.split(config.train.eval_batch_size)]
        values = {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
        name = gaps_file(split, state["epoch"])
        save_per_image(Path(run_dir) / name, torch.arange(images.shape[0]), **values)
    summary = {key: mean_and_standard_error(value) for key, value in values.items() if not key.endswith("_se")}
    return {"summary": summary, "settings": settings, "num_images": images.shape[0], "file": name}


def gap_lines(result: dict[str, Any]) -> list[str]:
    """One line per quantity: its mean over the images and the standard error across them."""
    settings, summary = result["settings"], result["summary"]
    words = {
        "log_px": f"log p(x) by AIS (T={settings.ais.steps}, M={settings.ais.chains}, from q)",
        "elbo_encoder": "ELBO of the encoder's q",
        "lk_encoder": f"L_{settings.k} of the encoder's q",
        "elbo_optimised": f"ELBO of q* (per image, Adam lr {settings.learning_rate}, {settings.steps} steps of {settings.samples} draws)",
        "approximation_gap": "approximation gap log p(x) - ELBO(q*)",
        "amortization_gap": "amortization gap ELBO(q*) - ELBO(encoder)",
        "convergence": f"q*'s ELBO change over its last {CONVERGENCE_FRACTION:.0%} of steps",
    }
    return [f"{text}: {plus_minus(*summary[key])} over {result['num_images']} images" for key, text in words.items()]
