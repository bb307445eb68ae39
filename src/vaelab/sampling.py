"""Sampling from ``torch.distributions`` with an explicit ``torch.Generator``.

``Distribution.rsample`` draws from the global RNG; vaelab passes a generator instead so that a
run's randomness is one seeded object, saved in checkpoints and restored on resume.
"""

from __future__ import annotations

import torch
from torch.distributions import Bernoulli, Distribution, Independent, Normal, TransformedDistribution


def sample(
    distribution: Distribution, sample_shape: torch.Size | tuple[int, ...], generator: torch.Generator | None
) -> torch.Tensor:
    """Draw ``sample_shape + batch_shape + event_shape`` samples.

    Gaussians are reparameterised (z = mu + sigma * eps, eps ~ N(0, I)), so gradients flow to
    their parameters; Bernoulli samples carry no gradient. A transformed distribution (e.g.
    ``HalfNormal``, |N(0, sigma^2)|) transforms a sample of its base distribution.
    """
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
        with torch.no_grad():
            return torch.bernoulli(base.probs.expand(shape), generator=generator)
    raise TypeError(f"sampling with a generator is not implemented for {type(base).__name__}")
