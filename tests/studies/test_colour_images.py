"""A 32x32x3 8-bit dataset (CIFAR-10's shape, made here) through train -> evaluate -> compare ->
report under discrete likelihoods, with bits/dim on every page: the issue's end-to-end check.

The images are smooth random colour fields quantised to 8 bits, 120 train and 40 test, so a
conv VAE of one epoch runs in seconds; the numbers are not the point, their units are.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from conftest import run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

COMMON = ["--architecture", "conv", "--latent-dim", "8", "--eval-k", "10", "--no-progress", "--threads", "1", "--device", "cpu"]
BITS = re.compile(r"\((\d+\.\d+) bits/dim\)")


def _colour_npz(path):
    """uint8 [N, 32, 32, 3] smooth colour fields: a random 4x4x3 grid upsampled 8x, plus noise."""
    rng = np.random.default_rng(0)
    coarse = rng.uniform(0, 255, size=(160, 4, 4, 3))
    images = np.kron(coarse, np.ones((1, 8, 8, 1))) + rng.normal(0, 8, size=(160, 32, 32, 3))
    images = np.clip(images, 0, 255).round().astype(np.uint8)
    np.savez(path, train=images[:120], test=images[120:])
    return path


@pytest.mark.parametrize("likelihood", ["discretized-logistic-mixture", "categorical"])
def test_colour_images_give_bits_per_dim_from_training_to_the_report(tmp_path, likelihood):
    data = _colour_npz(tmp_path / "colour.npz")
    run = tmp_path / "run"
    # 8 levels for categorical: its 256-way softmax on 3,072 sub-pixels takes minutes
    options = [*COMMON, *(["--bits", "3"] if likelihood == "categorical" else [])]
    status, _, stderr = run_cli("train", "--dataset", data, "--likelihood", likelihood, "--epochs", "1", *options, "--out", run)
    assert status == 0, stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    test_row = next(row for row in rows if row["kind"] == "eval" and row["split"] == "test")
    dims = 3 * 32 * 32
    assert test_row["bound_bpd"] == pytest.approx(-test_row["bound"] / (dims * math.log(2)))
    assert 0 < test_row["bound_bpd"] < 16, test_row  # one epoch: near the 8 bits of a uniform model, in the right unit

    status, stdout, stderr = run_cli("evaluate", run, "--k", "10", "--no-progress")
    assert status == 0, stderr
    printed = BITS.search(stdout + stderr)
    assert printed and 0 < float(printed.group(1)) < 16, stdout + stderr

    study = tmp_path / "study"
    status, _, stderr = run_cli(
        "compare", "--dataset", data, "--algorithms", "aevb,iwae", "--num-samples", "2", "--likelihood", likelihood,
        "--epochs", "1", "--curve-images", "2", *options, "--out", study,
    )
    assert status == 0, stderr
    report = (study / "report.html").read_text()
    assert "bits/dim" in report and "test bits/dim" in report
    entry_caption = {"discretized-logistic-mixture": "mixture of discretized logistics", "categorical": "categorical"}[likelihood]
    assert entry_caption in report and "Bernoulli" not in report, "the report names the model's own likelihood"

    status, stdout, stderr = run_cli("report", study)
    assert status == 0, stderr
    assert "bits/dim" in (study / "report.html").read_text()
