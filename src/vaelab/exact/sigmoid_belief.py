"""A sigmoid belief network with a few binary latents, whose log p(x) is an exact finite sum.

    p(z) = prod_k Bernoulli(z_k; sigmoid(a_k)),          z in {0, 1}^K,
    p(x | z) = prod_d Bernoulli(x_d; sigmoid(W z + b)_d),
    q(z | x) = prod_k Bernoulli(z_k; sigmoid(A x + c)_k),
    log p(x) = logsumexp over the 2^K configurations z of [log p(z) + log p(x | z)].

The recognition model is hand-set rather than learned: its log-odds are the prior's plus the
first-order change of log p(x | z) in z_k around z = 0, A = W^T, c = a - W^T sigmoid(b). It
covers every configuration (so L_k converges to log p(x)) without being the exact posterior.
"""

from __future__ import annotations

import torch

from vaelab.models import BernoulliLayer, BernoulliPrior, HelmholtzMachine


def _affine_bernoulli(weight: torch.Tensor, bias: torch.Tensor) -> BernoulliLayer:
    """u -> prod Bernoulli(sigmoid(W u + b)): a Bernoulli layer without hidden units."""
    layer = BernoulliLayer(weight.shape[1], weight.shape[0], (), "relu").to(weight.dtype)
    with torch.no_grad():
        layer.logits.weight.copy_(weight)
        layer.logits.bias.copy_(bias)
    return layer


def sigmoid_belief_model(latent_dim: int, data_dim: int, generator: torch.Generator, weight_scale: float = 2.0) -> HelmholtzMachine:
    """A random float64 sigmoid belief network: W ~ N(0, weight_scale^2), a, b ~ N(0, 1)."""
    options = {"generator": generator, "dtype": torch.float64}
    prior_logits = torch.randn(latent_dim, **options)
    weight = weight_scale * torch.randn(data_dim, latent_dim, **options)
    bias = torch.randn(data_dim, **options)
    generative = _affine_bernoulli(weight, bias)
    recognition = _affine_bernoulli(weight.T, prior_logits - weight.T @ torch.sigmoid(bias))
    return HelmholtzMachine(BernoulliPrior(prior_logits), generative, recognition, latent_dim)


def all_configurations(latent_dim: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Every z in {0, 1}^K, ``[2^K, K]``."""
    return torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=dtype)] * latent_dim).reshape(-1, latent_dim)


@torch.no_grad()
def enumerated_log_marginal(model: HelmholtzMachine, x: torch.Tensor) -> torch.Tensor:
    """Exact log p(x) ``[B]`` of a model with binary latents, summing p(x, z) over all 2^K values of z."""
    z = all_configurations(model.latent_dim, x.dtype)  # [S, K]
    log_joint = model.prior_distribution().log_prob(z).unsqueeze(1) + model.log_likelihood(x, z.unsqueeze(1))  # [S, B]
    return torch.logsumexp(log_joint, 0)
