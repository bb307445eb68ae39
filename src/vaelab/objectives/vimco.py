"""VIMCO: a k-sample score-function estimator of grad_phi L_k with leave-one-out baselines
(Mnih & Rezende 2016), for latents that cannot be reparameterised (and any others).

    grad_phi L_k = E[ sum_i (L^ - L^_{-i} - w~_i) d log q_phi(z_i | x) / dphi ],
    L^ = log (1/k) sum_j w_j,   L^_{-i} = log (1/k) (sum_{j != i} w_j + exp(mean_{j != i} log w_j)),

where L^_{-i} replaces w_i by the geometric mean of the others; it does not depend on z_i, so
subtracting it leaves the gradient unbiased. A prior that shares phi (the VampPrior) adds its
direct term sum_i w~_i d log p(z_i) / dphi. theta ascends L_k.

:func:`vimco_phi_surrogate_from_log_weight` holds the arithmetic as a function of log-weights
``[k, B]`` alone (as Le et al.'s ``losses.py`` does), testable on hand-made tensors.
"""

from __future__ import annotations

import math

import torch

from vaelab.models import HelmholtzMachine
from vaelab.objectives.core import (
    ObjectiveOutput,
    importance_samples,
    log_mean_exp,
    normalized_weights,
)


def leave_one_out_bounds(log_weights: torch.Tensor) -> torch.Tensor:
    """L^_{-i} ``[k, B]`` for log-weights ``[k, B]`` (k >= 2): w_i replaced by the others' geometric mean."""
    k = log_weights.shape[0]
    others_mean = (log_weights.sum(0, keepdim=True) - log_weights) / (k - 1)  # [k, B]
    replaced = log_weights.unsqueeze(0).repeat(k, 1, 1)  # [i, j, B]: row i holds the k log-weights ...
    diagonal = torch.arange(k, device=log_weights.device)
    replaced[diagonal, diagonal] = others_mean  # ... with its own entry replaced
    return torch.logsumexp(replaced, dim=1) - math.log(k)


def vimco_phi_surrogate_from_log_weight(
    log_weight: torch.Tensor, log_q: torch.Tensor, log_prior: torch.Tensor | None = None
) -> torch.Tensor:
    """VIMCO's phi surrogate sum_i [(L^ - L^_{-i} - w~_i) log q_phi(z_i | x) + w~_i log p(z_i)] ``[B]``.

    Args:
        log_weight: ``[k, B]`` log w_i, k >= 2; the learning signals L^ - L^_{-i} - w~_i are
            computed from them without gradient (they are the score-function estimator's constants).
        log_q: ``[k, B]`` log q_phi(z_i | x) at detached samples z_i.
        log_prior: ``[k, B]`` log p(z_i), for a prior that shares phi (the VampPrior); None
            leaves its term out (a prior without phi contributes no phi-gradient through it).

    Returns:
        ``[B]``; its gradient w.r.t. ``log_q`` is the learning signal and w.r.t. ``log_prior`` is w~.
    """
    log_weight = log_weight.detach()  # the learning signals are constants of the estimator, not paths to phi
    weights = normalized_weights(log_weight)
    learning_signal = log_mean_exp(log_weight) - leave_one_out_bounds(log_weight) - weights
    if log_prior is None:
        return (learning_signal * log_q).sum(0)
    return (learning_signal * log_q + weights * log_prior).sum(0)


def vimco(model: HelmholtzMachine, x: torch.Tensor, num_samples: int = 2, generator: torch.Generator | None = None) -> ObjectiveOutput:
    """L_k of x ``[B, D_x]`` for theta and VIMCO's surrogate for phi; k = ``num_samples`` >= 2. Returns ``[B]`` tensors."""
    if num_samples < 2:
        raise ValueError(f"vimco needs at least 2 samples for its baselines (got {num_samples})")
    samples = importance_samples(model, x, num_samples, generator, reparameterize=False)
    bound = log_mean_exp(samples.log_weights)
    phi_surrogate = vimco_phi_surrogate_from_log_weight(samples.log_weights, samples.log_proposal, samples.log_prior)
    return ObjectiveOutput(bound=bound.detach(), theta_surrogate=bound, phi_surrogate=phi_surrogate)
