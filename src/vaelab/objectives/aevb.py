"""AEVB: the reparameterised ELBO (Kingma & Welling 2013; the homework's section 1.3).

    L(theta, phi; x) = E_q[log p_theta(x | z)] - KL(q_phi(z | x) || p(z)),   z = mu + sigma * eps.

One surrogate moves both parameter groups: its gradient w.r.t. phi flows through the
reparameterised samples. Training may ascend a surrogate other than the ELBO, the reported bound
staying the ELBO: with KL warm-up (Sonderby et al. 2016, "Ladder variational autoencoders")

    E_q[log p_theta(x | z)] - beta * KL,   beta rising from 0 to 1 (``kl_weight``),

and with free bits (Kingma et al. 2016, "Improved variational inference with inverse
autoregressive flow", appendix "free bits") every stochastic layer l's KL counted as
max(lambda, KL_l averaged over the batch).
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution, kl_divergence

from vaelab.models import HelmholtzMachine
from vaelab.models.chain import layer_log_probs
from vaelab.models.sampling import sample
from vaelab.objectives.core import ObjectiveOutput, importance_samples


def aevb(
    model: HelmholtzMachine,
    x: torch.Tensor,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    kl: str = "auto",
    free_bits: float = 0.0,
    kl_weight: float = 1.0,
) -> ObjectiveOutput:
    """The ELBO of x ``[B, D_x]`` estimated with m = ``num_samples`` reparameterised samples.

    ``kl='analytic'`` uses KL(q || p) in closed form (Kingma & Welling's estimator B);
    ``kl='monte-carlo'`` estimates it from the same samples, as written in the original study's 1.3:
    (1/m) sum_j [log p(x|z_j) + log p(z_j) - log q(z_j|x)]; ``kl='auto'`` takes the closed form
    where torch.distributions has one for (q, p) and the Monte Carlo estimator otherwise (mixture
    and VampPrior priors, stacked stochastic layers).

    The surrogate is E_q[log p(x|z)] - ``kl_weight`` * sum_l :func:`free_bits_kl` (KL_l,
    ``free_bits``) over the stochastic layers l; with ``kl_weight=1`` and ``free_bits=0`` it is
    the ELBO itself, bit for bit.

    Returns:
        ``ObjectiveOutput`` with ``[B]`` tensors; the bound is the ELBO estimate, whatever the
        KL weight and free bits.
    """
    if kl not in ("auto", "analytic", "monte-carlo"):
        raise ValueError(f"kl must be 'auto', 'analytic' or 'monte-carlo' (got {kl!r})")
    posterior = model.posterior(x)
    closed_form = None
    if kl != "monte-carlo":
        try:
            closed_form = kl_divergence(posterior, model.prior_distribution())  # [B]
        except NotImplementedError:  # no closed form for this pair
            if kl == "analytic":
                raise ValueError("no closed-form KL for this posterior and prior; use kl 'auto' or 'monte-carlo'") from None
    if closed_form is not None:  # one stochastic layer: the closed form is its KL
        z = sample(posterior, (num_samples,), generator)  # [m, B, D]
        elbo = model.log_likelihood(x, z).mean(0) - closed_form
        layer_kls = [closed_form]
    else:
        samples = importance_samples(model, x, num_samples, generator, posterior)
        elbo = samples.log_weights.mean(0)
        # free bits need each layer's KL; without them the sum is all the surrogate needs
        # (one layer's is the sum: its log q came with z, which a flow posterior cannot score afterwards)
        layer_kls = monte_carlo_layer_kls(model, posterior, samples.z) if free_bits and len(model.latent_dims) > 1 else [(samples.log_proposal - samples.log_prior).mean(0)]
    # ELBO + KL - beta * KL': each term is exactly 0 with beta = 1 and no free bits
    surrogate = elbo + sum(layer_kl - kl_weight * free_bits_kl(layer_kl, free_bits) for layer_kl in layer_kls)
    return ObjectiveOutput(bound=elbo.detach(), theta_surrogate=surrogate, phi_surrogate=surrogate)


def monte_carlo_layer_kls(model: HelmholtzMachine, posterior: Distribution, z: torch.Tensor) -> list[torch.Tensor]:
    """Each stochastic layer's KL estimate ``[B]``, ordered z_1, ..., z_L, from the samples z ``[m, B, D]``:
    the mean over samples of log q(z_l | z_{l-1}) - log p(z_l | z_{l+1}) (z_0 = x; z_{L+1} absent).
    They sum to the Monte Carlo estimate of KL(q(z | x) || p(z))."""
    prior = model.prior_distribution()
    return [(log_q - log_p).mean(0) for log_q, log_p in zip(layer_log_probs(posterior, z), layer_log_probs(prior, z))]


def free_bits_kl(layer_kl: torch.Tensor, free_bits: float) -> torch.Tensor:
    """One layer's KL ``[B]`` under free bits lambda (Kingma et al. 2016): its batch mean is
    max(lambda, mean_b KL_b).

    Per example: KL_b where the batch mean exceeds lambda, else the constant lambda, so no gradient
    flows through a layer whose mean KL is below lambda. ``free_bits=0`` is off: a Monte Carlo KL
    can have a negative batch mean, which max(0, .) would change.
    """
    if not free_bits:
        return layer_kl
    # the batch mean decides, not the gradient: it is a constant of the surrogate
    return torch.where(layer_kl.detach().mean() > free_bits, layer_kl, torch.full_like(layer_kl, free_bits))
