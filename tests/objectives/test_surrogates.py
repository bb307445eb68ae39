"""Surrogates as functions of log-weights (tiers 1 and 2 of STYLE.md): exact algebra on hand-made
tensors, gradients written out by hand, and ``torch.autograd.gradcheck`` in float64."""

from __future__ import annotations

import pytest
import torch

from vaelab.builders import build_model
from vaelab.config import ModelConfig
from vaelab.objectives import importance_samples, rws, vimco
from vaelab.objectives.core import log_mean_exp
from vaelab.objectives.rws import (
    rws_dreg_phi_surrogate_from_log_weight,
    wake_phi_surrogate_from_log_weight,
)
from vaelab.objectives.vimco import (
    leave_one_out_bounds,
    vimco_phi_surrogate_from_log_weight,
)

# k = 3 samples of B = 2 examples; the second column is spread wide, so its weights are far from uniform.
LOG_WEIGHT = torch.tensor([[-1.0, 0.5], [0.2, -4.0], [-0.3, 2.5]], dtype=torch.float64)
LOG_Q = torch.tensor([[-2.0, -1.1], [-0.7, -3.2], [-1.5, -0.4]], dtype=torch.float64)
LOG_PRIOR = torch.tensor([[-1.2, -2.3], [-0.9, -1.0], [-3.1, -0.6]], dtype=torch.float64)


def normalised_by_hand(log_weight):
    weight = log_weight.exp()
    return weight / weight.sum(0)


def gradient(function, *inputs):
    """d sum(function(inputs)) / d each input (None where an input does not reach the output)."""
    leaves = [value.clone().requires_grad_() for value in inputs]
    return torch.autograd.grad(function(*leaves).sum(), leaves, allow_unused=True)


# ---------------------------------------------------------------- wake-phi (RWS)


@pytest.mark.gradients
def test_wake_phi_gradient_wrt_log_q_is_the_normalised_weights_which_sum_to_one():
    by_log_weight, by_log_q = gradient(wake_phi_surrogate_from_log_weight, LOG_WEIGHT, LOG_Q)
    torch.testing.assert_close(by_log_q, normalised_by_hand(LOG_WEIGHT))
    torch.testing.assert_close(by_log_q.sum(0), torch.ones(2, dtype=torch.float64))
    assert by_log_weight is None  # the weights are constants of the estimator: no gradient through them
    expected = (normalised_by_hand(LOG_WEIGHT) * LOG_Q).sum(0)
    torch.testing.assert_close(wake_phi_surrogate_from_log_weight(LOG_WEIGHT, LOG_Q), expected)


@pytest.mark.algebra
def test_wake_phi_is_unchanged_by_a_constant_added_to_an_example_s_log_weights():
    # self-normalisation: log p(x) (a per-example constant) need not be known
    shifted = LOG_WEIGHT + torch.tensor([7.0, -300.0], dtype=torch.float64)
    torch.testing.assert_close(wake_phi_surrogate_from_log_weight(shifted, LOG_Q), wake_phi_surrogate_from_log_weight(LOG_WEIGHT, LOG_Q))


@pytest.mark.gradients
def test_rws_dreg_gradient_wrt_the_pathwise_log_weights_is_w_minus_w_squared():
    weights = normalised_by_hand(LOG_WEIGHT)
    by_log_weight, by_pathwise = gradient(rws_dreg_phi_surrogate_from_log_weight, LOG_WEIGHT, LOG_Q)
    torch.testing.assert_close(by_pathwise, weights - weights**2)
    assert by_log_weight is None
    # one sample: w~ = 1, so the doubly reparameterised wake-phi has no signal (hence min_samples = 2)
    _, single = gradient(rws_dreg_phi_surrogate_from_log_weight, LOG_WEIGHT[:1], LOG_Q[:1])
    torch.testing.assert_close(single, torch.zeros(1, 2, dtype=torch.float64))


# ---------------------------------------------------------------- VIMCO


@pytest.mark.algebra
def test_vimco_leave_one_out_baselines_for_three_samples_written_out_by_hand():
    # L^_{-i} = log (1/3) (w_j + w_l + exp((log w_j + log w_l) / 2)),  {j, l} the two other samples
    a0, a1, a2 = LOG_WEIGHT
    expected = torch.stack([
        torch.log((a1.exp() + a2.exp() + ((a1 + a2) / 2).exp()) / 3),
        torch.log((a0.exp() + a2.exp() + ((a0 + a2) / 2).exp()) / 3),
        torch.log((a0.exp() + a1.exp() + ((a0 + a1) / 2).exp()) / 3),
    ])
    torch.testing.assert_close(leave_one_out_bounds(LOG_WEIGHT), expected)


