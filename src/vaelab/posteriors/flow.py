"""Flow posteriors: the encoder's diagonal Gaussian pushed through T amortized invertible steps.

    z_0 ~ q0(z_0 | x) = N(mu(x), diag sigma(x)^2),   z = f_T o ... o f_1(z_0),
    log q(z | x) = log q0(z_0 | x) - sum_t log |det df_t / dz_{t-1}|,

each f_t's parameters computed from the encoder's last hidden layer h(x) (its *context*). z and
log q(z | x) come out of one forward pass (:meth:`FlowPosterior.rsample_and_log_prob`); log q of
a given z needs the inverse, which only some families have (:attr:`AmortizedFlow.invertible`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution, Independent, constraints

from vaelab.errors import ConfigError


# Draws of a flow posterior's mean (its own fixed stream, independent of any run's generator).
MEAN_DRAWS = 256


class AmortizedFlow(nn.Module):
    """T steps whose parameters a context vector sets; subclasses implement ``forward``, ``step`` and
    ``solve`` (and ``inverse`` where it is exact and cheap).

    Args:
        latent_dim: D, the width of z.
        context_dim: the width of the context h.
        steps: T.
    """

    name = "flow"
    invertible = False  # whether ``inverse`` is implemented (log q of a given z)

    def __init__(self, latent_dim: int, context_dim: int, steps: int):
        super().__init__()
        self.latent_dim, self.context_dim, self.steps = latent_dim, context_dim, steps

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        """The local parameters ``[..., T, P]`` of the steps for context h ``[..., context_dim]``."""
        raise NotImplementedError

    def step(self, params: torch.Tensor, t: int, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step t: z' = f_t(z) ``[S, ..., D]`` and log |det df_t/dz| ``[S, ...]`` for z ``[S, ..., D]``."""
        raise NotImplementedError

    def solve(self, params: torch.Tensor, t: int, z: torch.Tensor, image: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """v J^{-1} ``[S, ..., D]`` for the row vectors v, J = df_t/dz at z (``image`` = f_t(z), computed from z)."""
        raise NotImplementedError

    def transform(self, params: torch.Tensor, z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z = f(z_0) ``[S, ..., D]`` and sum_t log |det df_t/dz_{t-1}| ``[S, ...]`` for z_0 ``[S, ..., D]`` and params ``[..., T, P]``."""
        z, log_det = z0, z0.new_zeros(z0.shape[:-1])
        for t in range(self.steps):
            z, step_log_det = self.step(params, t, z)
            log_det = log_det + step_log_det
        return z, log_det

    def log_prob_gradient(self, params: torch.Tensor, z0: torch.Tensor, base: Independent) -> torch.Tensor:
        """d log q(z | x) / dz ``[S, ..., D]`` at z = f(z_0), without the inverse (no gradient to anything):

            a_0 = d log q0 / dz_0 = -(z_0 - mu) / sigma^2,   a_t = (a_{t-1} - d log |det J_t| / dz_{t-1}) J_t^{-1},

        since log q_t(z_t) = log q_{t-1}(z_{t-1}) - log |det J_t(z_{t-1})| with z_{t-1} = f_t^{-1}(z_t).
        """
        normal = base.base_dist
        params, z = params.detach(), z0.detach()
        score = -(z - normal.loc.detach()) / normal.scale.detach() ** 2
        with torch.enable_grad():
            for t in range(self.steps):
                z = z.detach().requires_grad_(True)
                image, log_det = self.step(params, t, z)
                if log_det.requires_grad:  # a volume-preserving step's is a constant
                    score = score - torch.autograd.grad(log_det.sum(), z, retain_graph=True)[0]
                score = self.solve(params, t, z, image, score).detach()
                z = image
        return score

    def inverse(self, params: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_0 = f^{-1}(z) and the forward log |det| at z_0 (invertible families only)."""
        raise ConfigError(
            f"log q(z | x) of a given z needs the inverse of the {self.name} flow, which has none in closed form; "
            "use an objective that draws z and log q together (aevb, iwae, iwae-dreg, miwae, piwae, ciwae)"
        )


class FlowPosterior(Distribution):
    """q(z | x) of a flow: batch shape ``[...]`` (the base's), event ``[D]``.

    Args:
        base: q0, an ``Independent(Normal)`` with batch ``[...]`` and event ``[D]``.
        flow: the steps.
        params: their local parameters ``[..., T, P]`` (``flow(h)``).
    """

    arg_constraints: dict[str, Any] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, base: Independent, flow: AmortizedFlow, params: torch.Tensor):
        self.base, self.flow, self.params = base, flow, params
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    def transform(self, z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z ``[S, ..., D]`` and the flow's log |det| ``[S, ...]`` for base draws z_0 ``[S, ..., D]``."""
        return self.flow.transform(self.params, z0)

    def base_draws(self, sample_shape: torch.Size | tuple[int, ...] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """z_0 = mu + sigma * eps ``sample_shape + [..., D]``, eps ~ N(0, I) drawn from ``generator`` (the diagonal family's own draws)."""
        normal = self.base.base_dist
        noise = torch.randn(self._extended_shape(torch.Size(sample_shape)), generator=generator, dtype=normal.loc.dtype, device=normal.loc.device)
        return normal.loc + normal.scale * noise

    def rsample_and_log_prob(
        self, sample_shape: torch.Size | tuple[int, ...] = (), generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised z ``sample_shape + [..., D]`` and log q(z | x) ``sample_shape + [...]``, in one pass:
        z = f(z_0) and log q = log q0(z_0) - log |det| for :meth:`base_draws` z_0."""
        z0 = self.base_draws(sample_shape, generator)
        z, log_det = self.transform(z0)
        return z, self.base.log_prob(z0) - log_det

    def rsample_with_score(
        self, sample_shape: torch.Size | tuple[int, ...] = (), generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`rsample_and_log_prob`'s z and log q, and d log q(z | x) / dz at those z (no gradient):
        what DReG's pathwise term needs of q (:meth:`AmortizedFlow.log_prob_gradient`)."""
        z0 = self.base_draws(sample_shape, generator)
        z, log_det = self.transform(z0)
        return z, self.base.log_prob(z0) - log_det, self.flow.log_prob_gradient(self.params, z0, self.base)

    @property
    def mean(self) -> torch.Tensor:
        """E_q[z | x] ``[..., D]``, which has no closed form: the average of :data:`MEAN_DRAWS` draws of a
        generator seeded 0, so every call gives the same numbers (Monte Carlo error sd(z) / 16), as
        the figures of posterior means and the reconstructions need."""
        generator = torch.Generator(self.base.base_dist.loc.device).manual_seed(0)
        return self.rsample_and_log_prob((MEAN_DRAWS,), generator)[0].mean(0)

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log q(value | x) ``[...]``; ConfigError (one line) for a family without an inverse."""
        z0, log_det = self.flow.inverse(self.params, value)
        return self.base.log_prob(z0) - log_det


class FlowRecognition(nn.Module):
    """x -> q(z | x): the encoder's Gaussian q0 and its last hidden layer h, then the flow set by h.

    Args:
        encoder: a layer with ``distribution_and_features(x) -> (q0, h)`` and ``trunk.out_features``
            (:class:`~vaelab.models.layers.DiagonalGaussianLayer`).
        flow: the steps, built with ``context_dim = encoder.trunk.out_features``.
    """

    def __init__(self, encoder: nn.Module, flow: AmortizedFlow):
        super().__init__()
        self.encoder, self.flow = encoder, flow

    def forward(self, inputs: torch.Tensor) -> FlowPosterior:
        base, context = self.encoder.distribution_and_features(inputs)
        return FlowPosterior(base, self.flow, self.flow(context))

    def log_prob(self, inputs: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return self(inputs).log_prob(value)
