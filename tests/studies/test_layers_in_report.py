"""The compare report's per-layer table: each stochastic layer's test KL and active units."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import TINY, run_cli
from torch.distributions import kl_divergence

from vaelab.builders import build_model
from vaelab.config import ModelConfig
from vaelab.data import load_dataset
from vaelab.models.sampling import sample
from vaelab.studies.compare import analysis

DIGITS = load_dataset("digits")


def _images(count: int) -> torch.Tensor:
    return DIGITS.unit_images("test")[:count].double()


@pytest.mark.algebra
def test_layer_kls_are_the_layers_terms_of_the_monte_carlo_kl_at_the_same_draws():
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=(8, 4), hidden=(16,), upper_hidden=(12,)), DIGITS.data_dim, "bernoulli").double()
    images, samples, batch = _images(100), 5, 40  # three batches: 40, 40, 20
    kls = analysis.layer_kls(model, images, torch.Generator().manual_seed(3), num_samples=samples, batch_size=batch)

    # The same draws, batch by batch from the same generator, scored layer by layer by hand and as one flat z.
    generator, by_layer, total = torch.Generator().manual_seed(3), [], []
    with torch.no_grad():
        for x in images.split(batch):
            posterior, prior = model.posterior(x), model.prior_distribution()
            z = sample(posterior, (samples,), generator)  # [S, B, 12]
            z1, z2 = z.split((8, 4), dim=-1)
            kl_1 = model.recognition(x).log_prob(z1) - model.upper_generative[0].log_prob(z2, z1)  # log q(z_1 | x) - log p(z_1 | z_2)
            kl_2 = model.upper_recognition[0].log_prob(z1, z2) - model.prior().log_prob(z2)  # log q(z_2 | z_1) - log p(z_2)
            by_layer.append(torch.stack([kl_1, kl_2], dim=-1).mean(0))
            total.append((posterior.log_prob(z) - prior.log_prob(z)).mean(0))
    torch.testing.assert_close(torch.tensor(kls, dtype=torch.float64), torch.cat(by_layer).mean(0))
    torch.testing.assert_close(sum(kls), float(torch.cat(total).mean()))
    assert all(kl != 0 for kl in kls)


@pytest.mark.statistics
def test_one_layers_kl_matches_the_closed_form():
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=4, hidden=(16,)), DIGITS.data_dim, "bernoulli").double()
    images = _images(50)
    (kl,) = analysis.layer_kls(model, images, torch.Generator().manual_seed(0), num_samples=2000)
    with torch.no_grad():
        exact = float(kl_divergence(model.posterior(images), model.prior_distribution()).mean())
    # 2000 x 50 draws of log q - log p (sd about 0.75 nats here): a standard error of 0.0024 nats; 0.01 is four of them
    assert kl == pytest.approx(exact, abs=0.01)


@pytest.mark.algebra
def test_layer_active_units_split_the_total_by_layer():
    means = torch.zeros(6, 5, dtype=torch.float64)
    means[:, 0] = torch.arange(6.0)  # variance 3.5: active
    means[:, 3] = torch.arange(6.0) * 0.01  # variance 3.5e-4: inactive
    means[:, 4] = torch.arange(6.0) * 0.2  # variance 0.14: active
    assert analysis.layer_active_units(means, (3, 2)) == [1, 1]
    assert sum(analysis.layer_active_units(means, (3, 2))) == analysis.active_units(means)[0] == 2


def _layers_table(page: str) -> str:
    start = page.index('id="layers"')
    return page[start : page.index("</p>", start)]


@pytest.mark.e2e
@pytest.mark.slow
def test_a_two_layer_studys_report_has_the_per_layer_table(tmp_path, finished_study):
    out = tmp_path / "study"
    status, _, stderr = run_cli("compare", "--algorithms", "aevb", *TINY, "--latent-dim", "8,4", "--epochs", "1", "--curve-images", "20", "--out", out)
    assert status == 0, stderr
    table = _layers_table((out / "report.html").read_text())
    assert table.count("<th colspan=\"2\">") == 2 and "z<sub>1</sub> (8 units)" in table and "z<sub>2</sub> (4 units)" in table
    (row,) = re.findall(r"<tr><td>AEVB</td>(.*?)</tr>", table)
    cells = re.findall(r'<td class="number">([^<]*)</td>', row)
    assert len(cells) == 4 and re.fullmatch(r"\d+ / 8", cells[1]) and re.fullmatch(r"\d+ / 4", cells[3]), cells
    assert all(re.fullmatch(r"-?\d+\.\d\d", cells[index]) for index in (0, 2)), cells
    assert "has collapsed" in table

    # one stochastic layer: no per-layer table
    assert 'id="layers"' not in (finished_study / "report.html").read_text()


@pytest.mark.e2e
@pytest.mark.slow
def test_over_seeds_the_per_layer_table_gives_mean_and_sd_and_each_seeds_active_units(tmp_path):
    out = tmp_path / "study"
    status, _, stderr = run_cli(
        "compare", "--algorithms", "aevb", *TINY, "--latent-dim", "8,4", "--epochs", "1", "--curve-images", "20", "--seeds", "0,1", "--out", out
    )
    assert status == 0, stderr
    table = _layers_table((out / "report.html").read_text())
    (row,) = re.findall(r"<tr><td>AEVB</td>(.*?)</tr>", table)
    cells = re.findall(r'<td class="number">([^<]*)</td>', row)
    assert len(cells) == 4 and re.fullmatch(r"\d+, \d+ / 8", cells[1]) and re.fullmatch(r"\d+, \d+ / 4", cells[3]), cells
    assert all(re.fullmatch(r"-?\d+\.\d\d ± \d+\.\d\d", cells[index]) for index in (0, 2)), cells
    assert "mean ± sd over seeds" in table


@pytest.mark.e2e
@pytest.mark.slow
def test_a_conv_ladders_report_counts_each_layers_spatial_units(tmp_path):
    """A conv ladder's --latent-dim gives channels: the report's layers, its active units and the
    latent space in its captions are the model's flat widths (digits: 2 and 1 channels of 4x4)."""
    out = tmp_path / "study"
    status, _, stderr = run_cli(
        "compare", "--algorithms", "aevb", *TINY, "--architecture", "conv-ladder", "--latent-dim", "2,1", "--epochs", "1", "--curve-images", "20", "--out", out
    )
    assert status == 0, stderr
    html = (out / "report.html").read_text()
    table = _layers_table(html)
    assert "z<sub>1</sub> (32 units)" in table and "z<sub>2</sub> (16 units)" in table
    (row,) = re.findall(r"<tr><td>AEVB</td>(.*?)</tr>", table)
    cells = re.findall(r'<td class="number">([^<]*)</td>', row)
    assert re.fullmatch(r"\d+ / 32", cells[1]) and re.fullmatch(r"\d+ / 16", cells[3]), cells
    assert "z has 48 dimensions" in html