@pytest.mark.gradients
def test_each_vimco_baseline_is_independent_of_its_own_sample():
    # d L^_{-i} / d log w_i = 0 (what keeps the estimator unbiased), and examples do not mix
    jacobian = torch.autograd.functional.jacobian(leave_one_out_bounds, LOG_WEIGHT)  # [k, B, k, B]
    k, batch = LOG_WEIGHT.shape
    for i in range(k):
        for b in range(batch):
            assert jacobian[i, b, i, b] == 0
            other_examples = [c for c in range(batch) if c != b]
            assert (jacobian[i, b, :, other_examples] == 0).all()
    assert (jacobian.abs() > 1e-3).sum() == k * (k - 1) * batch  # ... while every other sample counts


@pytest.mark.gradients
def test_vimco_gradients_are_the_learning_signals_and_the_normalised_weights():
    a0, a1, a2 = LOG_WEIGHT
    estimate = torch.log((a0.exp() + a1.exp() + a2.exp()) / 3)  # L^
    signal = estimate - leave_one_out_bounds(LOG_WEIGHT) - normalised_by_hand(LOG_WEIGHT)  # [k, B]
    by_log_weight, by_log_q, by_log_prior = gradient(vimco_phi_surrogate_from_log_weight, LOG_WEIGHT, LOG_Q, LOG_PRIOR)
    torch.testing.assert_close(by_log_q, signal)
    torch.testing.assert_close(by_log_prior, normalised_by_hand(LOG_WEIGHT))
    assert by_log_weight is None
    # without a prior that shares phi the prior's term is left out, and only it
    without_prior = vimco_phi_surrogate_from_log_weight(LOG_WEIGHT, LOG_Q)
    with_prior = vimco_phi_surrogate_from_log_weight(LOG_WEIGHT, LOG_Q, LOG_PRIOR)
    torch.testing.assert_close(with_prior - without_prior, (normalised_by_hand(LOG_WEIGHT) * LOG_PRIOR).sum(0))


@pytest.mark.algebra
def test_vimco_learning_signal_of_equal_weights_is_minus_one_over_k():
    # all w_i equal: every L^_{-i} = L^, so each sample's signal is -w~_i = -1/k
    _, by_log_q = gradient(vimco_phi_surrogate_from_log_weight, torch.full((4, 2), -1.7, dtype=torch.float64), LOG_Q[:1].expand(4, 2))
    torch.testing.assert_close(by_log_q, torch.full((4, 2), -0.25, dtype=torch.float64))


# ---------------------------------------------------------------- gradcheck in float64


@pytest.mark.parametrize(
    "name, function, inputs",
    [
        ("L_k (the theta surrogate)", log_mean_exp, (LOG_WEIGHT,)),
        ("leave-one-out baselines", leave_one_out_bounds, (LOG_WEIGHT,)),
        ("wake-phi", lambda log_q: wake_phi_surrogate_from_log_weight(LOG_WEIGHT, log_q), (LOG_Q,)),
        ("rws-dreg", lambda pathwise: rws_dreg_phi_surrogate_from_log_weight(LOG_WEIGHT, pathwise), (LOG_Q,)),
        ("vimco", lambda log_q, log_prior: vimco_phi_surrogate_from_log_weight(LOG_WEIGHT, log_q, log_prior), (LOG_Q, LOG_PRIOR)),
    ],
)
@pytest.mark.gradients
def test_gradcheck(name, function, inputs):
    assert torch.autograd.gradcheck(function, [value.clone().requires_grad_() for value in inputs]), name


@pytest.mark.gradients
def test_gradient_of_l_k_is_the_normalised_weights():
    (by_log_weight,) = gradient(log_mean_exp, LOG_WEIGHT)
    torch.testing.assert_close(by_log_weight, normalised_by_hand(LOG_WEIGHT))
    torch.testing.assert_close(log_mean_exp(LOG_WEIGHT), torch.log(LOG_WEIGHT.exp().mean(0)))


# ---------------------------------------------------------------- the objectives call them


@pytest.mark.parametrize("name", ["rws", "vimco"])
@pytest.mark.algebra
def test_objective_phi_surrogate_is_its_function_of_its_own_log_weights(name):
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=3, hidden=(8,), prior="vamp", prior_components=4), data_dim=10, likelihood="bernoulli").double()
    x = torch.bernoulli(torch.full((5, 10), 0.3, dtype=torch.float64), generator=torch.Generator().manual_seed(1))
    output = {"rws": rws, "vimco": vimco}[name](model, x, num_samples=4, generator=torch.Generator().manual_seed(2))
    samples = importance_samples(model, x, 4, torch.Generator().manual_seed(2), reparameterize=False)  # the same draws
    if name == "rws":
        expected = wake_phi_surrogate_from_log_weight(samples.log_weights, samples.log_proposal)
    else:
        expected = vimco_phi_surrogate_from_log_weight(samples.log_weights, samples.log_proposal, samples.log_prior)
    torch.testing.assert_close(output.phi_surrogate, expected)
    torch.testing.assert_close(output.bound, log_mean_exp(samples.log_weights).detach())
