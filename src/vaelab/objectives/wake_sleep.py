"""Wake-sleep (Hinton, Dayan, Frey & Neal 1995; the seed's section 1.2).

Wake phase, theta only:  maximise (1/m) sum_j log p_theta(x, z_j),  z_j ~ q_phi(z | x).
Sleep phase, phi only:   maximise (1/m) sum_j log q_phi(z_j | x_j),  (z_j, x_j) ~ p_theta(z) p_theta(x | z),
with the dreamed x sampled from the likelihood (not its mean). With a fixed prior the wake term's
gradient is that of E_q[log p_theta(x | z)], as the seed writes it.
"""

from __future__ import annotations

import torch

from vaelab.models import HelmholtzMachine
from vaelab.objectives.core import ObjectiveOutput
from vaelab.sampling import sample


def wake_sleep(
    model: HelmholtzMachine,
    x: torch.Tensor,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
) -> ObjectiveOutput:
    """Wake and sleep surrogates for a batch x ``[B, D_x]``, m = ``num_samples`` samples each.

    The sleep phase draws m dreams per batch row (m * B in all), so its surrogate is ``[B]`` too.
    The reported bound is the ELBO at the wake samples: wake-sleep optimises no bound itself.
    """
    posterior = model.posterior(x)
    # detach: the wake phase treats q's samples as observed data, so no gradient reaches phi.
    z = sample(posterior, (num_samples,), generator).detach()  # [m, B, D]
    log_joint = model.prior_distribution().log_prob(z) + model.log_likelihood(x, z)  # [m, B]
    wake = log_joint.mean(0)

    with torch.no_grad():  # dreams are data for the sleep phase: no gradient reaches theta
        z_dream = sample(model.prior_distribution(), (num_samples, x.shape[0]), generator)  # [m, B, D]
        x_dream = sample(model.likelihood(z_dream), (), generator)  # [m, B, D_x]
        elbo = (log_joint - posterior.log_prob(z)).mean(0)
    sleep = model.posterior(x_dream).log_prob(z_dream).mean(0)
    return ObjectiveOutput(bound=elbo, theta_surrogate=wake, phi_surrogate=sleep)
