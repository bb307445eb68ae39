"""Ladder VAEs: top-down inference that shares the generative path (Sonderby et al. 2016; NVAE).

With stochastic layers z_1 (next to x), ..., z_L, each block z_l of shape ``latent_shapes[l]``
(``(D_l,)`` for the MLP ladder, ``(c_l, h_l, w_l)`` spatial latents for the conv one):

    bottom-up, deterministic:  d_1 = f_1(x),  d_l = f_l(d_{l-1})
    top-down, deterministic:   t_l = g_l(z_{l+1}, t_{l+1})       (t_L absent; t_{l+1} is the skip path)
    prior:      p(z_L) = N(0, I),        p(z_l | z_>l) = N(mu_p(t_l), sigma_p(t_l)^2)
    posterior:  q(z_L | x) = N(mu(d_L), sigma(d_L)^2), and for l < L, by ``merge``:
      'precision' (Sonderby et al.'s precision-weighted merge of the bottom-up estimate
                   N(mu_hat(d_l), sigma_hat(d_l)^2) with the prior):
                   sigma_q^-2 = sigma_hat^-2 + sigma_p^-2,  mu_q = sigma_q^2 (mu_hat sigma_hat^-2 + mu_p sigma_p^-2)
      'residual'  (NVAE's residual normal): q = N(mu_p + delta_mu, (sigma_p * delta_sigma)^2),
                   (delta_mu, delta_sigma) from [d_l, t_l]
    likelihood: p(x | z_1)

q(z | x) = prod_l q(z_l | z_>l, x) and p(z) share t_l: theta (the top-down path, the prior's heads
and the decoder) is the generative model, phi (the bottom-up path and the posterior's heads) the
inference model. Both are distributions over the flat z = [z_1, ..., z_L] ``[..., sum D_l]``, as
every objective expects: a given z fixes each t_l, so log q(z | x) and log p(z) are exact for any z
(the top-down pass is run once per density asked for). With one layer, q(z_1 | x) = N(mu(d_1), sigma(d_1)^2)
and p(z_1) = N(0, I): today's one-layer VAE (the tests hold the two equal on the same weights).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal, constraints
from torch.nn import functional as F

from vaelab.likelihoods.gaussian import MIN_SCALE
from vaelab.models.backend import MLP
from vaelab.models.helmholtz import HelmholtzMachine
from vaelab.models.priors import StandardNormalPrior

MERGES = ("precision", "residual")


def _gaussian(params: torch.Tensor, event_dims: int) -> Independent:
    """N(mean, scale^2) from ``params`` ``[..., 2, *shape]`` (mean, raw scale; scale = softplus(raw) + MIN_SCALE)."""
    loc, raw = params.unbind(-1 - event_dims)
    return Independent(Normal(loc, F.softplus(raw) + MIN_SCALE, validate_args=False), event_dims, validate_args=False)


class LadderNetworks(nn.Module):
    """The deterministic networks of a ladder, for blocks of any shape.

    Subclasses build, for layers l = 0..L-1 (z_1..z_L):

    - ``bottom_up[l]``: d_{l-1} (x for l = 0) -> d_l;
    - ``posterior_heads[l]``: the bottom-up estimate ``[..., 2, *latent_shapes[l]]`` from d_l
      ('precision' merge, and the top layer), or from [d_l, t_l] ('residual' merge, l < L-1);
    - ``top_down[l]`` (l < L-1): (z_{l+1}, t_{l+1} or None) -> t_l;
    - ``prior_heads[l]`` (l < L-1): p(z_l | z_>l)'s parameters ``[..., 2, *latent_shapes[l]]`` from t_l,

    each taking and returning tensors with any leading dimensions.
    """

    def __init__(self, latent_shapes: list[tuple[int, ...]], merge: str):
        super().__init__()
        if merge not in MERGES:
            raise ValueError(f"merge must be one of {', '.join(MERGES)} (got {merge!r})")
        self.latent_shapes = [tuple(shape) for shape in latent_shapes]
        self.merge = merge

    def bottom_up_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """d_1, ..., d_L for x ``[..., data_dim]``."""
        features = []
        for block in self.bottom_up:
            x = block(x)
            features.append(x)
        return features

    def top_down_features(self, layer: int, z_above: torch.Tensor, features_above: torch.Tensor | None) -> torch.Tensor:
        """t_l from z_{l+1} and t_{l+1} (None below the top layer)."""
        raise NotImplementedError

    def prior_head(self, layer: int, features: torch.Tensor) -> torch.Tensor:
        """p(z_l | z_>l)'s mean and raw scale ``[..., 2, *latent_shapes[l]]`` from t_l."""
        raise NotImplementedError

    def posterior_head(self, layer: int, bottom_up: torch.Tensor, top_down: torch.Tensor | None) -> torch.Tensor:
        """The bottom-up estimate (``top_down`` None) or the residual merge's shift and raw factor
        ``[..., 2, *latent_shapes[l]]`` from d_l (and t_l)."""
        raise NotImplementedError


