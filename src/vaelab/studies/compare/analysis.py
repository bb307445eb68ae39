"""What the report computes from a trained model: cheap, deterministic, never training.

Posterior means E_q[z | x], decoder means E_p[x | z], the latent grid of Kingma & Welling's
manifold figure, Burda et al.'s count of active latent units, and the KL each stochastic layer carries.
"""

from __future__ import annotations

import numpy as np
import torch

from vaelab.models import HelmholtzMachine
from vaelab.models.sampling import ancestral_sample, sample
from vaelab.objectives.aevb import monte_carlo_layer_kls

# Burda, Grosse & Salakhutdinov (2015), on latent space representation: unit u is active when Cov_x(E_q[z_u | x]) > 0.01.
ACTIVE_UNIT_THRESHOLD = 0.01
LAYER_KL_SAMPLES = 10  # draws z ~ q(z | x) per test image for each layer's KL


def latent_grid(size: int) -> torch.Tensor:
    """z ``[size, size, 2]`` on a grid that is uniform in probability under N(0, I).

    The unit square's cell centres u_i = (i + 1/2) / size are pushed through the inverse Gaussian
    CDF, z = Phi^-1(u) (Kingma & Welling 2013, Figure 4). Entry [row, column] holds
    (z_1, z_2) = (Phi^-1(u_column), Phi^-1(u_{size-1-row})): z_1 grows to the right and z_2 upwards,
    as on a plot.
    """
    values = torch.special.ndtri((torch.arange(size, dtype=torch.float64) + 0.5) / size)
    z_2, z_1 = torch.meshgrid(values.flip(0), values, indexing="ij")
    return torch.stack([z_1, z_2], dim=-1).float()


def grid_position(z: float, size: int) -> float:
    """Where z falls on the axis of :func:`latent_grid`, in tiles: tile i is centred on i, so the
    position is Phi(z) * size - 1/2 (for tick marks at round values of z)."""
    return float(torch.special.ndtr(torch.tensor(z, dtype=torch.float64))) * size - 0.5


@torch.no_grad()
def decoder_means(model: HelmholtzMachine, z: torch.Tensor) -> torch.Tensor:
    """E[x | z] under p_theta(x | z) for z ``[..., latent_dim]``: pixel probabilities (Bernoulli) or
    means (Gaussian), ``[..., data_dim]``."""
    return model.likelihood(z).mean


@torch.no_grad()
def posterior_means(model: HelmholtzMachine, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """E_q[z | x] ``[N, latent_dim]`` for images ``[N, data_dim]``."""
    return torch.cat([model.posterior(batch).mean for batch in images.split(batch_size)])


@torch.no_grad()
def prior_sample_means(model: HelmholtzMachine, count: int, generator: torch.Generator) -> torch.Tensor:
    """E[x | z] ``[count, data_dim]`` at ``count`` draws z ~ p(z): the homework's Figure 2 'samples'."""
    return ancestral_sample(model, (count,), generator, decoder_mean=True)[1]


def active_units(means: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> tuple[int, torch.Tensor]:
    """Burda et al.'s active units of posterior means ``[N, latent_dim]``.

    Returns the number of units u with Cov_x(E_q[z_u | x]) > ``threshold`` and every unit's
    variance ``[latent_dim]`` across the N inputs.
    """
    variances = means.double().var(dim=0)
    return int((variances > threshold).sum()), variances


def layer_active_units(means: torch.Tensor, latent_dims: tuple[int, ...], threshold: float = ACTIVE_UNIT_THRESHOLD) -> list[int]:
    """:func:`active_units` of each stochastic layer z_1, ..., z_L of posterior means ``[N, sum D_l]``
    (the flat z = [z_1, ..., z_L], layer l ``D_l = latent_dims[l-1]`` wide); they sum to the total."""
    return [active_units(block, threshold)[0] for block in means.split(list(latent_dims), dim=-1)]


@torch.no_grad()
def layer_kls(
    model: HelmholtzMachine, images: torch.Tensor, generator: torch.Generator, num_samples: int = LAYER_KL_SAMPLES, batch_size: int = 1000
) -> list[float]:
    """Each stochastic layer's KL in nats, ordered z_1, ..., z_L: over images ``[N, data_dim]`` the mean of

        KL_l(x) ~= (1/S) sum_s log q(z_l^s | z_(l-1)^s) - log p(z_l^s | z_(l+1)^s),   z^s ~ q(z | x), z_0 = x,

    with S = ``num_samples`` draws (:func:`vaelab.objectives.aevb.monte_carlo_layer_kls`). The
    layers' values sum to the Monte Carlo estimate of the test set's mean KL(q(z | x) || p(z)).
    Images are scored ``batch_size`` at a time, their draws taken from ``generator`` in that order.
    """
    per_image = []  # [B, L] per batch
    for batch in images.split(batch_size):
        posterior = model.posterior(batch)
        z = sample(posterior, (num_samples,), generator)  # [S, B, sum D_l]
        per_image.append(torch.stack(monte_carlo_layer_kls(model, posterior, z), dim=-1))
    return torch.cat(per_image).double().mean(0).tolist()


@torch.no_grad()
def grid_coverage(model: HelmholtzMachine, size: int, generator: torch.Generator, count: int = 10000) -> float:
    """The fraction of ``count`` draws z ~ p(z) inside the square spanned by the centres of the outer
    tiles of :func:`latent_grid` (Phi^-1 of 1/(2 size) and 1 - 1/(2 size) on each axis).

    Under N(0, I) it is (1 - 1/size)^2; under a learned prior (mixture, VampPrior) it says how much
    of the prior's mass the grid shows at all.
    """
    edge = float(torch.special.ndtri(torch.tensor(1 - 0.5 / size, dtype=torch.float64)))
    z = sample(model.prior_distribution(), (count,), generator)
    return float((z.abs() <= edge).all(dim=-1).double().mean())


def plane_projection(means: torch.Tensor) -> tuple[np.ndarray, tuple[str, str]]:
    """Points ``[N, 2]`` to plot for posterior means ``[N, latent_dim]``, and their axis labels.

    Two dimensions are shown as they are; more are projected on their first two principal
    components (scikit-learn's PCA; the labels give each one's share of the variance); one is
    shown against a zero second coordinate.
    """
    points = means.double().numpy()
    latent_dim = points.shape[1]
    if latent_dim == 2:
        return points, ("$E_q[z_1 \\mid x]$", "$E_q[z_2 \\mid x]$")
    if latent_dim == 1:
        return np.column_stack([points[:, 0], np.zeros(len(points))]), ("$E_q[z_1 \\mid x]$", "(one latent dimension)")
    from sklearn.decomposition import (
        PCA,  # imported here: scikit-learn is slow to import
    )

    pca = PCA(n_components=2).fit(points)
    share = pca.explained_variance_ratio_ * 100
    return pca.transform(points), (
        f"PC 1 of $E_q[z \\mid x]$ ({share[0]:.0f}% of variance)",
        f"PC 2 of $E_q[z \\mid x]$ ({share[1]:.0f}% of variance)",
    )
