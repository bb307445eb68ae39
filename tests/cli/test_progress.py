"""Progress bars with an ETA on the long steps: evaluation passes, bound curves, quadrature."""

from __future__ import annotations

import pytest
import torch

from vaelab import progress
from vaelab.builders import build_model
from vaelab.config import ModelConfig
from vaelab.estimators.bounds import bound_curve, evaluate_bound
from vaelab.exact.quadrature import QuadratureSettings, quadrature_log_marginal
from vaelab.progress import bar, write

pytestmark = pytest.mark.algebra


@pytest.fixture
def terminal(monkeypatch):
    """stderr as a terminal, where bars are drawn (captured all the same)."""
    monkeypatch.setattr(progress, "stderr_is_a_terminal", lambda: True)


def test_long_steps_show_a_bar_with_an_eta_only_when_asked(capsys, terminal):
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=2, hidden=(8,)), 6, "bernoulli").eval()
    images = torch.bernoulli(torch.full((30, 6), 0.5), generator=torch.Generator().manual_seed(0))
    quiet = evaluate_bound(model, images, 5, torch.Generator().manual_seed(1), batch_size=10)
    assert capsys.readouterr().err == ""
    shown = evaluate_bound(model, images, 5, torch.Generator().manual_seed(1), batch_size=10, progress="test L_5")
    assert torch.equal(quiet, shown)  # the bar changes nothing
    error = capsys.readouterr().err
    assert "test L_5" in error and "/30 [" in error and "img/s" in error and "<" in error  # [elapsed<left]: the ETA
    bound_curve(model, images, (1, 5), torch.Generator().manual_seed(1), batch_size=10, progress="curve")
    quadrature_log_marginal(model, images[:4], QuadratureSettings(), batch_size=2, progress="quadrature")
    error = capsys.readouterr().err
    assert "curve" in error and "/30 [" in error and "quadrature" in error and "/4 [" in error


def test_no_bars_where_stderr_is_no_terminal_but_every_line(capsys):
    """A log file or pipe (a cluster's output) gets the lines between bars, not the redrawn bars."""
    shown = bar(10, "epoch 1/2", "img")
    shown.update(10)
    write("epoch 1: test L_10 = -40.000 ± 1.000 nats")
    shown.close()
    out, err = capsys.readouterr()
    assert out == "epoch 1: test L_10 = -40.000 ± 1.000 nats\n" and err == ""


def test_bars_are_drawn_on_a_terminal_unless_disabled(capsys, terminal):
    for disable in (False, True):
        shown = bar(10, "epoch 1/2", "img", disable=disable)
        shown.update(10)
        shown.close()
        assert ("epoch 1/2" in capsys.readouterr().err) is not disable