class MLPLadder(LadderNetworks):
    """The MLP ladder: bottom-up MLPs (``hidden`` from x, ``upper_hidden`` above), top-down MLPs of
    ``upper_hidden`` on [z_{l+1}, t_{l+1}], linear heads."""

    def __init__(self, data_dim: int, latent_dims: tuple[int, ...], hidden: tuple[int, ...], upper_hidden: tuple[int, ...], activation: str, merge: str):
        super().__init__([(dim,) for dim in latent_dims], merge)
        self.bottom_up = nn.ModuleList([MLP(data_dim, hidden, activation)])
        for _ in latent_dims[1:]:
            self.bottom_up.append(MLP(self.bottom_up[-1].out_features, upper_hidden, activation))
        top = len(latent_dims) - 1
        self.top_down = nn.ModuleList(
            MLP(latent_dims[layer + 1] + (upper_hidden[-1] if layer + 1 < top else 0), upper_hidden, activation) for layer in range(top)
        )
        self.prior_heads = nn.ModuleList(nn.Linear(upper_hidden[-1], 2 * latent_dims[layer]) for layer in range(top))
        self.posterior_heads = nn.ModuleList(
            nn.Linear(self.bottom_up[layer].out_features + (upper_hidden[-1] if merge == "residual" and layer < top else 0), 2 * dim)
            for layer, dim in enumerate(latent_dims)
        )

    def top_down_features(self, layer: int, z_above: torch.Tensor, features_above: torch.Tensor | None) -> torch.Tensor:
        inputs = z_above if features_above is None else torch.cat([z_above, features_above], -1)
        return self.top_down[layer](inputs)

    def prior_head(self, layer: int, features: torch.Tensor) -> torch.Tensor:
        return self.prior_heads[layer](features).unflatten(-1, (2, -1))

    def posterior_head(self, layer: int, bottom_up: torch.Tensor, top_down: torch.Tensor | None) -> torch.Tensor:
        if top_down is not None:
            bottom_up = torch.cat([bottom_up.expand(*top_down.shape[:-1], -1), top_down], -1)
        return self.posterior_heads[layer](bottom_up).unflatten(-1, (2, -1))


