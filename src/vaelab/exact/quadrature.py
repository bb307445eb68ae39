"""log p(x) of a model with a 2-D continuous latent, by numerical integration.

    p(x) = integral p(x | z) p(z) dz  ~=  h^2 |det L| sum_g p(x, m + L u_g)

is the midpoint rule on a square grid u_g of spacing h, laid into z by an affine frame (m, L).
The mass of p(x, z) is located from the integrand itself, not from q(z|x), which may be a poor
guide (wake-sleep):

1. a global grid in the prior's standardised coordinates: one set of points for all images, so
   the decoder runs once per point whatever the batch;
2. small per-image grids, each laid in the frame of the previous grid's posterior moments,
   L L^T = Cov + (h/2)^2 L_prev L_prev^T (the floor keeps a posterior narrower than a cell from
   collapsing the next grid, so one step narrows the frame at most ~5 times), until a grid's
   moments agree with the frame it was laid in for every image of the batch (area within a
   factor 2, mean within one standard deviation);
3. one fine grid in the settled frame gives the estimate; where its error estimate exceeds
   ``tolerance`` (e.g. a bimodal posterior, whose modes are thin in the frame of its moments) the
   grid is made twice as fine, up to ``max_points`` per axis, for those images only.

Error estimate of a grid of spacing h: the largest change in log p(x) from it to (a) the previous
grid of spacing 2h (the last locating grid, or the grid before a refinement), whose points are
not among its own, and (b) each of its four subgrids of spacing 2h (even and odd rows and
columns); plus the share of the mass on its outer ring (mass that may lie beyond the box). The
midpoint rule's error decays like exp(-2 pi^2 sigma^2 / h^2) on smooth posteriors and like h^2
where a ReLU decoder has kinks, so the error at 2h bounds the error at h in both cases. Both (a)
and (b) are needed: on a symmetric bimodal posterior the four subgrids alias the two modes with
opposite phases and agree with each other while all being wrong.

Separated modes (issue 15). The locating grids follow the posterior's moments; a minor mode far
from the major one pulls the moments little, so the grids narrow onto the major mode and the
final box can leave the minor mode out (on MNIST AEVB models, up to 1% of the mass: log p(x) too
low by -log(1 - share), unseen by the error estimate above). So after each region's fine grid,
the global grid of step 1 is asked how much of its mass lies outside every box so far:

4. where that share exceeds ``negligible_mass``, steps 2-3 are repeated from the moments of the
   global grid's mass outside the boxes, every grid ignoring points inside earlier boxes, so a
   new region gets its own fine grid, up to ``max_regions`` regions; log p(x) is the log of the
   regions' summed masses. The error estimate is the regions' errors weighted by their shares of
   the mass, plus the share the global grid still sees outside every box.

The global grid (spacing 0.25 prior sd) sees a mode only if it is not much narrower than its
spacing; a narrower, isolated mode that it misses entirely stays invisible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vaelab.estimators.bounds import DEFAULT_MAX_ROWS
from vaelab.models import HelmholtzMachine
from vaelab.progress import image_batches

LATENT_DIM = 2


@dataclass(frozen=True)
class QuadratureSettings:
    """Points per axis and half-widths (in standard deviations of the frame) of each grid."""

    global_points: int = 64
    global_half_width: float = 8.0
    locate_points: int = 24
    points: int = 48
    half_width: float = 6.0
    max_locate_steps: int = 8
    tolerance: float = 2e-3
    max_points: int = 192
    negligible_mass: float = 2e-4  # share of the mass outside every box that needs no grid of its own
    max_regions: int = 4

    def __post_init__(self) -> None:
        if self.points % 2:
            raise ValueError(f"points must be even, to split the fine grid into four of spacing 2h (got {self.points})")
        if self.max_locate_steps < 1:
            raise ValueError(f"max_locate_steps must be at least 1 (got {self.max_locate_steps})")
        if self.max_regions < 1:
            raise ValueError(f"max_regions must be at least 1 (got {self.max_regions})")


@dataclass(frozen=True)
class QuadratureResult:
    """log p(x) ``[B]`` and its estimated absolute error ``[B]``, both in nats (float64)."""

    log_marginal: torch.Tensor
    error: torch.Tensor


def square_grid(points: int, half_width: float) -> tuple[torch.Tensor, float]:
    """Midpoints ``[points^2, 2]`` (row-major) of the cells tiling [-a, a]^2, and their spacing h."""
    spacing = 2 * half_width / points
    axis = -half_width + spacing * (torch.arange(points, dtype=torch.float64) + 0.5)
    return torch.cartesian_prod(axis, axis), spacing


def log_joint_at(model: HelmholtzMachine, x: torch.Tensor, z: torch.Tensor, max_rows: int = DEFAULT_MAX_ROWS) -> torch.Tensor:
    """log p(x_b, z_gb) ``[G, B]`` for x ``[B, D_x]`` and z ``[G, B, 2]``, or ``[G, 1, 2]`` for points shared by all x.

    Points are scored ``max_rows // B`` at a time, bounding the ``[rows, D_x]`` likelihood terms.
    """
    prior = model.prior_distribution()
    per_chunk = max(1, max_rows // x.shape[0])
    return torch.cat([prior.log_prob(chunk) + model.log_likelihood(x, chunk) for chunk in z.split(per_chunk)])


@dataclass(frozen=True)
class _Box:
    """Per image, the square |frame^-1 (z - loc)|_inf <= half_width of a region's fine grid: loc ``[B, 2]``,
    frame ``[B, 2, 2]``, and ``present`` ``[B]`` (False for images that have no such region)."""

    loc: torch.Tensor
    frame: torch.Tensor
    half_width: float
    present: torch.Tensor

    def contains(self, z: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
        """``[G, B]`` whether each point z ``[G, 1 or B, 2]`` lies in its image's box grown by at least ``margin``
        (in z) on every side: half_width + margin / (the frame's smallest singular value) in the frame's units."""
        u = torch.linalg.solve_triangular(self.frame, (z - self.loc).unsqueeze(-1), upper=False).squeeze(-1)
        reach = self.half_width + margin / torch.linalg.svdvals(self.frame)[..., -1]
        return (u.abs().amax(-1) <= reach) & self.present

    def subset(self, rows: torch.Tensor) -> _Box:
        return _Box(self.loc[rows], self.frame[rows], self.half_width, self.present[rows])


def _outside(z: torch.Tensor, log_joint: torch.Tensor, boxes: list[_Box], margin: float = 0.0) -> torch.Tensor:
    """log p(x, z) ``[G, B]`` with the points inside any of ``boxes`` (grown by ``margin``) set to -inf (their mass
    is counted elsewhere)."""
    for box in boxes:
        log_joint = log_joint.masked_fill(box.contains(z, margin), -math.inf)
    return log_joint


def _log_joint_on_grid(model, x, loc, frame, points, half_width, max_rows, boxes=()) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Grid points z = loc + frame u ``[G, 1 or B, 2]`` (float64), log p(x, z) ``[G, B]`` (float64, -inf inside
    ``boxes``) and the spacing h of u."""
    u, spacing = square_grid(points, half_width)
    z = loc + torch.einsum("bij,gj->gbi", frame, u.to(loc.device))
    return z, _outside(z, log_joint_at(model, x, z.to(x.dtype), max_rows).double(), list(boxes)), spacing


def _moment_frame(z: torch.Tensor, log_joint: torch.Tensor, frame: torch.Tensor, spacing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean ``[B, 2]`` and Cholesky factor ``[B, 2, 2]`` of Cov + (h/2)^2 frame frame^T, from a grid."""
    weights = torch.softmax(log_joint, 0)  # [G, B]
    z = z.expand(-1, weights.shape[1], -1)
    mean = torch.einsum("gb,gbi->bi", weights, z)
    centred = z - mean
    covariance = torch.einsum("gb,gbi,gbj->bij", weights, centred, centred)
    floor = (spacing / 2) ** 2 * frame @ frame.transpose(-1, -2)
    return mean, torch.linalg.cholesky(covariance + floor)


def _settled(loc, frame, next_loc, next_frame) -> bool:
    """True when every image's grid already sat on its mass: area within a factor 2, mean within 1 sd."""
    area_change = (torch.logdet(next_frame) - torch.logdet(frame)).abs()
    shift = torch.linalg.solve_triangular(frame, (next_loc - loc).unsqueeze(-1), upper=False).squeeze(-1).norm(dim=-1)
    return bool((area_change < math.log(2)).all() and (shift < 1).all())


def _midpoint_rule(log_joint: torch.Tensor, spacing: float, frame: torch.Tensor) -> torch.Tensor:
    """log p(x) ``[B]`` from log p(x, z) ``[G, B]`` on a grid of spacing h in ``frame``: logsumexp + log h^2 |det L|."""
    return torch.logsumexp(log_joint, 0) + 2 * math.log(spacing) + torch.logdet(frame)


def _global_grid(model, x, settings, max_rows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Step 1: points ``[G, 1, 2]`` over the prior's standardised square, log p(x, z) ``[G, B]``, the frame ``[1, 2, 2]`` and h."""
    prior = model.prior_distribution()
    loc = prior.mean.double().reshape(1, LATENT_DIM)  # the prior's frame, shared by every image
    frame = torch.diag_embed(prior.stddev.double()).reshape(1, LATENT_DIM, LATENT_DIM)
    z, log_joint, spacing = _log_joint_on_grid(model, x, loc, frame, settings.global_points, settings.global_half_width, max_rows)
    return z, log_joint, frame, spacing


def _settle(model, x, loc, frame, settings, max_rows, boxes) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step 2 from the frame (loc, frame), ignoring mass inside ``boxes``: the settled mean, Cholesky factor and estimate."""
    for _ in range(settings.max_locate_steps):
        z, log_joint, spacing = _log_joint_on_grid(model, x, loc, frame, settings.locate_points, settings.half_width, max_rows, boxes)
        estimate = _midpoint_rule(log_joint, spacing, frame)
        next_loc, next_frame = _moment_frame(z, log_joint, frame, spacing)
        settled = _settled(loc, frame, next_loc, next_frame)
        loc, frame = next_loc, next_frame
        if settled:
            break
    return loc, frame, estimate


@torch.no_grad()
def locate_mass(
    model: HelmholtzMachine, x: torch.Tensor, settings: QuadratureSettings = QuadratureSettings(), max_rows: int = DEFAULT_MAX_ROWS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A frame around the (major) mass of p(x, z) for each row of x: mean ``[B, 2]`` and Cholesky factor ``[B, 2, 2]``,
    with the last locating grid's estimate of log p(x) ``[B]`` (all float64)."""
    z, log_joint, frame, spacing = _global_grid(model, x, settings, max_rows)
    loc, frame = _moment_frame(z, log_joint, frame, spacing)
    return _settle(model, x, loc, frame, settings, max_rows, ())


@torch.no_grad()
def log_marginal_2d(
    model: HelmholtzMachine, x: torch.Tensor, settings: QuadratureSettings = QuadratureSettings(), max_rows: int = DEFAULT_MAX_ROWS
) -> QuadratureResult:
    """log p(x) of every row of x ``[B, D_x]`` under a model with a 2-D latent, with its error estimate.

    Raises:
        ValueError: the model's latent is not 2-D.
    """
    if model.latent_dim != LATENT_DIM:
        raise ValueError(f"quadrature needs a 2-D latent (this model's latent_dim is {model.latent_dim})")
    global_z, global_log_joint, global_frame, global_spacing = _global_grid(model, x, settings, max_rows)
    global_total = torch.logsumexp(global_log_joint, 0)
    # A global point stands for its cell: it counts as covered when a box reaches into the cell (a box much narrower
    # than a cell may hold all of a point's mass without containing the point).
    cell = global_spacing * global_frame.diagonal(dim1=-2, dim2=-1).max().item() / math.sqrt(2)
    batch = x.shape[0]
    log_masses, errors, boxes = [], [], []  # per region: log mass [B] (-inf where absent), its error [B], its box
    need = torch.ones(batch, dtype=torch.bool, device=x.device)
    for _ in range(settings.max_regions):
        rows = need.nonzero().squeeze(-1)
        previous = [box.subset(rows) for box in boxes]
        remaining = _outside(global_z, global_log_joint[:, rows], previous, cell)
        loc, frame = _moment_frame(global_z, remaining, global_frame, global_spacing)
        loc, frame, coarse = _settle(model, x[rows], loc, frame, settings, max_rows, previous)
        log_mass, error = _refined_estimate(model, x[rows], loc, frame, coarse, settings, max_rows, previous)
        log_masses.append(torch.full((batch,), -math.inf, dtype=torch.float64, device=x.device).index_put((rows,), log_mass))
        errors.append(torch.zeros(batch, dtype=torch.float64, device=x.device).index_put((rows,), error))
        present = torch.zeros(batch, dtype=torch.bool, device=x.device).index_put((rows,), torch.ones_like(rows, dtype=torch.bool))
        full_loc = torch.zeros(batch, LATENT_DIM, dtype=torch.float64, device=x.device).index_put((rows,), loc)
        full_frame = torch.eye(LATENT_DIM, dtype=torch.float64, device=x.device).repeat(batch, 1, 1).index_put((rows,), frame)
        boxes.append(_Box(full_loc, full_frame, settings.half_width, present))
        missed_share = torch.exp(torch.logsumexp(_outside(global_z, global_log_joint, boxes, cell), 0) - global_total)
        need = missed_share > settings.negligible_mass
        if not need.any():
            break
    log_masses, errors = torch.stack(log_masses), torch.stack(errors)
    log_marginal = torch.logsumexp(log_masses, 0)
    shares = torch.exp(log_masses - log_marginal)  # each region's share of the mass: a relative error e moves log p(x) by share * e
    return QuadratureResult(log_marginal, (shares * errors).sum(0) + missed_share)


def _refined_estimate(model, x, loc, frame, coarse, settings, max_rows, boxes) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 3 in one region: the fine grid, made twice as fine where its error exceeds the tolerance."""
    points = settings.points
    log_marginal, error = _fine_estimate(model, x, loc, frame, points, settings.half_width, coarse, max_rows, boxes)
    while points * 2 <= settings.max_points and (error > settings.tolerance).any():
        points *= 2
        rough = error > settings.tolerance
        log_marginal[rough], error[rough] = _fine_estimate(
            model, x[rough], loc[rough], frame[rough], points, settings.half_width, log_marginal[rough], max_rows, [box.subset(rough) for box in boxes]
        )
    return log_marginal, error


def _fine_estimate(model, x, loc, frame, points, half_width, coarse, max_rows, boxes=()) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x) ``[B]`` on a ``points^2`` grid in the frame (loc, frame), points inside ``boxes`` left out, and its error
    estimate ``[B]`` (see the module) given ``coarse`` ``[B]``, the estimate of a grid of twice the spacing."""
    _, log_joint, spacing = _log_joint_on_grid(model, x, loc, frame, points, half_width, max_rows, boxes)
    log_marginal = _midpoint_rule(log_joint, spacing, frame)
    grid = log_joint.reshape(points, points, -1)
    subgrids = torch.stack([_midpoint_rule(grid[row::2, column::2].flatten(0, 1), 2 * spacing, frame) for row in (0, 1) for column in (0, 1)])
    resolution_error = torch.maximum((subgrids - log_marginal).abs().amax(0), (coarse - log_marginal).abs())
    ring = torch.cat([grid[0], grid[-1], grid[1:-1, 0], grid[1:-1, -1]])
    ring_share = torch.exp(torch.logsumexp(ring, 0) - torch.logsumexp(log_joint, 0))
    return log_marginal, resolution_error + ring_share


@torch.no_grad()
def quadrature_log_marginal(
    model: HelmholtzMachine,
    images: torch.Tensor,
    settings: QuadratureSettings = QuadratureSettings(),
    batch_size: int = 100,
    progress: str | None = None,
) -> QuadratureResult:
    """:func:`log_marginal_2d` of every row of ``images`` ``[N, D_x]``, in batches; ``[N]`` tensors on the CPU.
    ``progress``: the title of a progress bar with an ETA (None: none)."""
    device = model.prior_distribution().mean.device
    results = [log_marginal_2d(model, batch.to(device), settings) for batch in image_batches(images, batch_size, progress)]
    return QuadratureResult(
        log_marginal=torch.cat([result.log_marginal.cpu() for result in results]),
        error=torch.cat([result.error.cpu() for result in results]),
    )
