"""The shared core of every estimator: log importance weights of a batch.

    log w[k, b] = log p(x_b, z_kb) - log q(z_kb | x_b),   z_kb ~ q_phi(z | x_b)

Samples come first: ``z`` is ``[k, B, D]`` and every log-density is ``[k, B]``. The ELBO is the
mean of ``log w`` over k, and the importance-weighted bound L_k (Burda et al. 2015) is its
log-mean-exp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import Distribution

from vaelab.models import HelmholtzMachine
from vaelab.models.sampling import ancestral_sample, sample, sample_and_log_prob
from vaelab.posteriors.flow import FlowPosterior


@dataclass(frozen=True)
class ImportanceSamples:
    """k samples per example from q(z|x) and the log-densities that weigh them.

    Attributes:
        z: ``[k, B, D]`` samples; reparameterised ones carry gradients to phi.
        log_prior: ``[k, B]`` log p(z).
        log_likelihood: ``[k, B]`` log p_theta(x | z).
        log_proposal: ``[k, B]`` log q_phi(z | x).
    """

    z: torch.Tensor
    log_prior: torch.Tensor
    log_likelihood: torch.Tensor
    log_proposal: torch.Tensor

    @property
    def log_joint(self) -> torch.Tensor:
        """``[k, B]`` log p_theta(x, z)."""
        return self.log_prior + self.log_likelihood

    @property
    def log_weights(self) -> torch.Tensor:
        """``[k, B]`` log w = log p_theta(x, z) - log q_phi(z | x)."""
        return self.log_joint - self.log_proposal


@dataclass(frozen=True)
class ObjectiveOutput:
    """What an objective returns for a batch of B examples; every field is ``[B]``, in nats.

    ``bound`` is the reported value (no gradient). Maximising ``theta_surrogate`` by gradient
    ascent on theta, and ``phi_surrogate`` on phi, is the algorithm; the two may be one tensor.
    """

    bound: torch.Tensor
    theta_surrogate: torch.Tensor
    phi_surrogate: torch.Tensor


def importance_samples(
    model: HelmholtzMachine,
    x: torch.Tensor,
    num_samples: int,
    generator: torch.Generator | None,
    posterior: Distribution | None = None,
    reparameterize: bool = True,
) -> ImportanceSamples:
    """Draw ``num_samples`` z per row of x ``[B, D_x]`` from q_phi(z|x) and score them.

    ``posterior`` may be passed when the caller already computed q_phi(z | x).
    ``reparameterize=False`` detaches z, as score-function estimators (RWS, VIMCO) need: phi
    then enters the log-weights only through log q_phi(z | x).
    """
    if posterior is None:
        posterior = model.posterior(x)
    if reparameterize:
        z, log_proposal = sample_and_log_prob(posterior, (num_samples,), generator)
    else:
        z = sample(posterior, (num_samples,), generator).detach()
        log_proposal = posterior.log_prob(z)
    return ImportanceSamples(
        z=z,
        log_prior=model.prior_distribution().log_prob(z),
        log_likelihood=model.log_likelihood(x, z),
        log_proposal=log_proposal,
    )


def log_mean_exp(values: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/n) sum_i exp(values_i) along ``dim``, computed stably (logsumexp)."""
    return torch.logsumexp(values, dim) - math.log(values.shape[dim])


def normalized_weights(log_weights: torch.Tensor) -> torch.Tensor:
    """Self-normalised importance weights w_i / sum_j w_j ``[k, B]``, without gradient."""
    return torch.softmax(log_weights.detach(), dim=0)


def pathwise_log_weights(samples: ImportanceSamples, posterior: Distribution, stopped_log_prior: torch.Tensor) -> torch.Tensor:
    """``[k, B]`` log-weights whose phi-gradient is the pathwise term alone (Tucker et al. 2018):

        d/dphi [log w(z(phi), phi) + log q_phi(stop(z)) - log p(stop(z))] = d log w / dz * dz / dphi,

    the second term cancelling the score term -d log q_phi(z) / dphi of the first, and the third
    (``stopped_log_prior``, ``[k, B]``, passed in because DReG reuses it) the prior's own
    dependence on phi where it has one (the VampPrior). A surrogate only: its value is not log w.
    """
    return samples.log_weights + posterior.log_prob(samples.z.detach()) - stopped_log_prior


def flow_pathwise_log_weights(
    model: HelmholtzMachine, x: torch.Tensor, posterior: FlowPosterior, num_samples: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`pathwise_log_weights` for a flow posterior, which may lack log q of a given z: the
    ``[k, B]`` log-weights of z drawn as :func:`importance_samples` draws them, and the surrogate

        log p(x, z) - stop(d log q / dz) . z,

    whose phi-gradient is (d log w / dz) dz / dphi, every q parameter (the flow's too) under the
    stop-gradient; d log q / dz comes from the flow's steps (:meth:`~vaelab.posteriors.flow.FlowPosterior.rsample_with_score`).
    """
    z, log_q, score = posterior.rsample_with_score((num_samples,), generator)
    log_joint = model.prior_distribution().log_prob(z) + model.log_likelihood(x, z)
    return log_joint - log_q, log_joint - (score * z).sum(-1)


def sleep_phase(model: HelmholtzMachine, batch_size: int, num_samples: int, generator: torch.Generator | None) -> torch.Tensor:
    """``[B]`` mean of log q_phi(z | x) over ``num_samples`` dreams (z, x) ~ p_theta(z) p_theta(x | z) per row.

    The dreams are data: no gradient reaches theta; x is sampled from the likelihood, not its mean.
    """
    z_dream, x_dream = ancestral_sample(model, (num_samples, batch_size), generator)  # [m, B, D], [m, B, D_x]
    return model.posterior(x_dream).log_prob(z_dream).mean(0)


def block_bound(log_weights: torch.Tensor, k: int) -> torch.Tensor:
    """Estimate L_k ``[B]`` from K samples' log-weights ``[K, B]``, k dividing K.

    The K samples form K / k disjoint blocks of k; each block's log-mean-exp is an unbiased draw
    of L_k, and their average is the estimate (lower variance than a single draw).
    """
    total = log_weights.shape[0]
    if total % k:
        raise ValueError(f"k = {k} must divide the number of samples {total}")
    blocks = log_weights.reshape(total // k, k, *log_weights.shape[1:])
    return log_mean_exp(blocks, dim=1).mean(0)
