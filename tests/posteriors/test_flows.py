"""Flow posteriors: each step's log-determinant, the density's normalisation, the one-pass log q
against its samples, planar's invertibility condition, and the objectives they refuse or train.

Statistical tests use fixed seeds and state their tolerance in standard errors (SE)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal

from vaelab.batched import check_batchable
from vaelab.builders import build_model
from vaelab.config import ExperimentConfig, ModelConfig, TrainConfig
from vaelab.data import load_dataset
from vaelab.errors import ConfigError
from vaelab.estimators.ais import AISSettings, forward_ais
from vaelab.objectives import OBJECTIVES, check_config, importance_samples, log_mean_exp
from vaelab.objectives.core import normalized_weights, pathwise_log_weights
from vaelab.posteriors import POSTERIORS, get_posterior
from vaelab.posteriors.flow import MEAN_DRAWS, FlowPosterior, FlowRecognition
from vaelab.posteriors.planar import PlanarFlow, constrained_u

FLOWS = [name for name, entry in POSTERIORS.items() if entry.implementation]


def _flow(name: str, latent_dim: int, steps: int = 3, seed: int = 0):
    """A flow of ``name`` in float64 and its local parameters ``[T, P]`` from a random context."""
    torch.manual_seed(seed)
    flow = get_posterior(name).flow()(latent_dim, 6, steps).double()
    with torch.no_grad():  # away from the initialisation (near the identity), so that every step bends z
        for parameter in flow.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return flow, flow(torch.randn(6, dtype=torch.float64))


def _posterior(name: str, latent_dim: int, batch: int = 1, steps: int = 3, seed: int = 0) -> FlowPosterior:
    flow, params = _flow(name, latent_dim, steps, seed)
    loc = torch.randn(batch, latent_dim, dtype=torch.float64) * 0.5
    base = Independent(Normal(loc, torch.full_like(loc, 0.8)), 1)
    return FlowPosterior(base, flow, params.expand(batch, *params.shape))


@pytest.mark.parametrize("name", FLOWS)
@pytest.mark.parametrize("latent_dim", [1, 2, 8])
@pytest.mark.algebra
def test_log_det_equals_the_autograd_jacobian(name, latent_dim):
    flow, params = _flow(name, latent_dim)
    for point in torch.randn(5, latent_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1)):
        jacobian = torch.autograd.functional.jacobian(lambda z0: flow.transform(params, z0)[0], point)
        _, log_det = flow.transform(params, point)
        assert abs(log_det.item() - torch.linalg.slogdet(jacobian).logabsdet.item()) < 1e-5


@pytest.mark.parametrize("name", FLOWS)
@pytest.mark.parametrize("latent_dim", [1, 2, 8])
@pytest.mark.algebra
def test_log_prob_gradient_in_z_without_the_inverse(name, latent_dim):
    # log q(f(z_0)) = log q0(z_0) - log |det J(z_0)| =: r(z_0), so (d log q / dz) J = dr / dz_0 at z = f(z_0)
    posterior = _posterior(name, latent_dim)
    flow, params = posterior.flow, posterior.params[0]
    base = Independent(Normal(posterior.base.base_dist.loc[0], posterior.base.base_dist.scale[0]), 1)  # unbatched
    z0 = posterior.base_draws((4,), torch.Generator().manual_seed(2))[:, 0]  # [4, D]
    score = flow.log_prob_gradient(params, z0, base)
    for point, row in zip(z0, score):
        jacobian = torch.autograd.functional.jacobian(lambda z: flow.transform(params, z)[0], point)
        log_q = torch.autograd.functional.jacobian(lambda z: base.log_prob(z) - flow.transform(params, z)[1], point)
        torch.testing.assert_close(row @ jacobian, log_q, rtol=1e-7, atol=1e-9)
    if get_posterior(name).log_prob:  # and it is the autograd gradient of the exact log q
        z = flow.transform(params, z0)[0].detach().requires_grad_(True)
        (exact,) = torch.autograd.grad(FlowPosterior(base, flow, params).log_prob(z).sum(), z)
        torch.testing.assert_close(score, exact)


@pytest.mark.algebra
def test_iaf_steps_are_autoregressive_in_alternating_orders():
    flow, params = _flow("iaf", 4, steps=2)
    point = torch.randn(4, dtype=torch.float64)
    for steps, lower in ((1, True), (2, None)):
        flow.steps = steps
        jacobian = torch.autograd.functional.jacobian(lambda z0: flow.transform(params, z0)[0], point)
        if lower:  # one step: output d depends on inputs up to d only
            assert torch.equal(jacobian.triu(1), torch.zeros_like(jacobian))
    # two steps in opposite orders: no longer triangular
    assert jacobian.triu(1).abs().sum() > 0 and jacobian.tril(-1).abs().sum() > 0


def _invert(posterior: FlowPosterior, z: torch.Tensor, iterations: int = 60) -> torch.Tensor:
    """z_0 with f(z_0) = z ``[N, 2]`` by Newton's method (each row's 2 x 2 Jacobian from two backward passes);
    exact in two iterations for one IAF step, whose map is affine in each coordinate given the ones before."""
    z0 = z.clone()
    for _ in range(iterations):
        z0 = z0.detach().requires_grad_(True)
        image = posterior.transform(z0)[0]
        if (image - z).abs().max() < 1e-10:
            break
        rows = [torch.autograd.grad(image[:, i].sum(), z0, retain_graph=True)[0] for i in range(2)]
        z0 = z0 - torch.linalg.solve(torch.stack(rows, 1), image - z)  # Jacobian [N, 2, 2]
    assert (posterior.transform(z0)[0] - z).abs().max() < 1e-9  # converged everywhere
    return z0.detach()


@pytest.mark.parametrize("name", FLOWS)
@pytest.mark.algebra
def test_a_2d_flow_density_integrates_to_one_on_a_grid(name):
    posterior = _posterior(name, 2, steps=1 if name == "iaf" else 2)  # several IAF steps: Newton may not reach the far grid
    width, points = 14.0, 281
    axis = torch.linspace(-width / 2, width / 2, points, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)[:, None, :]  # [N, 1, 2]: batch of one image
    z0 = _invert(posterior, grid[:, 0])[:, None, :]
    _, log_det = posterior.transform(z0)
    log_q = posterior.base.log_prob(z0) - log_det
    if get_posterior(name).log_prob:  # the exact inverse agrees with Newton's
        torch.testing.assert_close(posterior.log_prob(grid), log_q)
    cell = (axis[1] - axis[0]) ** 2
    assert abs((log_q.exp().sum() * cell).item() - 1) < 1e-3


@pytest.mark.parametrize("name", FLOWS)
@pytest.mark.statistics
def test_one_pass_log_q_weighs_its_samples_to_another_density(name):
    # E_q[r(z) / q(z)] = 1 and E_q[z r(z) / q(z)] = E_r[z] for a normalised r that q covers: the
    # log q returned with the samples is their normalised density (a wrong log-det biases both).
    posterior = _posterior(name, 3, steps=2)
    z, log_q = posterior.rsample_and_log_prob((40000,), torch.Generator().manual_seed(0))
    z, log_q = z[:, 0].detach(), log_q[:, 0].detach()
    centre = posterior.transform(posterior.base.base_dist.loc)[0][0].detach()  # f(base mean): where q is dense
    narrow = Independent(Normal(centre, 0.3 * z.std(0)), 1)  # inside q's mass, so the ratio's variance is finite
    ratio = (narrow.log_prob(z) - log_q).exp()
    n = ratio.shape[0]
    se = ratio.std() / math.sqrt(n)
    assert abs(ratio.mean() - 1) < 4 * se and se < 0.02
    weighted = ratio[:, None] * z
    assert ((weighted.mean(0) - centre).abs() < 4 * weighted.std(0) / math.sqrt(n)).all()
    if name != "householder":  # power: dropping the log-det (zero for reflections) is caught
        normal = posterior.base.base_dist  # the same base draws: log q0(z_0) in place of log q(z)
        z0 = normal.loc + normal.scale * torch.randn((n, 1, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        wrong = (narrow.log_prob(z) - posterior.base.log_prob(z0)[:, 0]).exp()
        assert abs(wrong.mean() - 1) > 10 * se


@pytest.mark.gradients
def test_planar_condition_holds_after_training_steps():
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=2, hidden=(8,), posterior="planar", flow_steps=3), data_dim=10, likelihood="bernoulli")
    x = torch.bernoulli(torch.full((32, 10), 0.3), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)  # large steps: the raw u, w go anywhere
    generator = torch.Generator().manual_seed(1)
    raw_dots = []
    for _ in range(30):
        optimizer.zero_grad()
        (-OBJECTIVES["iwae"].function(model, x, num_samples=4, generator=generator).theta_surrogate.mean()).backward()
        optimizer.step()
        params = model.recognition.flow(model.recognition.encoder.distribution_and_features(x)[1]).detach()
        u, w = params[..., :2], params[..., 2:4]
        raw_dots.append((u * w).sum(-1).min())
        assert ((constrained_u(u, w) * w).sum(-1) > -1).all()
    assert min(raw_dots) < -1  # the constraint was needed: a raw u . w fell below -1


@pytest.mark.algebra
def test_constrained_u_maps_any_u_to_w_dot_u_above_minus_one():
    w = torch.tensor([1.0, 2.0], dtype=torch.float64)
    for u in (torch.tensor([-5.0, -5.0]), torch.tensor([0.3, 0.1]), torch.tensor([4.0, -3.0])):
        dot = (constrained_u(u.double(), w) * w).sum()
        assert dot > -1
        torch.testing.assert_close(dot, torch.nn.functional.softplus((u.double() * w).sum()) - 1)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")  # zero steps: an empty context map
@pytest.mark.gradients
def test_flow_dreg_equals_dreg_when_the_flow_is_the_identity():
    # The base-space DReG of a flow without an inverse, with zero steps, is DReG of the diagonal q.
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=3, hidden=(8,)), data_dim=10, likelihood="bernoulli").double()
    x = torch.bernoulli(torch.full((4, 10), 0.3, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    phi = model.recognition_parameters()
    diagonal = OBJECTIVES["iwae-dreg"].function(model, x, num_samples=5, generator=torch.Generator().manual_seed(3))
    expected = torch.autograd.grad(diagonal.phi_surrogate.sum(), phi)
    model.recognition = FlowRecognition(model.recognition, PlanarFlow(3, 8, steps=0).double())
    flow = OBJECTIVES["iwae-dreg"].function(model, x, num_samples=5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(flow.bound, diagonal.bound)
    for got, want in zip(torch.autograd.grad(flow.phi_surrogate.sum(), phi), expected):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name, coefficient", [("iwae-dreg", lambda w: w**2), ("rws-dreg", lambda w: w - w**2)])
@pytest.mark.gradients
def test_flow_dreg_equals_dreg_through_the_exact_log_q_of_householder(name, coefficient):
    # with an inverse, DReG's stop-gradient can be written as log q_phi(stop(z)) (pathwise_log_weights):
    # the flow's d log q / dz must give the same phi-gradient on the same draws
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=3, hidden=(6,), posterior="householder", flow_steps=2), data_dim=8, likelihood="bernoulli").double()
    x = torch.bernoulli(torch.full((3, 8), 0.3, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    phi = model.recognition_parameters()
    flow = OBJECTIVES[name].function(model, x, num_samples=5, generator=torch.Generator().manual_seed(1))
    posterior = model.posterior(x)
    samples = importance_samples(model, x, 5, torch.Generator().manual_seed(1), posterior)
    pathwise = pathwise_log_weights(samples, posterior, model.prior_distribution().log_prob(samples.z.detach()))
    surrogate = (coefficient(normalized_weights(samples.log_weights)) * pathwise).sum(0)
    for got, want in zip(torch.autograd.grad(flow.phi_surrogate.sum(), phi), torch.autograd.grad(surrogate.sum(), phi)):
        torch.testing.assert_close(got, want)


def _phi_gradient_draws(name, model, x, draws, seed):
    """``[draws, P]`` phi-gradients of the batch-mean phi surrogate of ``name``, one independent draw per row."""
    generator = torch.Generator().manual_seed(seed)
    phi = model.recognition_parameters()
    rows = []
    for _ in range(draws):
        surrogate = OBJECTIVES[name].function(model, x, num_samples=5, generator=generator).phi_surrogate.mean()
        rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(surrogate, phi)]))
    return torch.stack(rows)


@pytest.mark.parametrize("name", FLOWS)
@pytest.mark.slow
@pytest.mark.statistics
def test_flow_dreg_phi_gradient_is_unbiased_for_the_iwae_gradient(name):
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=2, hidden=(6,), posterior=name, flow_steps=2), data_dim=8, likelihood="bernoulli").double()
    x = torch.bernoulli(torch.full((3, 8), 0.3, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    plain = _phi_gradient_draws("iwae", model, x, 2000, seed=0)
    dreg = _phi_gradient_draws("iwae-dreg", model, x, 2000, seed=1)
    difference_se = ((plain.var(0) + dreg.var(0)) / 2000).sqrt()
    difference = plain.mean(0) - dreg.mean(0)
    assert (difference.abs() <= 4.5 * difference_se).all(), (difference / difference_se).abs().max()
    assert (plain.mean(0).abs() > 10 * difference_se).sum() >= 3  # power: components where a bias of their size would show


@pytest.mark.parametrize("algorithm", sorted(name for name, objective in OBJECTIVES.items() if objective.scores_given_z))
@pytest.mark.parametrize("posterior", [name for name, entry in POSTERIORS.items() if not entry.log_prob])
@pytest.mark.contract
def test_objectives_that_score_a_given_z_refuse_flows_without_an_inverse(algorithm, posterior):
    config = ExperimentConfig(model=ModelConfig(posterior=posterior), train=TrainConfig(algorithm=algorithm, num_samples=2))
    with pytest.raises(ConfigError, match=f"{algorithm} needs log q\\(z \\| x\\) of a given z, which the {posterior} posterior"):
        check_config(config)
    model = build_model(config.model, data_dim=10, likelihood="bernoulli")
    with pytest.raises(ConfigError, match="needs the inverse"):  # and the distribution says so itself
        model.posterior(torch.zeros(1, 10)).log_prob(torch.zeros(1, 2))


@pytest.mark.contract
def test_householder_scores_a_given_z_and_trains_with_rws():
    check_config(ExperimentConfig(model=ModelConfig(posterior="householder"), train=TrainConfig(algorithm="rws", num_samples=2)))
    posterior = _posterior("householder", 4, batch=3)
    z, log_q = posterior.rsample_and_log_prob((5,), torch.Generator().manual_seed(0))
    torch.testing.assert_close(posterior.log_prob(z), log_q)


@pytest.mark.parametrize(
    "model",
    [
        dict(architecture="conv"),
        dict(latent_dim=(4, 2)),
        dict(prior="vamp"),
    ],
)
@pytest.mark.contract
def test_flow_posteriors_refuse_models_they_do_not_fit(model):
    with pytest.raises(ConfigError, match="--posterior iaf needs Gaussian latents, the MLP encoder, one stochastic layer"):
        ModelConfig(posterior="iaf", **model)


@pytest.mark.contract
def test_flow_steps_without_a_flow_are_refused():
    with pytest.raises(ConfigError, match="--flow-steps applies to a flow posterior"):
        ModelConfig(flow_steps=2)


@pytest.mark.contract
def test_analytic_kl_refuses_a_flow_posterior():
    with pytest.raises(ConfigError, match="analytic KL needs .* the diagonal posterior"):
        check_config(ExperimentConfig(model=ModelConfig(posterior="planar"), train=TrainConfig(algorithm="aevb", kl="analytic")))


@pytest.mark.contract
def test_aevb_free_bits_and_warm_up_run_over_a_flow():
    # one layer's KL comes from the log q drawn with z: a flow without an inverse needs no more
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=3, hidden=(8,), posterior="iaf", flow_steps=2), data_dim=10, likelihood="bernoulli")
    x = torch.bernoulli(torch.full((5, 10), 0.3), generator=torch.Generator().manual_seed(0))
    output = OBJECTIVES["aevb"].function(model, x, num_samples=3, generator=torch.Generator().manual_seed(1), kl="monte-carlo", free_bits=100.0, kl_weight=0.5)
    samples = importance_samples(model, x, 3, torch.Generator().manual_seed(1))
    torch.testing.assert_close(output.bound, samples.log_weights.mean(0).detach())
    # every KL is below lambda = 100 nats, so it is held at lambda: E_q[log p(x | z)] - 0.5 * 100
    torch.testing.assert_close(output.phi_surrogate, samples.log_likelihood.mean(0) - 50.0)


@pytest.mark.contract
def test_seeds_trained_together_refuse_a_flow_posterior():
    # the stacked networks of vaelab.batched write out the diagonal Gaussian's maths only
    config = ExperimentConfig(model=ModelConfig(posterior="iaf"), train=TrainConfig(algorithm="iwae", num_samples=2))
    with pytest.raises(ConfigError, match="the diagonal posterior"):
        check_batchable(config, load_dataset("digits"))


@pytest.mark.algebra
def test_ais_without_steps_from_a_flow_is_l_m_on_the_same_draws():
    # the chains walk the flow's base space: with T = 0 their weights are L_M's, draw for draw
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=3, hidden=(8,), posterior="planar", flow_steps=2), data_dim=10, likelihood="bernoulli")
    x = torch.bernoulli(torch.full((4, 10), 0.3), generator=torch.Generator().manual_seed(0))
    ais = forward_ais(model, x, AISSettings(steps=0, chains=7), torch.Generator().manual_seed(2))
    bound = log_mean_exp(importance_samples(model, x, 7, torch.Generator().manual_seed(2)).log_weights.detach())
    torch.testing.assert_close(ais.log_marginal.float(), bound, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", FLOWS)
@pytest.mark.statistics
def test_a_flow_mean_is_a_fixed_monte_carlo_average(name):
    # no closed form: MEAN_DRAWS draws of a fixed stream, the same on every call, near E_q[z] (4 SE of its draws)
    posterior = _posterior(name, 3, batch=2)
    mean = posterior.mean.detach()
    torch.testing.assert_close(posterior.mean.detach(), mean, rtol=0, atol=0)
    z, _ = posterior.rsample_and_log_prob((20000,), torch.Generator().manual_seed(5))
    z = z.detach()
    assert ((mean - z.mean(0)).abs() <= 4 * z.std(0) / math.sqrt(MEAN_DRAWS)).all()