class LadderPass:
    """One top-down pass: given or drawn blocks, and each layer's log q and log p.

    Args:
        model: the :class:`LadderVAE`.
        features: the bottom-up features d_1..d_L of x (batch ``[B]``), or None for the prior alone.
    """

    def __init__(self, model: LadderVAE, features: list[torch.Tensor] | None):
        self.model = model
        self.features = features

    def run(
        self,
        blocks: list[torch.Tensor] | None = None,
        sample_shape: torch.Size = torch.Size(),
        generator: torch.Generator | None = None,
        means: bool = False,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Blocks z_1..z_L (``blocks`` if given; else drawn with ``generator``, or each layer's
        conditional mean with ``means``) and the per-layer log q (empty for the prior) and log p ``[...]``."""
        networks, shapes = self.model.networks, self.model.networks.latent_shapes
        top = len(shapes) - 1
        drawn: list[torch.Tensor] = [None] * len(shapes)
        log_q: list[torch.Tensor] = [None] * len(shapes)
        log_p: list[torch.Tensor] = [None] * len(shapes)
        features_above = None
        for layer in reversed(range(len(shapes))):
            dims = len(shapes[layer])
            if layer == top:
                top_down = None
                prior = self.model.top_prior()
            else:
                top_down = networks.top_down_features(layer, drawn[layer + 1], features_above)
                prior = _gaussian(networks.prior_head(layer, top_down), dims)
            posterior = None if self.features is None else self._posterior(layer, prior, top_down, dims)
            sampled = posterior or prior
            if blocks is not None:
                value = blocks[layer]
            elif means:
                value = sampled.mean.expand(*sample_shape, *sampled.batch_shape, *shapes[layer]) if layer == top else sampled.mean
            else:
                shape = (*(sample_shape if layer == top else ()), *sampled.batch_shape, *shapes[layer])
                base = sampled.base_dist
                noise = torch.randn(shape, generator=generator, dtype=base.loc.dtype, device=base.loc.device)
                value = base.loc + base.scale * noise
            drawn[layer] = value
            log_p[layer] = prior.log_prob(value)
            if posterior is not None:
                log_q[layer] = posterior.log_prob(value)
            features_above = top_down
        return drawn, ([] if self.features is None else log_q), log_p

    def _posterior(self, layer: int, prior: Independent, top_down: torch.Tensor | None, dims: int) -> Independent:
        """q(z_l | z_>l, x) from the layer's prior and the features (see the module's docstring)."""
        networks = self.model.networks
        if top_down is None or networks.merge == "precision":
            estimate = _gaussian(networks.posterior_head(layer, self.features[layer], None), dims)
            if top_down is None:
                return estimate
            estimate_precision = estimate.base_dist.scale.pow(-2)
            prior_precision = prior.base_dist.scale.pow(-2)
            variance = 1 / (estimate_precision + prior_precision)
            loc = variance * (estimate.base_dist.loc * estimate_precision + prior.base_dist.loc * prior_precision)
            return Independent(Normal(loc, variance.sqrt(), validate_args=False), dims, validate_args=False)
        delta = networks.posterior_head(layer, self.features[layer], top_down)
        shift, raw = delta.unbind(-1 - dims)
        # softplus(raw) / softplus(0): delta_sigma = 1 at raw = 0, so q starts at the prior's scale
        factor = F.softplus(raw) / math.log(2) + MIN_SCALE
        return Independent(Normal(prior.base_dist.loc + shift, prior.base_dist.scale * factor, validate_args=False), dims, validate_args=False)


class LadderDistribution(Distribution):
    """q(z | x) (``features`` given) or p(z) (``features`` None) of a ladder, over the flat z ``[..., sum D_l]``."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, model: LadderVAE, features: list[torch.Tensor] | None, batch_shape: torch.Size):
        self.model = model
        self.ladder = LadderPass(model, features)
        super().__init__(batch_shape, torch.Size([model.latent_dim]), validate_args=False)

    def _blocks(self, z: torch.Tensor) -> list[torch.Tensor]:
        sizes = self.model.latent_dims
        return [block.unflatten(-1, shape) for block, shape in zip(z.split(sizes, -1), self.model.networks.latent_shapes)]

    def _flat(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([block.flatten(block.dim() - len(shape)) for block, shape in zip(blocks, self.model.networks.latent_shapes)], -1)

    def _layer_terms(self, drawn_log_q: list[torch.Tensor], drawn_log_p: list[torch.Tensor]) -> list[torch.Tensor]:
        return drawn_log_q if self.ladder.features is not None else drawn_log_p

    def rsample_and_log_prob(self, sample_shape=torch.Size(), generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised draw ``[*sample_shape, *batch, sum D]`` and its log density, in one pass."""
        blocks, log_q, log_p = self.ladder.run(sample_shape=torch.Size(sample_shape), generator=generator)
        return self._flat(blocks), sum(self._layer_terms(log_q, log_p))

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def layer_log_probs(self, z: torch.Tensor) -> list[torch.Tensor]:
        """log q(z_l | z_>l, x) (or log p(z_l | z_>l)) ``[...]`` of each layer, ordered z_1, ..., z_L."""
        _, log_q, log_p = self.ladder.run(self._blocks(z))
        return self._layer_terms(log_q, log_p)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return sum(self.layer_log_probs(z))

    @property
    def mean(self) -> torch.Tensor:
        """Each layer's conditional mean given the means above it (not E[z])."""
        return self._flat(self.ladder.run(means=True)[0])


class LadderVAE(HelmholtzMachine):
    """A Helmholtz machine whose prior and posterior are a ladder's top-down pass (module docstring).

    Args:
        networks: the :class:`LadderNetworks` (bottom-up, top-down, heads).
        generative: p(x | z_1), taking the flat z_1 ``[..., D_1]``.
        data_shape: the shape of one example.
    """

    def __init__(self, networks: LadderNetworks, generative: nn.Module, data_shape: tuple[int, ...]):
        dims = tuple(math.prod(shape) for shape in networks.latent_shapes)
        super().__init__(StandardNormalPrior(dims[-1]), generative, networks, dims, data_shape=data_shape)

    @property
    def networks(self) -> LadderNetworks:
        """The ladder's networks, held as ``recognition`` (one module, so the state dict names each parameter once)."""
        return self.recognition

    def _check_layers(self) -> None:
        """A ladder's layers are all in ``networks``; it has no separate upper layers."""

    def top_prior(self) -> Independent:
        """p(z_L) = N(0, I) over the top block's shape."""
        shape = self.networks.latent_shapes[-1]
        top = self.prior()
        return Independent(Normal(top.base_dist.loc.reshape(shape), top.base_dist.scale.reshape(shape), validate_args=False), len(shape), validate_args=False)

    def posterior(self, x: torch.Tensor) -> LadderDistribution:
        return LadderDistribution(self, self.networks.bottom_up_features(x), x.shape[:-1])

    def prior_distribution(self) -> LadderDistribution:
        return LadderDistribution(self, None, torch.Size())

    def generative_parameters(self) -> list[nn.Parameter]:
        """theta: the top-down path, the prior's heads and the decoder."""
        return [*self.generative.parameters(), *self.networks.top_down.parameters(), *self.networks.prior_heads.parameters()]

    def recognition_parameters(self) -> list[nn.Parameter]:
        """phi: the bottom-up path and the posterior's heads."""
        return [*self.networks.bottom_up.parameters(), *self.networks.posterior_heads.parameters()]
