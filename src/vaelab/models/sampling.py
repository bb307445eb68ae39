"""Sampling from ``torch.distributions`` with an explicit ``torch.Generator``.

``Distribution.rsample`` draws from the global RNG; vaelab passes a generator instead so that a
run's randomness is one seeded object, saved in checkpoints and restored on resume.
:func:`ancestral_sample` draws (z, x) from a model's generative half: the sleep phase's dreams,
the bounds study's synthetic data and the report's sample figure all come from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.distributions import (
    Bernoulli,
    Distribution,
    Independent,
    MixtureSameFamily,
    Normal,
    TransformedDistribution,
)

from vaelab.draws import bernoulli_draw
from vaelab.likelihoods.family import FamilyDistribution
from vaelab.models.chain import Chain

if TYPE_CHECKING:  # for the annotation only: helmholtz imports this module
    from vaelab.models.helmholtz import HelmholtzMachine


def sample(
    distribution: Distribution, sample_shape: torch.Size | tuple[int, ...], generator: torch.Generator | None
) -> torch.Tensor:
    """Draw ``sample_shape + batch_shape + event_shape`` samples.

    Gaussians are reparameterised (z = mu + sigma * eps, eps ~ N(0, I)), so gradients flow to
    their parameters; Bernoulli samples carry no gradient. A transformed distribution (e.g.
    ``HalfNormal``, |N(0, sigma^2)|) transforms a sample of its base distribution. A mixture draws
    a component, then a sample of it (no gradient reaches the mixture weights); a :class:`Chain`
    draws its blocks in order, each given the one before. A likelihood family's own distribution
    (:class:`~vaelab.likelihoods.family.FamilyDistribution`: categorical, discretized, mixture)
    draws with its family's sampler (no gradient). A flow posterior
    (:class:`~vaelab.posteriors.flow.FlowPosterior`) pushes a reparameterised draw of its base through its
    flow, and a ladder's q or p (:class:`~vaelab.models.ladder.LadderDistribution`) draws top-down:
    each offers ``rsample_and_log_prob``.
    """
    if isinstance(distribution, FamilyDistribution):
        return distribution.draw(sample_shape, generator)
    if hasattr(distribution, "rsample_and_log_prob"):  # a flow posterior, a ladder's top-down pass
        return distribution.rsample_and_log_prob(sample_shape, generator)[0]
    if isinstance(distribution, Chain):
        blocks = [sample(distribution.first, sample_shape, generator)]
        for layer in distribution.conditionals:
            blocks.append(sample(layer(blocks[-1]), (), generator))
        return distribution.join(blocks)
    if isinstance(distribution, MixtureSameFamily):
        return _sample_mixture(distribution, torch.Size(sample_shape), generator)
    base = distribution.base_dist if isinstance(distribution, Independent) else distribution
    if isinstance(base, TransformedDistribution):
        value = sample(base.base_dist, sample_shape, generator)
        for transform in base.transforms:
            value = transform(value)
        return value
    shape = distribution._extended_shape(torch.Size(sample_shape))
    if isinstance(base, Normal):
        noise = torch.randn(shape, generator=generator, dtype=base.loc.dtype, device=base.loc.device)
        return base.loc + base.scale * noise
    if isinstance(base, Bernoulli):
        return bernoulli_draw(base.probs.expand(shape), generator)
    raise TypeError(f"sampling with a generator is not implemented for {type(base).__name__}")


def sample_and_log_prob(
    distribution: Distribution, sample_shape: torch.Size | tuple[int, ...], generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sample` and the draws' log-density ``sample_shape + batch_shape``: in one pass where the
    distribution offers it (a flow posterior, whose log q of a given z may need an inverse it lacks)."""
    if hasattr(distribution, "rsample_and_log_prob"):  # a flow posterior, a ladder's top-down pass
        return distribution.rsample_and_log_prob(sample_shape, generator)
    value = sample(distribution, sample_shape, generator)
    return value, distribution.log_prob(value)


def _sample_mixture(mixture: MixtureSameFamily, sample_shape: torch.Size, generator: torch.Generator | None) -> torch.Tensor:
    """A mixture of diagonal Gaussians with no batch shape (the priors): a component index per
    draw, then that component's reparameterised sample; returns ``sample_shape + event``."""
    base = mixture.component_distribution.base_dist
    if mixture.batch_shape or not isinstance(base, Normal):
        raise TypeError("sampling with a generator is implemented for unbatched mixtures of diagonal Gaussians only")
    probs = mixture.mixture_distribution.probs
    index = torch.multinomial(probs, max(sample_shape.numel(), 1), replacement=True, generator=generator).reshape(sample_shape)
    return sample(Independent(Normal(base.loc[index], base.scale[index]), 1), (), generator)


@torch.no_grad()
def ancestral_sample(
    model: HelmholtzMachine, sample_shape: torch.Size | tuple[int, ...], generator: torch.Generator | None, decoder_mean: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw from the generative model top-down: z ~ p_theta(z), then x ~ p_theta(x | z).

    The draws are data (dreams, synthetic test points, figures), so no gradient reaches theta.
    ``decoder_mean=True`` returns E_theta[x | z] (pixel probabilities or Gaussian means) in place
    of a sample of x, as sample figures show; it draws nothing more from ``generator``.

    Returns:
        z ``sample_shape + [D_z]`` and x ``sample_shape + [D_x]``.
    """
    z = sample(model.prior_distribution(), sample_shape, generator)
    likelihood = model.likelihood(z)
    return z, likelihood.mean if decoder_mean else sample(likelihood, (), generator)
