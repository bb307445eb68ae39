"""Bits per dimension: the conversion on hand-computed numbers, the offset of each kind of experiment,
and the rows and lines of an evaluation that carry them beside the nats."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import run_cli

from vaelab.builders import build_model
from vaelab.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from vaelab.data.user import dataset_from_arrays
from vaelab.evaluation.across_seeds import summarise_rows
from vaelab.evaluation.evaluate import evaluate_split
from vaelab.evaluation.lines import ais_line, bdmc_line, bound_line
from vaelab.evaluation.units import bits_per_dim, bits_per_dim_fields, bits_per_dim_offset, bits_per_dim_spread
from vaelab.runio import METRICS_FILE, read_metrics


def _dataset(binary: bool, levels: int | None, likelihood: str = "bernoulli", shape=(4, 5)):
    """20 train and 10 test images of ``shape``: binary, or grey on ``levels`` values (None: continuous)."""
    rng = np.random.default_rng(0)
    if binary:
        values = rng.integers(0, 2, (30, *shape)).astype(np.float32)
    elif levels is None:
        values = rng.random((30, *shape)).astype(np.float32)
    else:
        values = (rng.integers(0, levels, (30, *shape)) / (levels - 1)).astype(np.float32)
    dataset = dataset_from_arrays(train=values[:20], test=values[20:], likelihood=likelihood)
    return dataclasses.replace(dataset, levels=levels)


def _config(likelihood: str = "auto", binarization: str = "static") -> ExperimentConfig:
    return ExperimentConfig(data=DataConfig(binarization=binarization), model=ModelConfig(likelihood=likelihood, hidden=(8,), latent_dim=2),
                            train=TrainConfig(eval_batch_size=5))


# --- the conversion -------------------------------------------------------------------------------------


@pytest.mark.algebra
def test_bits_per_dim_of_hand_computed_bounds():
    # a discrete bound: -1000 nats over the 784 pixels of MNIST is 1000 / (784 ln 2) = 1000 / 543.4274 = 1.84017... bits/dim
    assert bits_per_dim(-1000.0, 784) == pytest.approx(1.8401722, abs=1e-7)
    # a density on dequantized 8-bit data: L = -500 nats, D = 560 (Frey Face), levels 256 ->
    # (500 + 560 ln 256) / (560 ln 2) = 500 / 388.1624 + 8 = 9.28812...
    assert bits_per_dim(-500.0, 560, 560 * math.log(256)) == pytest.approx(9.2881206, abs=1e-7)
    # a positive log-density can still be a fine model of 8-bit data once the offset is paid
    assert bits_per_dim(560 * math.log(256) - 560 * math.log(2), 560, 560 * math.log(256)) == pytest.approx(1.0)
    # standard errors and differences scale without the offset or the sign
    assert bits_per_dim_spread(784 * math.log(2), 784) == pytest.approx(1.0)


@pytest.mark.algebra
def test_bits_per_dim_works_elementwise_on_tensors_and_arrays():
    nats = torch.tensor([-1000.0, -500.0], dtype=torch.float64)
    expected = torch.tensor([1000.0, 500.0], dtype=torch.float64) / (784 * math.log(2))
    torch.testing.assert_close(bits_per_dim(nats, 784), expected)
    np.testing.assert_allclose(bits_per_dim(nats.numpy(), 784), expected.numpy())


# --- the offset of each experiment ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "likelihood,binary,levels,binarization,offset",
    [
        ("bernoulli", True, 2, "none", 0.0),  # binary data: Bernoulli scores them as they are
        ("bernoulli", False, 256, "static", 0.0),  # grey data binarized: the bits are what is scored
        ("bernoulli", False, 256, "dynamic", 0.0),
        ("bernoulli", False, 256, "none", None),  # grey values as targets: no normalised likelihood
        ("bernoulli", False, None, "none", None),
        ("gaussian", False, 256, "static", 20 * math.log(256)),  # dequantized 8-bit data: D ln 256
        ("gaussian", False, 17, "static", 20 * math.log(17)),  # the digits' 17 levels
        ("gaussian", False, None, "static", None),  # a density of continuous data: no bits/dim
        ("categorical", False, 256, "static", 0.0),  # a discrete family scores P(x) itself
        ("discretized-logistic", False, 32, "static", 0.0),
        ("categorical", False, None, "static", None),
    ],
)
@pytest.mark.algebra
def test_offset_of_each_family_and_kind_of_data(likelihood, binary, levels, binarization, offset):
    # the family reached through 'auto' (the dataset's), so that families LIK adds need no ModelConfig choice here
    dataset = dataclasses.replace(_dataset(binary, levels), likelihood=likelihood)
    config = _config(binarization=binarization)
    assert bits_per_dim_offset(config, dataset) == (None if offset is None else pytest.approx(offset))


@pytest.mark.algebra
def test_offset_follows_the_dataset_likelihood_under_auto():
    assert bits_per_dim_offset(_config(), _dataset(False, 256, "gaussian")) == pytest.approx(20 * math.log(256))
    assert bits_per_dim_offset(_config(binarization="none"), _dataset(False, 256, "bernoulli")) is None


# --- rows and lines -------------------------------------------------------------------------------------


def _row(likelihood: str, binary: bool, levels: int | None, binarization: str = "static"):
    torch.manual_seed(0)
    dataset = _dataset(binary, levels, likelihood)
    config = _config(likelihood, binarization)
    model = build_model(config.model, dataset.data_dim, likelihood)
    row = evaluate_split(model, config, dataset, "test", 2, epoch=1)
    return {**row, "epoch": 1}, dataset


@pytest.mark.e2e
def test_an_evaluation_row_and_its_line_carry_bits_per_dim_on_discrete_data():
    row, dataset = _row("gaussian", False, 17)
    offset = dataset.data_dim * math.log(17)
    for key in ("bound", "elbo"):
        assert row[f"{key}_bpd"] == pytest.approx(-(row[key] - offset) / (dataset.data_dim * math.log(2)), rel=1e-12)
        assert row[f"{key}_bpd_stderr"] == pytest.approx(row[f"{key}_stderr"] / (dataset.data_dim * math.log(2)), rel=1e-12)
    line = bound_line(row)
    assert f"test L_2 = {row['bound']:.3f} ± {row['bound_stderr']:.3f} nats ({row['bound_bpd']:.3f} bits/dim)" in line, line

    binary, _ = _row("bernoulli", True, 2)
    assert binary["bound_bpd"] == pytest.approx(-binary["bound"] / (20 * math.log(2)), rel=1e-12)  # no offset


@pytest.mark.e2e
def test_no_bits_per_dim_where_the_bound_has_none():
    for row in (_row("bernoulli", False, 256, "none")[0], _row("gaussian", False, None)[0]):
        assert not any(key.endswith("_bpd") for key in row), row
        assert "bits/dim" not in bound_line(row)


@pytest.mark.algebra
def test_ais_and_bdmc_lines_and_rows_in_bits_per_dim():
    dataset, config = _dataset(True, 2), _config()
    ais = {"split": "test", "log_px": -100.0, "log_px_stderr": 1.0, "steps": 10, "chains": 2, "acceptance": None, "decoder_passes": 20,
           "num_images": 10, "epoch": 1, "eval_seconds": 1.0}
    ais.update(bits_per_dim_fields(ais, config, dataset))
    assert ais["log_px_bpd"] == pytest.approx(100 / (20 * math.log(2)))
    assert f"= -100.000 ± 1.000 nats ({100 / (20 * math.log(2)):.3f} bits/dim) (T=10" in ais_line(ais)
    bdmc = {"steps": 10, "chains": 2, "num_images": 5, "lower": -100.0, "lower_stderr": 1.0, "upper": -99.0, "upper_stderr": 1.0,
            "width_abs_mean": 1.0, "width_mean": 1.0, "width_max": 1.0, "inverted": 0.0, "eval_seconds": 1.0}
    bdmc.update(bits_per_dim_fields(bdmc, config, dataset))
    assert f"(lower {100 / (20 * math.log(2)):.3f}, upper {99 / (20 * math.log(2)):.3f} bits/dim)" in bdmc_line(bdmc)
    assert bits_per_dim_fields(bdmc, _config(binarization="none"), _dataset(False, 256)) == {}


@pytest.mark.algebra
def test_summary_over_seeds_in_bits_per_dim_where_every_row_has_them():
    scale = 20 * math.log(2)
    rows = {group: {seed: {"bound": bound, "bound_bpd": -bound / scale} for seed, bound in by_seed.items()}
            for group, by_seed in {"a": {0: -100.0, 1: -102.0}, "b": {0: -110.0, 1: -111.0}}.items()}
    summary, lines = summarise_rows("test L_5", rows)
    assert summary["bits_per_dim"]["a"]["mean"] == pytest.approx(101 / scale)
    assert lines[0].startswith("a: test L_5 = -101.00 ± 1.41 (sd over 2 seeds); 95% interval [")
    assert lines[0].endswith(f"; in bits/dim {101 / scale:.3f} ± {math.sqrt(2) / scale:.3f} (sd over seeds)"), lines
    assert f"a - b: +9.50 nats ({-9.5 / scale:+.4f} bits/dim)," in lines[2], lines
    del rows["b"][1]["bound_bpd"]  # a row without bits/dim (grey Bernoulli targets): none for the summary
    summary, lines = summarise_rows("test L_5", rows)
    assert "bits_per_dim" not in summary and not any("bits/dim" in line for line in lines)


@pytest.mark.slow
@pytest.mark.e2e
def test_vaelab_evaluate_prints_and_saves_bits_per_dim_of_binarized_digits(run):
    status, out, err = run_cli("evaluate", run, "--k", "5", "--images", "50", "--no-progress", "--device", "cpu")
    assert status == 0, err
    row = read_metrics(run / METRICS_FILE)[-1]
    assert row["bound_bpd"] == pytest.approx(-row["bound"] / (64 * math.log(2)))  # 8 x 8 digits, binarized: D = 64, no offset
    assert out.startswith(f"test L_5 = {row['bound']:.3f} ± {row['bound_stderr']:.3f} nats ({row['bound_bpd']:.3f} bits/dim) (ELBO"), out
