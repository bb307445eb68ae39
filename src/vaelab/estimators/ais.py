"""Annealed importance sampling (Neal 2001) from q(z|x) to p(z|x), and bidirectional Monte Carlo
(Grosse, Ghahramani & Adams 2015; Wu, Burda, Salakhutdinov & Grosse 2017).

The geometric path between the proposal and the unnormalised posterior, 0 = beta_0 < ... < beta_{T+1} = 1:

    f_j(z) = q(z | x)^(1 - beta_j) p(x, z)^beta_j,    Z_0 = 1,   Z_{T+1} = p(x).

Forward AIS: z ~ q(z|x); for j = 1..T+1, log w += (beta_j - beta_{j-1}) [log p(x, z) - log q(z|x)],
then (j <= T) z moves by an HMC transition that leaves f_j invariant. E[w] = p(x) (Neal 2001), so
the log-mean-exp of M chains' weights is a stochastic lower bound: E[estimate] <= log p(x) by
Jensen. With T = 0 it is L_M on the same draws. T counts the intermediate distributions (and the
transitions); the cost per chain is 1 + T * leapfrog_steps decoder passes, each with a backward.

Reverse AIS: z ~ p(z|x) exactly (known on data simulated from the model), the same path walked from
beta = 1 to 0. Its weights have E[w] = 1 / p(x), so minus their log-mean-exp is a stochastic upper
bound. BDMC runs both on simulated data: lower <= log p(x) <= upper (in expectation), and the
sandwich's width bounds the forward estimate's error there (Grosse et al. 2015, section 4).

Choices, each a setting of :class:`AISSettings`:

- Start: q(z|x) by default (cheap: q is already near the posterior); ``start='prior'`` walks
  from p(z) instead (Wu et al. 2017; q replaced by p(z) in every formula above), which needs more
  steps but does not inherit q's blind spots: a chain started from q rarely reaches a posterior
  mode far outside q, and the weights cannot count mass no chain visits.

- Schedule: sigmoidal (Grosse et al. 2015, Wu et al. 2017): beta ~ sigmoid(delta (2 t - 1)),
  t uniform on [0, 1], rescaled to end at exactly 0 and 1: dense near both ends, where
  log f_j changes fastest per unit of beta.
- HMC in q's standard coordinates u = z / s(x), s = q's per-dimension standard deviation (a
  diagonal mass matrix, fixed per image): one step size fits every latent dimension roughly alike.
- Step sizes: one per image and intermediate distribution (shared by the image's chains), taken
  from a pilot run of ``pilot_chains`` chains with fresh randomness that adapts log(step) by
  ``adaptation_rate * (acceptance - target)`` after each transition, then frozen. The step sizes
  are therefore functions of x alone, and every transition of the counted chains is an exact
  Metropolis-corrected HMC kernel for its f_j: adapting on the counted chains themselves (as
  Wu et al. 2017 do) would make each kernel depend on the chain's own past, which the AIS proof
  does not cover. The pilot costs ``pilot_chains / chains`` of the main run.
- Precision: log-densities in the model's dtype (fp32 for trained models); the weights are
  accumulated and log-mean-exp'ed in float64.

Bernoulli latents are refused: HMC needs a continuous latent, and a discrete-latent AIS (Gibbs
or Metropolis flips) is not built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vaelab.errors import ConfigError
from vaelab.estimators.bounds import DEFAULT_MAX_ROWS, decoder_rows
from vaelab.models import BernoulliLayer, BernoulliPrior, HelmholtzMachine
from vaelab.models.sampling import ancestral_sample, sample
from vaelab.posteriors.flow import FlowPosterior
from vaelab.progress import bar as progress_bar

__all__ = ["AISResult", "AISSettings", "BDMCResult", "annealing_schedule", "bdmc", "bdmc_on_simulated", "decoder_passes", "evaluate_ais", "forward_ais", "reverse_ais", "rows_at_once", "sandwich_summary", "simulate"]


STARTS = ("proposal", "prior")


@dataclass(frozen=True)
class AISSettings:
    """T intermediate distributions, M chains per image, and the HMC kernel (see the module)."""

    steps: int = 100  # T
    chains: int = 16  # M
    leapfrog_steps: int = 5
    target_acceptance: float = 0.65
    initial_step_size: float = 0.2  # in units of q's standard deviation
    adaptation_rate: float = 1.0
    pilot_chains: int = 2
    schedule_sharpness: float = 4.0  # delta of the sigmoidal schedule
    start: str = "proposal"  # the path's first distribution: 'proposal' q(z|x), or 'prior' p(z) (Wu et al. 2017)

    def __post_init__(self) -> None:
        if self.steps < 0 or self.chains < 1 or self.leapfrog_steps < 1 or self.pilot_chains < 1:
            raise ConfigError(f"AIS needs steps >= 0, chains >= 1, leapfrog_steps >= 1, pilot_chains >= 1 (got {self})")
        if not 0 < self.target_acceptance < 1 or self.initial_step_size <= 0 or self.schedule_sharpness <= 0:
            raise ConfigError(f"AIS needs 0 < target_acceptance < 1 and a positive step size and sharpness (got {self})")
        if self.start not in STARTS:
            raise ConfigError(f"AIS start must be one of {', '.join(STARTS)} (got {self.start!r})")


@dataclass(frozen=True)
class AISResult:
    """Per-image AIS output for B images, float64 on the CPU.

    Attributes:
        log_marginal: ``[B]`` log-mean-exp of the chains' log-weights (forward: <= log p(x) in
            expectation; reverse: minus it, >= log p(x) in expectation).
        log_weights: ``[M, B]`` each chain's log-weight (reverse: of 1 / p(x)).
        acceptance: ``[B]`` mean acceptance probability over the counted chains' transitions (nan if T = 0).
        step_sizes: ``[T, B]`` the frozen step size of each transition, in q's standard units.
    """

    log_marginal: torch.Tensor
    log_weights: torch.Tensor
    acceptance: torch.Tensor
    step_sizes: torch.Tensor


@dataclass(frozen=True)
class BDMCResult:
    """Bidirectional Monte Carlo on N simulated images: x ``[N, D_x]``, their z ``[N, D]``, and
    the forward (lower) and reverse (upper) AIS results."""

    x: torch.Tensor
    z: torch.Tensor
    forward: AISResult
    reverse: AISResult

    @property
    def width(self) -> torch.Tensor:
        """``[N]`` upper - lower bound, in nats: signed, negative where the sandwich is inverted
        (:func:`sandwich_summary`)."""
        return self.reverse.log_marginal - self.forward.log_marginal


def sandwich_summary(lower: torch.Tensor, upper: torch.Tensor) -> dict[str, float]:
    """The BDMC sandwich of N images, from per-image lower and upper estimates ``[N]`` (nats).

    ``width_abs_mean``: the mean of |upper - lower|, the sandwich's size. ``width_mean``: the mean of
    the signed widths upper - lower, which cancel where some are negative (a signed mean of 0.006
    hid a mean |width| of 0.18 nats). ``width_max``: the largest signed width. ``inverted``: the share
    of images whose upper estimate lies below their lower one. Each estimate is a bound only in
    expectation: on an inverted image the two AIS estimates' Monte Carlo noise exceeds the gap
    between them, so neither bounds that image's log p(x) in any useful sense, and more chains (M)
    or more steps (T) are needed before the width means anything.
    """
    width = upper.double() - lower.double()
    return {
        "width_mean": width.mean().item(),
        "width_abs_mean": width.abs().mean().item(),
        "width_max": width.max().item(),
        "inverted": (width < 0).double().mean().item(),
    }


def annealing_schedule(steps: int, sharpness: float = 4.0) -> torch.Tensor:
    """beta_0 = 0 < beta_1 < ... < beta_{T+1} = 1 ``[T + 2]`` (float64), sigmoidal (module docstring)."""
    raw = torch.sigmoid(sharpness * torch.linspace(-1.0, 1.0, steps + 2, dtype=torch.float64))
    return (raw - raw[0]) / (raw[-1] - raw[0])


def decoder_passes(settings: AISSettings, reverse: bool = False) -> int:
    """Decoder passes (each with its backward when T > 0) per image: M (1 + T L) counted, plus the pilot's
    (none when T = 0 or when the reverse run reuses the forward run's step sizes)."""
    per_chain = 1 + settings.steps * settings.leapfrog_steps
    pilot = settings.pilot_chains * per_chain if settings.steps and not reverse else 0
    return settings.chains * per_chain + pilot


def _refuse_discrete_latents(model: HelmholtzMachine) -> None:
    layers = [model.recognition, *model.upper_recognition, *model.upper_generative]
    if isinstance(model.prior, BernoulliPrior) or any(isinstance(layer, BernoulliLayer) for layer in layers):
        raise ConfigError("AIS needs continuous (Gaussian) latents: HMC cannot move Bernoulli ones")


@dataclass(frozen=True)
class _State:
    """Chains' positions z ``[M, B, D]`` with log q, log p(x, z) ``[M, B]`` and their z-gradients ``[M, B, D]``."""

    z: torch.Tensor
    log_q: torch.Tensor
    log_p: torch.Tensor
    grad_q: torch.Tensor
    grad_p: torch.Tensor

    def log_f(self, beta: float) -> torch.Tensor:
        return (1 - beta) * self.log_q + beta * self.log_p

    def grad_log_f(self, beta: float) -> torch.Tensor:
        return (1 - beta) * self.grad_q + beta * self.grad_p

    def where(self, keep_new: torch.Tensor, old: _State) -> _State:
        """Per chain, this state where ``keep_new`` ``[M, B]``, else ``old``."""
        pick = lambda new_value, old_value: torch.where(keep_new.reshape(keep_new.shape + (1,) * (new_value.dim() - 2)), new_value, old_value)
        return _State(*(pick(getattr(self, name), getattr(old, name)) for name in ("z", "log_q", "log_p", "grad_q", "grad_p")))


class _Target:
    """log q(z|x) (or log p(z) when the path starts at the prior) and log p(x, z) of one batch of images,
    with their gradients in z."""

    def __init__(self, model: HelmholtzMachine, x: torch.Tensor, start: str):
        with torch.no_grad():  # the distributions' parameters are constants here: gradients go to z only
            self.prior = model.prior_distribution()
            self.initial = model.posterior(x) if start == "proposal" else self.prior
        # A flow q = f(q0) (its log q of a given z may need an inverse it lacks): the chains walk its base
        # space from q0 to p(x, f(z_0)) |det df/dz_0|, whose integral over z_0 is p(x) as well.
        self.flow = self.initial if isinstance(self.initial, FlowPosterior) else None
        if self.flow is not None:
            self.initial = self.flow.base
        self.model, self.x = model, x

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        """log p(x, z) ``[M, B]``, or for a flow log p(x, f(z_0)) + log |det df/dz_0| of base points z_0."""
        log_det = 0.0
        if self.flow is not None:
            z, log_det = self.flow.transform(z)
        return self.prior.log_prob(z) + self.model.log_likelihood(self.x, z) + log_det

    def draw(self, chains: int, generator: torch.Generator | None) -> torch.Tensor:
        """``[chains, B, D]`` draws of the initial distribution (the prior has no batch shape: B draws per chain)."""
        shape = (chains,) if self.initial is not self.prior else (chains, self.x.shape[0])
        with torch.no_grad():
            return sample(self.initial, shape, generator)

    def scale(self, generator: torch.Generator | None, draws: int = 64) -> torch.Tensor:
        """The initial distribution's per-dimension standard deviation ``[B, D]``: exact for a Gaussian, else from
        ``draws`` samples (two-layer chains)."""
        try:
            scale = self.initial.stddev.detach()
        except NotImplementedError:
            scale = self.draw(draws, generator).std(0)
        return scale.expand(self.x.shape[0], -1)

    def __call__(self, z: torch.Tensor) -> _State:
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            log_q = self.initial.log_prob(z)
            (grad_q,) = torch.autograd.grad(log_q.sum(), z)
            log_p = self.log_joint(z)
            (grad_p,) = torch.autograd.grad(log_p.sum(), z)
        return _State(z.detach(), log_q.detach(), log_p.detach(), grad_q, grad_p)


def _hmc(target: _Target, state: _State, beta: float, step: torch.Tensor, scale: torch.Tensor, leapfrog_steps: int, generator) -> tuple[_State, torch.Tensor]:
    """One HMC transition leaving f_beta invariant, in the coordinates u = z / scale; step ``[B]``, scale ``[B, D]``.

    Returns the new state and each chain's acceptance probability ``[M, B]``.
    """
    z = state.z
    momentum = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    start_energy = state.log_f(beta) - 0.5 * momentum.pow(2).sum(-1)
    increment = step.to(z.dtype)[:, None] * scale  # [B, D]: the leapfrog step in z of a unit step in u
    momentum = momentum + 0.5 * increment * state.grad_log_f(beta)
    proposal = state
    for leap in range(leapfrog_steps):
        proposal = target(proposal.z + increment * momentum)
        weight = 1.0 if leap < leapfrog_steps - 1 else 0.5  # the last half step of the momentum
        momentum = momentum + weight * increment * proposal.grad_log_f(beta)
    log_accept = proposal.log_f(beta) - 0.5 * momentum.pow(2).sum(-1) - start_energy
    log_accept = torch.nan_to_num(log_accept, nan=-math.inf).clamp(max=0.0)  # a diverged trajectory is rejected
    uniform = torch.rand(log_accept.shape, generator=generator, dtype=log_accept.dtype, device=log_accept.device)
    return proposal.where(uniform.log() < log_accept, state), log_accept.exp()


def _anneal(target, z, betas, step_sizes, scale, settings, generator, adapt, bar) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Walk z ``[M, B, D]`` along ``betas`` ``[T + 2]``; step_sizes ``[T, B]`` (adapted in place when ``adapt``).

    Returns log-weights ``[M, B]`` (float64), mean acceptance ``[B]`` and the step sizes ``[T, B]``.
    """
    state = target(z)
    log_weights = torch.zeros(state.log_p.shape, dtype=torch.float64, device=z.device)
    acceptance = torch.zeros(z.shape[1], dtype=torch.float64, device=z.device)
    for index in range(1, len(betas)):
        log_weights += (betas[index] - betas[index - 1]).item() * (state.log_p - state.log_q).double()
        if index == len(betas) - 1:
            break
        state, accepted = _hmc(target, state, betas[index].item(), step_sizes[index - 1], scale, settings.leapfrog_steps, generator)
        rate = accepted.double().mean(0)  # per image, over its chains
        acceptance += rate
        if adapt:  # the pilot: the step size of this transition for the counted chains, and the start of the next
            step_sizes[index - 1] *= torch.exp(settings.adaptation_rate * (rate - settings.target_acceptance))
            if index < len(betas) - 2:
                step_sizes[index] = step_sizes[index - 1]
        if bar is not None:
            bar.update(1)
    transitions = len(betas) - 2
    return log_weights, acceptance / transitions if transitions else torch.full_like(acceptance, math.nan), step_sizes


def _pilot_step_sizes(target, x, scale, settings, generator, bar) -> torch.Tensor:
    """``[T, B]`` step sizes adapted by a pilot forward run of ``pilot_chains`` chains (float64)."""
    step_sizes = torch.full((settings.steps, x.shape[0]), settings.initial_step_size, dtype=torch.float64, device=x.device)
    z = target.draw(settings.pilot_chains, generator)
    betas = annealing_schedule(settings.steps, settings.schedule_sharpness)
    return _anneal(target, z, betas, step_sizes, scale, settings, generator, True, bar)[2]


def forward_ais(
    model: HelmholtzMachine, x: torch.Tensor, settings: AISSettings = AISSettings(), generator: torch.Generator | None = None, bar=None
) -> AISResult:
    """Forward AIS for one batch x ``[B, D_x]``, M = ``settings.chains`` chains each (``[M, B]`` decoder rows at once).

    The chains' starting draws are the generator's first use, as in :func:`vaelab.objectives.core.importance_samples`,
    so T = 0 reproduces L_M's draws exactly.

    Raises:
        ConfigError: the model has Bernoulli latents.
    """
    _refuse_discrete_latents(model)
    target = _Target(model, x, settings.start)
    z = target.draw(settings.chains, generator)
    scale = target.scale(generator) if settings.steps else None
    step_sizes = _pilot_step_sizes(target, x, scale, settings, generator, bar) if settings.steps else torch.zeros(0, x.shape[0], dtype=torch.float64)
    betas = annealing_schedule(settings.steps, settings.schedule_sharpness)
    log_weights, acceptance, step_sizes = _anneal(target, z, betas, step_sizes, scale, settings, generator, False, bar)
    return _result(log_weights, acceptance, step_sizes, sign=1.0)


def reverse_ais(
    model: HelmholtzMachine,
    x: torch.Tensor,
    z: torch.Tensor,
    settings: AISSettings = AISSettings(),
    generator: torch.Generator | None = None,
    step_sizes: torch.Tensor | None = None,
    bar=None,
) -> AISResult:
    """Reverse AIS for x ``[B, D_x]`` from exact posterior draws z ``[B, D]`` (every chain starts there).

    ``step_sizes`` ``[T, B]`` (a forward run's, indexed forward) are reused if given, else a pilot
    forward run finds them. ``log_marginal`` is the upper bound -log-mean-exp(log w_rev).
    """
    _refuse_discrete_latents(model)
    target = _Target(model, x, settings.start)
    scale = target.scale(generator) if settings.steps else None
    if step_sizes is None:
        step_sizes = _pilot_step_sizes(target, x, scale, settings, generator, bar) if settings.steps else torch.zeros(0, x.shape[0], dtype=torch.float64)
    betas = annealing_schedule(settings.steps, settings.schedule_sharpness).flip(0)
    if target.flow is not None:  # the chains walk the flow's base space
        if not target.flow.flow.invertible:
            raise ConfigError(f"reverse AIS starts from given z, which the {target.flow.flow.name} posterior cannot map back to its base (no inverse); use --ais-start prior")
        z = target.flow.flow.inverse(target.flow.params, z)[0]
    start = z.to(x.dtype).unsqueeze(0).expand(settings.chains, -1, -1)
    log_weights, acceptance, _ = _anneal(target, start, betas, step_sizes.to(x.device).flip(0).clone(), scale, settings, generator, False, bar)
    return _result(log_weights, acceptance, step_sizes, sign=-1.0)


def _result(log_weights, acceptance, step_sizes, sign) -> AISResult:
    log_mean = torch.logsumexp(log_weights, 0) - math.log(log_weights.shape[0])
    return AISResult(sign * log_mean.cpu(), log_weights.cpu(), acceptance.cpu(), step_sizes.cpu())


def _concatenate(results: list[AISResult]) -> AISResult:
    return AISResult(
        torch.cat([r.log_marginal for r in results]),
        torch.cat([r.log_weights for r in results], 1),
        torch.cat([r.acceptance for r in results]),
        torch.cat([r.step_sizes for r in results], 1),
    )


def _progress_bar(enabled: bool, total: int, description: str):
    return progress_bar(total, description, "transition") if enabled else None


def _images_per_chunk(settings: AISSettings, max_rows: int, batch_size: int | None) -> int:
    """Images per AIS call: ``batch_size`` (e.g. the evaluation batch, so that T = 0 reproduces L_M's
    draws), fewer where M chains per image would pass ``max_rows``."""
    fitting = max(1, max_rows // max(settings.chains, settings.pilot_chains))
    return fitting if batch_size is None else max(1, min(batch_size, fitting))


def rows_at_once(settings: AISSettings, batch_size: int | None, max_rows: int = DEFAULT_MAX_ROWS) -> int:
    """Chains that :func:`evaluate_ais` and :func:`bdmc_on_simulated` hold at once: the images of a
    call times M (or the pilot's chains); more than ``max_rows`` where one image's M chains are."""
    return _images_per_chunk(settings, max_rows, batch_size) * max(settings.chains, settings.pilot_chains)


def evaluate_ais(
    model: HelmholtzMachine,
    images: torch.Tensor,
    settings: AISSettings = AISSettings(),
    generator: torch.Generator | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    progress: bool = False,
    batch_size: int | None = None,
) -> AISResult:
    """Forward AIS for every row of ``images`` ``[N, D_x]``, ``batch_size`` images at a time (fewer
    where the chains would pass ``max_rows``: bounded memory).

    ``progress`` shows a tqdm bar counting transitions (pilot and counted chains).
    """
    device = next(model.parameters()).device
    chunks = images.split(_images_per_chunk(settings, decoder_rows(model, max_rows), batch_size))
    bar = _progress_bar(progress, len(chunks) * 2 * settings.steps, f"AIS T={settings.steps} M={settings.chains}")
    results = [forward_ais(model, chunk.to(device), settings, generator, bar) for chunk in chunks]
    if bar is not None:
        bar.close()
    return _concatenate(results)


def simulate(model: HelmholtzMachine, num_images: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x ``[N, D_x]``, z ``[N, D]``) from the model: z ~ p(z), x ~ p(x | z); z is an exact draw of p(z | x)."""
    z, x = ancestral_sample(model, (num_images,), generator)
    return x, z


def bdmc(
    model: HelmholtzMachine,
    num_images: int,
    settings: AISSettings = AISSettings(),
    generator: torch.Generator | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    progress: bool = False,
) -> BDMCResult:
    """BDMC (Grosse et al. 2015) on ``num_images`` images simulated from the model: forward AIS
    (stochastic lower bound) and reverse AIS from the simulated z (stochastic upper bound); see
    :func:`bdmc_on_simulated`."""
    _refuse_discrete_latents(model)
    x, z = simulate(model, num_images, generator)
    return bdmc_on_simulated(model, x, z, settings, generator, max_rows, progress)


def bdmc_on_simulated(
    model: HelmholtzMachine,
    x: torch.Tensor,
    z: torch.Tensor,
    settings: AISSettings = AISSettings(),
    generator: torch.Generator | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    progress: bool = False,
    batch_size: int | None = None,
) -> BDMCResult:
    """Forward and reverse AIS on images x ``[N, D_x]`` simulated with their z ``[N, D]`` (exact
    posterior draws), the reverse run reusing the forward run's step sizes; chunked over images like
    :func:`evaluate_ais`. The same simulated images can so serve several settings."""
    _refuse_discrete_latents(model)
    device = next(model.parameters()).device
    size = _images_per_chunk(settings, decoder_rows(model, max_rows), batch_size)
    bar = _progress_bar(progress, -(-x.shape[0] // size) * 3 * settings.steps, f"BDMC T={settings.steps} M={settings.chains}")
    forwards, reverses = [], []
    for x_chunk, z_chunk in zip(x.split(size), z.split(size)):
        forwards.append(forward_ais(model, x_chunk.to(device), settings, generator, bar))
        reverses.append(reverse_ais(model, x_chunk.to(device), z_chunk.to(device), settings, generator, forwards[-1].step_sizes, bar))
    if bar is not None:
        bar.close()
    return BDMCResult(x.cpu(), z.cpu(), _concatenate(forwards), _concatenate(reverses))
