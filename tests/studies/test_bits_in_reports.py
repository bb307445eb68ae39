"""Bits/dim beside the nats in what the studies write: the compare sentences, table and figures, and
the reproduction's table; nothing changes where the bound has no bits/dim."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vaelab.evaluation.across_seeds import across_seeds
from vaelab.evaluation.units import BitsPerDim
from vaelab.studies.compare.figures import bound_against_k_figure, training_curves_figure
from vaelab.studies.compare.summary import (
    Estimate,
    Series,
    comparison_sentence,
    paired_comparison_sentence,
    seeds_comparison_sentence,
)
from vaelab.studies.reproduce.report import build_report

LN2 = math.log(2)
BINARY = BitsPerDim(dims=784, offset=0.0)  # binarized MNIST
DEQUANTIZED = BitsPerDim(dims=560, offset=560 * math.log(256))  # Frey faces under a density of dequantized 8-bit pixels


@pytest.mark.algebra
def test_bits_per_dim_of_an_experiment_and_its_inverse():
    assert DEQUANTIZED.of(-500.0) == pytest.approx((500 + 560 * math.log(256)) / (560 * LN2))
    assert DEQUANTIZED.nats(DEQUANTIZED.of(-500.0)) == pytest.approx(-500.0)  # the figures' second axis maps back
    assert BINARY.spread(784 * LN2) == pytest.approx(1.0)


@pytest.mark.algebra
def test_comparison_sentence_in_bits_per_dim():
    bounds = {"wake-sleep": Estimate(-143.3, 0.5), "aevb": Estimate(-140.1, 0.4)}
    assert comparison_sentence(bounds, 1000, BINARY) == (
        f"AEVB is ahead of wake-sleep on test L_1000 by 3.2 nats ({3.2 / (784 * LN2):.4f} bits/dim) "
        f"(-140.1 ± 0.4 vs -143.3 ± 0.5 nats; {140.1 / (784 * LN2):.3f} vs {143.3 / (784 * LN2):.3f} bits/dim)."
    )
    assert comparison_sentence(bounds, 1000) == "AEVB is ahead of wake-sleep on test L_1000 by 3.2 nats (-140.1 ± 0.4 vs -143.3 ± 0.5)."
    alone = comparison_sentence({"aevb": Estimate(-500.0, 1.0)}, 10, DEQUANTIZED)
    assert f"= -500.0 ± 1.0 nats ({DEQUANTIZED.of(-500.0):.3f} bits/dim); there is nothing" in alone  # 9.288 with the D ln 256 offset


@pytest.mark.algebra
def test_paired_and_seeds_sentences_in_bits_per_dim():
    index = np.arange(4)
    per_image = {"aevb": (index, np.array([-100.0, -101.0, -99.0, -100.0])), "iwae": (index, np.array([-102.0, -103.0, -101.0, -102.5]))}
    bounds = {name: Estimate(float(values.mean()), 0.5) for name, (_, values) in per_image.items()}
    sentence = paired_comparison_sentence(bounds, per_image, 5, BINARY)
    lead = 2.125 / (784 * LN2)
    assert f"by 2.12 ± 0.12 nats ({lead:.4f} bits/dim)" in sentence and f"nats; {100 / (784 * LN2):.3f} vs " in sentence, sentence
    level = {"aevb": per_image["aevb"], "iwae": (index, per_image["aevb"][1] + np.array([0.1, -0.1, 0.1, -0.11]))}  # a lead of 0.0025 ± 0.05
    sentence = paired_comparison_sentence({name: Estimate(float(v.mean()), 0.5) for name, (_, v) in level.items()}, level, 5, BINARY)
    assert "not significantly ahead" in sentence and " bits/dim, under two standard errors)" in sentence, sentence
    seeds = {"aevb": across_seeds({0: -100.0, 1: -101.0}), "iwae": across_seeds({0: -103.0, 1: -104.5})}
    sentence = seeds_comparison_sentence(seeds, None, 0, 5, BINARY)
    assert f"by 3.25 nats ({3.25 / (784 * LN2):.4f} bits/dim) over 2 seeds" in sentence
    assert sentence.endswith(f"-100.50 ± 0.71 vs -103.75 ± 1.06 nats; {100.5 / (784 * LN2):.3f} vs {103.75 / (784 * LN2):.3f} bits/dim."), sentence


@pytest.mark.algebra
def test_figures_of_the_bound_get_a_bits_per_dim_axis_only_with_bits():
    curves = {"aevb": ([1, 2, 5], [-100.0, -99.0, -98.5], [0.5, 0.5, 0.5])}
    history = {"aevb": {"test": [Series([1, 2], [-110.0, -100.0], [1.0, 1.0])]}}
    for figure in (bound_against_k_figure(curves, 10, BINARY), training_curves_figure(history, 5, bits=BINARY)):
        (axis,) = [child for child in figure.axes[0].get_children() if type(child).__name__ == "SecondaryAxis"]
        assert axis.get_ylabel() == "bits/dim (lower is better)"
    for figure in (bound_against_k_figure(curves, 10), training_curves_figure(history, 5)):
        assert not [child for child in figure.axes[0].get_children() if type(child).__name__ == "SecondaryAxis"]


def _final(out, row: str, bound: float, bits: float | None) -> None:
    (out / row).mkdir()
    final = {"bound": bound, "bound_stderr": 0.5, "elbo": bound - 3, "elbo_stderr": 0.6, "k": 5, "epoch": 1, "num_images": 500, "eval_seconds": 1.0}
    (out / row / "final.json").write_text(json.dumps(final | ({} if bits is None else {"bound_bpd": bits})))


@pytest.mark.algebra
def test_the_reproduction_table_gives_the_measured_bits_per_dim(tmp_path):
    (tmp_path / "reproduce.json").write_text(json.dumps({"preset": "kingma2013", "budget": "smoke"}))
    _final(tmp_path, "aevb", -101.0, 101.0 / (784 * LN2))
    _final(tmp_path, "wake-sleep", -100.0, None)  # evaluated before bits/dim were recorded
    report = build_report(tmp_path)
    text = report.markdown.read_text()
    assert "| measured NLL | measured -ELBO | measured bits/dim | k |" in text
    assert f"| 101.00 ± 0.50 | 104.00 ± 0.60 | {101.0 / (784 * LN2):.4f} | 5 (500 images) |" in text
    assert "| 100.00 ± 0.50 | 103.00 ± 0.60 | - | 5 (500 images) |" in text
    assert f"measured 101.00 ± 0.50 ({101.0 / (784 * LN2):.4f} bits/dim) (L_5;" in report.lines[0]
    assert "bits/dim" not in report.lines[1]
