"""The Helmholtz machine: a prior p(z), a generative network p_theta(x|z), a recognition network q_phi(z|x).

theta (prior and generative networks) and phi (recognition networks) are kept apart so that each
learning algorithm can say which group each of its terms moves. With L stochastic layers the
latent is the flat vector z = [z_1, ..., z_L] (see :mod:`vaelab.models.chain`); x depends on z_1 only.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution

from vaelab.models.chain import Chain
from vaelab.models.sampling import sample


class HelmholtzMachine(nn.Module):
    """p_theta(x, z) = p(z) p_theta(x | z) with recognition model q_phi(z | x).

    Args:
        prior: module whose ``forward()`` gives p(z_L), event shape ``[D_L]``.
        generative: module mapping z_1 ``[..., D_1]`` to p_theta(x | z_1), event shape ``[data_dim]``.
        recognition: module mapping x ``[..., data_dim]`` to q_phi(z_1 | x), event shape ``[D_1]``.
        upper_generative: layers l = 1..L-1 mapping z_{l+1} to p(z_l | z_{l+1}) (none for one layer).
        upper_recognition: layers l = 1..L-1 mapping z_l to q(z_{l+1} | z_l).
        latent_dims: (D_1, ..., D_L); an int for one layer.
        data_shape: the shape of one example, e.g. ``(C, H, W)``; x is held flat, ``[..., prod(data_shape)]``
            (default: unknown, the flat ``(data_dim,)`` that ``sample`` then returns).
    """

    def __init__(
        self,
        prior: nn.Module,
        generative: nn.Module,
        recognition: nn.Module,
        latent_dims: int | tuple[int, ...],
        upper_generative: list[nn.Module] = (),
        upper_recognition: list[nn.Module] = (),
        data_shape: tuple[int, ...] | None = None,
    ):
        super().__init__()
        self.data_shape = None if data_shape is None else tuple(data_shape)
        self.prior = prior
        self.generative = generative
        self.recognition = recognition
        self.upper_generative = nn.ModuleList(upper_generative)
        self.upper_recognition = nn.ModuleList(upper_recognition)
        self.latent_dims = (latent_dims,) if isinstance(latent_dims, int) else tuple(latent_dims)
        self.latent_dim = sum(self.latent_dims)
        self._check_layers()

    def _check_layers(self) -> None:
        if not len(self.upper_generative) == len(self.upper_recognition) == len(self.latent_dims) - 1:
            raise ValueError("a model with L stochastic layers needs L - 1 upper generative and recognition layers")

    def prior_distribution(self) -> Distribution:
        """p(z) over the flat z, event shape ``[latent_dim]``."""
        top = self.prior()
        if not self.upper_generative:
            return top
        return Chain(top, list(self.upper_generative)[::-1], self.latent_dims[::-1], top_down=True)

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p_theta(x | z) for z ``[..., latent_dim]``; batch shape ``[...]``."""
        return self.generative(z[..., : self.latent_dims[0]])

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p_theta(x | z) ``[...]`` for z ``[..., latent_dim]`` and x broadcastable to ``[..., data_dim]``."""
        return self.generative.log_prob(z[..., : self.latent_dims[0]], x)

    def posterior(self, x: torch.Tensor) -> Distribution:
        """q_phi(z | x) for x ``[..., data_dim]``; batch shape ``[...]``."""
        first = self.recognition(x)
        if not self.upper_recognition:
            return first
        return Chain(first, list(self.upper_recognition), self.latent_dims)

    def generative_parameters(self) -> list[nn.Parameter]:
        """theta: the prior's and the generative networks' parameters."""
        return [*self.prior.parameters(), *self.generative.parameters(), *self.upper_generative.parameters()]

    def recognition_parameters(self) -> list[nn.Parameter]:
        """phi: the recognition networks' parameters."""
        return [*self.recognition.parameters(), *self.upper_recognition.parameters()]

    def encode(self, x: torch.Tensor) -> Distribution:
        """q_phi(z | x) for x ``[B, *data_shape]`` (or flat ``[B, data_dim]``): a ``torch.distributions``
        object with batch shape ``[B]`` and event ``[latent_dim]``."""
        return self.posterior(x.reshape(x.shape[0], -1))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, mean: bool = True) -> torch.Tensor:
        """n images ``[n, *data_shape]`` from z ~ p(z): E[x | z] (``mean=True``: Bernoulli
        probabilities, the other families' means), else a draw x ~ p(x | z)."""
        z = sample(self.prior_distribution(), (n,), generator)
        likelihood = self.likelihood(z)
        x = likelihood.mean if mean else sample(likelihood, (), generator)
        return x.reshape(n, *self.data_shape) if self.data_shape else x
