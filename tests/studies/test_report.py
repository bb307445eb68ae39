"""The report's pieces on hand-made numbers: sentences, active units, the latent grid, tiling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vaelab.studies.compare.analysis import (
    active_units,
    grid_position,
    latent_grid,
    plane_projection,
)
from vaelab.studies.compare.figures import mosaic
from vaelab.studies.compare.report import _config_value, _dataset_name
from vaelab.studies.compare.summary import (
    Estimate,
    caveats,
    comparison_sentence,
    format_duration,
    paired_comparison_sentence,
    paired_difference,
    summarise_run,
)

pytestmark = pytest.mark.algebra


def test_comparison_sentence_of_two_algorithms():
    sentence = comparison_sentence({"wake-sleep": Estimate(-143.3, 0.5), "aevb": Estimate(-140.1, 0.4)}, 1000)
    assert sentence == "AEVB is ahead of wake-sleep on test L_1000 by 3.2 nats (-140.1 ± 0.4 vs -143.3 ± 0.5)."


def test_comparison_sentence_ranks_more_algorithms_and_says_level():
    bounds = {"a": Estimate(-100.04, 0.3), "b": Estimate(-99.0, 0.2), "c": Estimate(-99.96, 0.3)}
    assert comparison_sentence(bounds, 50) == (
        "B is ahead of c on test L_50 by 1.0 nats and c is level with a (-99.0 ± 0.2 vs -100.0 ± 0.3 vs -100.0 ± 0.3)."
    )
    four = {"w": Estimate(-4.0, 0.1), "x": Estimate(-1.0, 0.1), "y": Estimate(-2.0, 0.1), "z": Estimate(-3.0, 0.1)}
    assert comparison_sentence(four, 10).startswith(
        "X is ahead of y on test L_10 by 1.0 nats, y is ahead of z by 1.0 nats and z is ahead of w by 1.0 nats ("
    )


def test_paired_difference_is_the_mean_of_differences_with_their_standard_error():
    lead = paired_difference(np.array([1.0, 2.0, 4.0]), np.array([0.0, 1.5, 2.5]))  # differences 1, 0.5, 1.5
    assert lead.mean == pytest.approx(1.0) and lead.stderr == pytest.approx(0.5 / math.sqrt(3))


def test_paired_sentence_says_significant_and_not_significant():
    # image difficulty varies far more than the runs differ: the unpaired errors (±0.6) would call a
    # 0.3-nat lead noise, the paired one (±0.01) sees it; a lead within two paired SE is not significant
    index = np.arange(100)
    base = np.linspace(-120.0, -80.0, 100)
    jitter = np.where(index % 2 == 0, 0.05, -0.05)
    per_image = {"aevb": (index, base + 0.3 + jitter), "wake-sleep": (index[::-1], (base - jitter)[::-1]), "iwae": (index, base + 0.302 - jitter)}
    bounds = {name: Estimate(float(values.mean()), 1.2) for name, (_, values) in per_image.items()}
    del bounds["iwae"]
    assert paired_comparison_sentence(bounds, per_image, 1000) == (
        "AEVB is ahead of wake-sleep on test L_1000 by 0.30 ± 0.01 nats (-99.7 ± 1.2 vs -100.0 ± 1.2); "
        "a lead is the mean per-image difference over the same 100 test images ± its paired standard error."
    )
    bounds = {name: Estimate(float(values.mean()), 1.2) for name, (_, values) in per_image.items() if name != "wake-sleep"}
    sentence = paired_comparison_sentence(bounds, per_image, 50)
    assert sentence.startswith("IWAE is not significantly ahead of AEVB on test L_50 (0.00 ± 0.01 nats, under two standard errors) (")


def test_comparison_sentence_of_one_algorithm():
    assert comparison_sentence({"aevb": Estimate(-30.25, 0.31)}, 1000) == (
        "AEVB reaches test L_1000 = -30.2 ± 0.3 nats; there is nothing to compare it with."
    )


def test_active_units_counts_units_whose_posterior_mean_varies_across_inputs():
    # Unit 0 varies with variance 1, unit 1 is constant, unit 2 has variance 0.005 and unit 3
    # 0.02 (unbiased variances of +-a over an even number of points: a^2 * N / (N - 1)).
    signs = torch.tensor([1.0, -1.0] * 50)
    scale = math.sqrt(99 / 100)
    means = torch.stack([signs * scale, torch.full((100,), 3.0), signs * scale * math.sqrt(0.005), signs * scale * math.sqrt(0.02)], 1)
    count, variances = active_units(means)
    assert count == 2
    torch.testing.assert_close(variances, torch.tensor([1.0, 0.0, 0.005, 0.02], dtype=torch.float64))


def test_latent_grid_pushes_cell_centres_through_the_inverse_normal_cdf():
    grid = latent_grid(2)  # cell centres 1/4 and 3/4
    q = 0.6744897501960817  # Phi^-1(3/4)
    expected = torch.tensor([[[-q, q], [q, q]], [[-q, -q], [q, -q]]])  # row 0 at the top: z_2 high
    torch.testing.assert_close(grid, expected)
    centre = latent_grid(3)[1, 1]
    torch.testing.assert_close(centre, torch.zeros(2))
    torch.testing.assert_close(latent_grid(3)[0, 2], torch.full((2,), 0.9674215661017010))  # Phi^-1(5/6)


def test_grid_position_is_the_inverse_of_the_grid():
    values = latent_grid(7)[0, :, 0].tolist()
    assert [grid_position(z, 7) for z in values] == pytest.approx(list(range(7)), abs=1e-5)


def test_plane_projection_shows_two_dimensions_as_they_are_and_projects_more():
    means = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    points, labels = plane_projection(means)
    np.testing.assert_allclose(points, means.double().numpy())
    assert "z_1" in labels[0] and "z_2" in labels[1]
    wide = torch.cat([means, 0.01 * means[:, :1]], 1)  # 3-D, nearly flat in the third direction
    points, labels = plane_projection(wide)
    assert points.shape == (50, 2) and labels[0].startswith("PC 1") and "variance" in labels[1]
    points, labels = plane_projection(means[:, :1])
    assert points.shape == (50, 2) and (points[:, 1] == 0).all()


def test_mosaic_tiles_images_row_major_with_nan_gaps():
    images = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)  # 2 x 3 images of 2 x 2 pixels
    tiled = mosaic(images, (2, 2), gap=1)
    assert tiled.shape == (5, 8)
    np.testing.assert_array_equal(tiled[:2, :2], [[0, 1], [2, 3]])  # image (0, 0)
    np.testing.assert_array_equal(tiled[3:, 6:], [[20, 21], [22, 23]])  # image (1, 2)
    assert np.isnan(tiled[2]).all() and np.isnan(tiled[:, 2]).all()


def test_summarise_run_takes_the_last_evaluation_and_the_costs():
    def evaluation(epoch, split, bound):
        return {"kind": "eval", "epoch": epoch, "split": split, "k": 5, "bound": bound, "bound_stderr": 0.1,
                "elbo": bound - 1, "elbo_stderr": 0.2, "wall_seconds": 10.0 * epoch + 1}

    rows = [
        {"kind": "train", "epoch": 1, "epoch_seconds": 2.0, "wall_seconds": 2.0},
        evaluation(1, "test", -50.0),
        {"kind": "train", "epoch": 2, "epoch_seconds": 4.0, "wall_seconds": 20.0},
        evaluation(2, "train", -39.0),
        evaluation(2, "test", -40.0),
        {"kind": "evaluate", "epoch": 2, "split": "test", "k": 100, "bound": -38.0},  # from `vaelab evaluate`
    ]
    summary = summarise_run("aevb", rows)
    assert (summary.epoch, summary.k, summary.wall_seconds, summary.seconds_per_epoch) == (2, 5, 21.0, 3.0)
    assert summary.bound == {"train": Estimate(-39.0, 0.1), "test": Estimate(-40.0, 0.1)}
    assert summary.elbo["test"] == Estimate(-41.0, 0.2)


def test_caveats_name_what_makes_the_numbers_unusual():
    assert caveats("bernoulli", "dynamic", 2, 784, 256) == []
    notes = caveats("bernoulli", "none", 2, 784, 256)
    assert len(notes) == 1 and "not a normalised log-likelihood" in notes[0] and "no bits/dim" in notes[0]
    notes = caveats("gaussian", None, 5, 560, None)  # continuous data
    assert len(notes) == 2 and "log-density" in notes[0] and "no bits/dim" in notes[0] and "5 dimensions" in notes[1]
    assert "a Gaussian with diagonal covariance" in notes[0]  # the registry entry's caption
    # a density of dequantized 8-bit pixels: its bound compares with discrete ones after D ln 256 = 560 * 5.545 nats
    (note,) = caveats("gaussian", None, 2, 560, 256)
    assert "y = (v + u) / 256" in note and "D ln(levels) = 560 ln 256 = 3105.3 nats; the bits/dim include it" in note
    assert caveats("categorical", None, 2, 784, 256) == []  # a discrete family: nothing unusual


def test_format_duration():
    assert [format_duration(s) for s in (0.25, 12.34, 125, 3725)] == ["0.25 s", "12.3 s", "2 min 05 s", "1 h 02 min"]


def test_unset_settings_are_named_for_what_they_mean():
    assert _config_value("encoder", None) == _config_value("decoder", None) == "built-in"
    assert _config_value("train_size", None) == "all training images"
    assert _config_value("anything_else", None) == "none" and _config_value("hidden", (8, 4)) == "8, 4"


def test_a_dataset_given_by_path_is_named_by_its_file():
    assert _dataset_name("/home/me/data/faces.npz") == "faces.npz" and _dataset_name("mnist") == "mnist"
