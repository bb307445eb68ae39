"""Reweighted wake-sleep (Bornschein & Bengio 2015; Le, Kosiorek, Siddharth, Teh & Wood 2019).

theta ascends L_k (its gradient is sum_i w~_i d log p_theta(x, z_i) / dtheta). phi descends an
estimate of KL(p_theta(z | x) || q_phi(z | x)) by one of
    wake-phi:  sum_i w~_i d log q_phi(z_i | x) / dphi     (self-normalised importance sampling),
    sleep-phi: d log q_phi(z | x) / dphi at dreams (z, x) ~ p_theta   (as in wake-sleep),
    mix:       the average of the two.
Only scores of q are needed, so Bernoulli latents train as well as Gaussian ones. ``rws_dreg``
replaces wake-phi by its doubly reparameterised form sum_i (w~_i - w~_i^2) d log w_i / dz_i dz_i / dphi
(Tucker et al. 2018), for reparameterisable latents.

The surrogates are written first as functions of log-weights ``[k, B]`` alone (as Le et al.'s
``losses.py`` does), so that their arithmetic is testable on hand-made tensors; the objectives
draw the samples and call them.
"""

from __future__ import annotations

import torch

from vaelab.models import HelmholtzMachine
from vaelab.objectives.core import (
    ObjectiveOutput,
    flow_pathwise_log_weights,
    importance_samples,
    log_mean_exp,
    normalized_weights,
    pathwise_log_weights,
    sleep_phase,
)
from vaelab.posteriors.flow import FlowPosterior


def wake_phi_surrogate_from_log_weight(log_weight: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Wake-phi's surrogate sum_i w~_i log q_phi(z_i | x) ``[B]`` (Le et al. 2019).

    Args:
        log_weight: ``[k, B]`` log w_i; only their normalised values w~_i enter, without gradient.
        log_q: ``[k, B]`` log q_phi(z_i | x) at detached samples z_i.

    Returns:
        ``[B]``; its gradient w.r.t. ``log_q`` is w~, so its phi-gradient is the self-normalised
        importance-sampling estimate of E_{p_theta(z | x)}[d log q_phi(z | x) / dphi], i.e. minus
        that of KL(p_theta(z | x) || q_phi(z | x)).
    """
    return (normalized_weights(log_weight) * log_q).sum(0)


def rws_dreg_phi_surrogate_from_log_weight(log_weight: torch.Tensor, pathwise_log_weight: torch.Tensor) -> torch.Tensor:
    """Wake-phi's doubly reparameterised surrogate sum_i (w~_i - w~_i^2) log w'_i ``[B]`` (Tucker et al. 2018).

    Args:
        log_weight: ``[k, B]`` log w_i; only their normalised values w~_i enter, without gradient.
        pathwise_log_weight: ``[k, B]`` log w'_i, whose phi-gradient is the pathwise term
            d log w_i / dz_i dz_i / dphi alone (:func:`vaelab.objectives.core.pathwise_log_weights`).

    Returns:
        ``[B]``; its gradient w.r.t. ``pathwise_log_weight`` is w~ - w~^2.
    """
    weights = normalized_weights(log_weight)
    return ((weights - weights**2) * pathwise_log_weight).sum(0)


def rws(
    model: HelmholtzMachine,
    x: torch.Tensor,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    rws_phi: str = "wake",
) -> ObjectiveOutput:
    """L_k for theta and the ``rws_phi`` update ('wake', 'sleep' or 'mix') for phi, x ``[B, D_x]``.

    The sleep phase draws k dreams per batch row. Returns ``[B]`` tensors; the bound is L_k.
    """
    samples = importance_samples(model, x, num_samples, generator, reparameterize=False)
    bound = log_mean_exp(samples.log_weights)
    wake = wake_phi_surrogate_from_log_weight(samples.log_weights, samples.log_proposal)
    if rws_phi == "wake":
        phi_surrogate = wake
    elif rws_phi in ("sleep", "mix"):
        sleep = sleep_phase(model, x.shape[0], num_samples, generator)
        phi_surrogate = sleep if rws_phi == "sleep" else (wake + sleep) / 2
    else:
        raise ValueError(f"rws_phi must be 'wake', 'sleep' or 'mix' (got {rws_phi!r})")
    return ObjectiveOutput(bound=bound.detach(), theta_surrogate=bound, phi_surrogate=phi_surrogate)


def rws_dreg(model: HelmholtzMachine, x: torch.Tensor, num_samples: int = 1, generator: torch.Generator | None = None) -> ObjectiveOutput:
    """L_k for theta; phi follows the DReG form of wake-phi. Returns ``[B]`` tensors."""
    posterior = model.posterior(x)
    if isinstance(posterior, FlowPosterior):  # d log q / dz from the flow's steps, no inverse
        log_weights, pathwise = flow_pathwise_log_weights(model, x, posterior, num_samples, generator)
    else:
        samples = importance_samples(model, x, num_samples, generator, posterior)
        log_weights = samples.log_weights
        pathwise = pathwise_log_weights(samples, posterior, model.prior_distribution().log_prob(samples.z.detach()))
    bound = log_mean_exp(log_weights)
    phi_surrogate = rws_dreg_phi_surrogate_from_log_weight(log_weights, pathwise)
    return ObjectiveOutput(bound=bound.detach(), theta_surrogate=bound, phi_surrogate=phi_surrogate)
