"""The compare report says what was trained: captions and titles computed from the model's prior,
likelihood and latents; Gaussian means drawn clipped with their share stated; tiles large enough to
judge; a page that fits from 700 px to 1920 px wide."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from vaelab.builders import build_model
from vaelab.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from vaelab.data.user import dataset_from_arrays
from vaelab.likelihoods import LIKELIHOOD_NAMES, get_likelihood
from vaelab.studies.compare import figures, report
from vaelab.studies.compare.analysis import grid_coverage
from vaelab.studies.compare.figures import mosaic, samples_figure, tile_scale
from vaelab.studies.compare.run import compare
from vaelab.studies.compare.study import Study
from vaelab.studies.compare.summary import (
    caveats,
    clipped_fraction,
    clipping_sentence,
    describe_model,
)

CURVE_IMAGES = 5
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
)
# Appended to a copy of the report: once the page has loaded, record how wide the page is against the
# window, the right edge of the widest image, and how wide the results table is against its box.
WIDTH_CHECK = """<script>
window.addEventListener("load", () => {
  const right = Math.max(...Array.from(document.images, (image) => image.getBoundingClientRect().right));
  const results = document.getElementById("results");
  document.body.dataset.widths = [document.documentElement.scrollWidth, window.innerWidth, Math.ceil(right),
                                  results.scrollWidth, results.parentElement.clientWidth].join(",");
});
</script>
</body>"""


# --- the words, on hand-made descriptions --------------------------------------------------------------


@pytest.mark.parametrize(
    "prior,latent,components,says,never",
    [
        ("standard-normal", "gaussian", 10, ["N(0, I)"], ["mixture", "VampPrior", "Bernoulli"]),
        ("mixture", "gaussian", 7, ["mixture of 7 diagonal Gaussians"], ["N(0, I)"]),
        ("vamp", "gaussian", 30, ["VampPrior over 30 learned pseudo-inputs"], ["N(0, I)"]),
        ("bernoulli", "bernoulli", 10, ["Bernoulli(z_d; σ(a_d))", "binary"], ["N(0, I)", "mixture"]),
    ],
)
@pytest.mark.algebra
def test_each_prior_is_named_in_words_and_in_figure_titles(prior, latent, components, says, never):
    model = describe_model(prior, "bernoulli", latent, (2,), components)
    for fragment in says:
        assert fragment in model.prior_words, model.prior_words
    for fragment in never:
        assert fragment not in model.prior_words, model.prior_words
        assert fragment not in model.prior_title, model.prior_title
    assert model.uniform_grid == (prior == "standard-normal")  # equal-probability tiles under N(0, I) only
    assert model.latent_space == ("{0, 1}^2" if latent == "bernoulli" else "R^2")


@pytest.mark.algebra
def test_description_of_the_likelihood_and_of_several_stochastic_layers():
    gaussian = describe_model("standard-normal", "gaussian", "gaussian", (100, 50), 10)
    assert gaussian.mean_words == "pixel means" and "Gaussian" in gaussian.likelihood_words
    assert gaussian.latent_space == "R^(100 + 50)" and gaussian.components == 1  # no components to a standard normal
    assert gaussian.prior_words.startswith("p(z_L) = N(0, I)") and "p(z_l | z_(l+1))" in gaussian.prior_words
    assert "z_L \\sim p(z_L)" in gaussian.prior_title and "z_{l+1}" in gaussian.prior_title
    assert describe_model("standard-normal", "bernoulli", "gaussian", (2,), 1).mean_words == "pixel probabilities"
    # a ladder's prior conditions each layer on every layer above it (its top-down path)
    ladder = describe_model("standard-normal", "bernoulli", "gaussian", (64, 32, 16), 1, ladder=True)
    assert "p(z_l | z_(>l))" in ladder.prior_words and "z_{>l}" in ladder.prior_title


@pytest.mark.parametrize("name", LIKELIHOOD_NAMES)
@pytest.mark.contract
def test_every_likelihood_is_captioned_by_its_registry_entry(name):
    entry = get_likelihood(name)
    model = describe_model("standard-normal", name, "gaussian", (2,), 1)
    assert (model.likelihood_words, model.mean_words, model.entry) == (entry.caption, entry.mean_words, entry)
    assert ("Bernoulli" in model.likelihood_words) == (name == "bernoulli")  # no family but Bernoulli's is called Bernoulli pixels
    on_8_bit = " ".join(caveats(name, None, 2, 784, 256))
    assert ("D ln(levels) = 784 ln 256" in on_8_bit) == entry.dequantizes  # a density of dequantized pixels says its offset
    assert ("log-density" in " ".join(caveats(name, None, 2, 784, None))) == (not entry.discrete)


@pytest.mark.algebra
def test_clipped_fraction_and_its_sentence():
    images = np.array([[-0.5, 0.0, 0.5, 1.0], [1.0001, 0.2, 0.3, 0.4]])
    assert clipped_fraction(images) == 2 / 8  # the ends 0 and 1 themselves are drawn as they are
    assert clipping_sentence({"AEVB": 0.213, "wake-sleep": 0.0}) == (
        "Means outside [0, 1] are drawn clipped (below 0 black, above 1 white): 21.3% of the pixels shown for AEVB, 0.0% for wake-sleep."
    )


# --- figures: tiles large enough to judge ---------------------------------------------------------------


@pytest.mark.algebra
def test_mosaic_upsamples_tiny_images_into_square_blocks():
    assert (tile_scale((8, 8)), tile_scale((28, 28)), tile_scale((28, 20))) == (4, 1, 1)
    images = np.arange(2 * 3 * 4, dtype=float).reshape(1, 2, 12) / 24  # one row of two 3 x 4 images
    tiled = mosaic(images, (3, 4), gap=1, scale=2)
    assert tiled.shape == (6, 2 * 8 + 1)
    np.testing.assert_array_equal(tiled[:, :8], np.kron(images[0, 0].reshape(3, 4), np.ones((2, 2))))
    assert np.isnan(tiled[:, 8]).all()
    np.testing.assert_array_equal(tiled[:, 9:], np.kron(images[0, 1].reshape(3, 4), np.ones((2, 2))))


@pytest.mark.algebra
def test_mosaic_draws_colour_images_channels_last():
    # two 3 x 2 x 2 colour images, stored flat and channels first as datasets hold them
    images = np.arange(2 * 12, dtype=float).reshape(1, 2, 12) / 24
    tiled = mosaic(images, (3, 2, 2), gap=1, scale=1)
    assert tiled.shape == (2, 2 * 2 + 1, 3)
    np.testing.assert_array_equal(tiled[:, :2], images[0, 0].reshape(3, 2, 2).transpose(1, 2, 0))
    assert np.isnan(tiled[:, 2]).all()
    np.testing.assert_array_equal(tiled[:, 3:], images[0, 1].reshape(3, 2, 2).transpose(1, 2, 0))


def _tile_css_pixels(figure, grid_columns: int, image_width: int, page_width: float = 1016.0) -> float:
    """How wide one tile of the first panel is in CSS pixels, once the PNG is scaled to fit a report
    column of ``page_width`` (main's 1080 px less its padding)."""
    figure.canvas.draw()  # lays the figure out (constrained layout)
    axes = figure.axes[0]
    mosaic_width = axes.get_images()[0].get_array().shape[1]
    axes_pixels = axes.get_window_extent().width * figures.DPI / figure.dpi  # as saved at DPI
    tile_png = axes_pixels * image_width * tile_scale((image_width, image_width)) / mosaic_width
    png_width = figure.get_figwidth() * figures.DPI
    return tile_png * min(1.0, page_width / png_width)


@pytest.mark.parametrize("algorithms", [2, 6])
@pytest.mark.algebra
def test_digit_samples_stay_large_however_many_algorithms(algorithms):
    rows, columns = report._sample_grid((8, 8))
    panels = {f"algorithm {number}": np.random.default_rng(number).random((rows, columns, 64)) for number in range(algorithms)}
    figure = samples_figure(panels, (8, 8), "$z \\sim p(z) = N(0, I)$")
    assert len(figure.axes) == -(-algorithms // figures.MAX_COLUMNS) * figures.MAX_COLUMNS  # panels wrap into rows
    assert _tile_css_pixels(figure, columns, 8) >= 48  # 6 CSS px per digit pixel; 10 x 10 tiles in one row gave 32 px (2) and 10 px (6)


# --- the prior's mass on the manifold grid --------------------------------------------------------------


@pytest.mark.algebra
def test_grid_coverage_of_the_standard_normal_is_the_square_of_one_less_a_tile():
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=2, hidden=(4,)), data_dim=6, likelihood="bernoulli")
    coverage = grid_coverage(model, 10, torch.Generator().manual_seed(1), count=20000)
    assert abs(coverage - 0.81) < 0.012  # (1 - 1/10)^2; binomial standard error 0.003


# --- studies of each kind, end to end -------------------------------------------------------------------


def _study(tmp_path, monkeypatch, algorithms, data=DataConfig(), data_dir=None, **model):
    """A one-epoch study of tiny networks, its report's text, and every figure's titles by name."""
    titles = {}
    real_save = figures.save_figure

    def save_and_record(figure, stem):
        labels = [label.get_text() for axes in figure.axes for label in axes.get_yticklabels()]  # reconstructions' rows
        titles[stem.name] = " | ".join([figure.get_suptitle(), *(axes.get_title() for axes in figure.axes), *labels])
        return real_save(figure, stem)

    monkeypatch.setattr(figures, "save_figure", save_and_record)
    config = ExperimentConfig(
        data=data,
        model=ModelConfig(hidden=(8,), **model),
        train=TrainConfig(algorithm=algorithms[0], epochs=1, eval_every=1, eval_k=2, eval_train_size=50, eval_splits=("test",),
                          kl="analytic" if model.get("prior", "standard-normal") == "standard-normal" else "monte-carlo"),
    )
    built = compare(Study(algorithms, config, CURVE_IMAGES), tmp_path / "study", data_dir=data_dir, progress=False)
    html = built.html.read_text()
    captions = {
        name: " ".join(re.sub(r"<[^>]+>", "", text).split())
        for name, text in re.findall(r'<figure id="figure-([a-z-]+)">.*?<figcaption>(.*?)</figcaption>', html, re.S)
    }
    return " ".join(html.split()), captions, titles


@pytest.mark.slow
@pytest.mark.e2e
def test_mixture_prior_study_names_its_prior(tmp_path, monkeypatch):
    text, captions, titles = _study(tmp_path, monkeypatch, ("wake-sleep", "aevb"), prior="mixture", prior_components=3)
    assert "N(0, I)" not in captions["samples"] and "a learned mixture of 3 diagonal Gaussians" in captions["samples"]
    assert "pixel probabilities" in captions["samples"] and "clipped" not in captions["samples"]
    assert "a learned mixture of 3 Gaussians" in titles["samples"] and "N(0, I)" not in titles["samples"]
    manifold = captions["manifold"]
    assert "every tile covers the same prior probability" not in manifold
    assert "do not cover equal prior probability" in manifold and "a learned mixture of 3" in manifold
    assert re.search(r"\d+% \(wake-sleep\), \d+% \(AEVB\) fall inside the square", manifold), manifold
    assert "not of this model's prior" in titles["manifold"]
    assert "z in R<sup>2</sup> with prior p(z) = Σ_c π_c N(μ_c, diag σ_c²)" in text and "a product of Bernoulli pixels" in text


@pytest.mark.slow
@pytest.mark.e2e
def test_vamp_prior_study_names_its_prior(tmp_path, monkeypatch):
    _, captions, titles = _study(tmp_path, monkeypatch, ("iwae",), prior="vamp", prior_components=4)
    assert "the VampPrior over 4 learned pseudo-inputs" in captions["samples"] and "N(0, I)" not in captions["samples"]
    assert "VampPrior of 4 pseudo-inputs" in titles["samples"]
    assert "do not cover equal prior probability" in captions["manifold"]


@pytest.mark.slow
@pytest.mark.e2e
def test_bernoulli_latent_study_names_its_binary_latents(tmp_path, monkeypatch):
    text, captions, titles = _study(tmp_path, monkeypatch, ("wake-sleep",), prior="bernoulli", latent="bernoulli", latent_dim=3)
    assert "independent binary units" in captions["samples"] and "N(0, I)" not in captions["samples"]
    assert "binary" in titles["samples"] and "Bernoulli" in titles["samples"]
    assert "the most probable binary z under q(z | x)" in captions["reconstructions"]
    assert "the most probable $z$" in titles["reconstructions"]
    assert "probability q(zu = 1 | x)" in captions["latent"]
    assert "manifold" not in captions and "z in {0, 1}<sup>3</sup>" in text


@pytest.mark.slow
@pytest.mark.e2e
def test_frey_face_study_names_its_gaussian_likelihood_and_the_clipping(tmp_path, monkeypatch, shared_data_dir):
    text, captions, titles = _study(tmp_path, monkeypatch, ("aevb",), data=DataConfig(dataset="frey-face"), data_dir=shared_data_dir)
    assert "Gaussian with diagonal covariance" in text and "Bernoulli" not in text and "pixel probabilities" not in text
    for name in ("samples", "manifold", "reconstructions"):
        assert "pixel means" in captions[name] or name == "manifold", name
        found = re.search(r"Means outside \[0, 1\] are drawn clipped \(below 0 black, above 1 white\): (\d+\.\d)% of the pixels shown for AEVB\.",
                          captions[name])
        assert found, captions[name]
        assert f"AEVB: {found.group(1)}% of pixels clipped" in titles[name] or f"AEVB ({found.group(1)}% clipped)" in titles[name]
    assert "every tile covers the same prior probability" in captions["manifold"]  # N(0, I): true here
    assert "same bits" not in text
    if dataset_levels(shared_data_dir, "frey-face") is None:  # continuous data: a density, no bits/dim
        assert "the pixel values as they are (continuous data)" in text and "has no bits/dim" in text and "bits/dim</th>" not in text
    else:  # 8-bit faces dequantized: the bound in bits/dim after the D ln 256 offset
        assert "levels v dequantized once with a fixed seed" in text and "the bits/dim include it" in text and "test bits/dim</th>" in text


@pytest.mark.slow
@pytest.mark.e2e
def test_frey_face_conv_study_names_its_gaussian_likelihood(tmp_path, monkeypatch, shared_data_dir):
    # `vaelab compare --dataset frey-face --architecture conv`: the conv decoder's likelihood is the dataset's Gaussian
    text, captions, _ = _study(tmp_path, monkeypatch, ("aevb",), data=DataConfig(dataset="frey-face"), data_dir=shared_data_dir,
                               architecture="conv")
    assert get_likelihood("gaussian").caption in text and "Bernoulli" not in text
    assert "pixel means" in captions["samples"] and "not a draw from it" in captions["samples"]


def dataset_levels(data_dir, name: str) -> int | None:
    """The levels of a real dataset as loaded (None until its loader sets them)."""
    from vaelab.data import load_dataset

    return load_dataset(name, data_dir).levels


GAUSSIAN_NETWORKS = """
import math
from torch import nn

def encoder(data_shape, latent_dim):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(data_shape), 2 * latent_dim))

def decoder(data_shape, latent_dim):  # a Gaussian's two heads, mean and raw scale, per value
    return nn.Sequential(nn.Linear(latent_dim, 2 * math.prod(data_shape)), nn.Unflatten(1, (2, *data_shape)))
"""


@pytest.mark.parametrize("networks", ["mlp", "conv", "user"])
@pytest.mark.slow
@pytest.mark.e2e
def test_a_gaussian_decoder_is_captioned_gaussian_whatever_network_computes_it(networks, tmp_path, monkeypatch):
    if networks == "user":
        module = tmp_path / "gaussian_nets.py"
        module.write_text(GAUSSIAN_NETWORKS)
        model = {"encoder": f"{module}:encoder", "decoder": f"{module}:decoder"}
    else:
        model = {"architecture": networks}
    text, captions, _ = _study(tmp_path, monkeypatch, ("aevb",), likelihood="gaussian", **model)
    entry = get_likelihood("gaussian")
    assert entry.caption in text and "Bernoulli" not in text, text
    assert entry.mean_words in captions["samples"] and "pixel probabilities" not in text
    assert "not a draw from it" in captions["samples"] and "binary draw" not in text


# --- the page fits the window ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_study(tmp_path_factory):
    """A finished two-algorithm study of the default model: the widest table and every figure."""
    out = tmp_path_factory.mktemp("study")
    config = ExperimentConfig(model=ModelConfig(hidden=(8,)), train=TrainConfig(epochs=1, eval_every=1, eval_k=2, eval_train_size=50))
    return compare(Study(("wake-sleep", "aevb"), config, CURVE_IMAGES), out, progress=False).html


@pytest.mark.slow
@pytest.mark.e2e
def test_report_fits_windows_700_to_1920_px_wide(default_study, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); the report's width is not checked")
    html = default_study.read_text()
    checked, control = tmp_path / "checked.html", tmp_path / "control.html"
    checked.write_text(html.replace("</body>", WIDTH_CHECK))
    control.write_text(html.replace("</main>", '<div style="width: 1500px">too wide</div></main>').replace("</body>", WIDTH_CHECK))

    def widths(page, window):
        command = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
                   f"--window-size={window},2000", "--dump-dom", page.as_uri()]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        found = re.search(r'data-widths="(\d+),(\d+),(\d+),(\d+),(\d+)"', result.stdout)
        assert found, f"the page did not finish loading: {result.stderr[-2000:]}"
        return tuple(int(value) for value in found.groups())

    for window in (700, 1280, 1400, 1920):
        page, inner, image_right, table, box = widths(checked, window)
        assert inner == window and page <= inner and image_right <= inner, (window, page, inner, image_right)
        if window >= 1280:  # no column of the results table hides behind a scrollbar
            assert table <= box, (window, table, box)
    assert widths(control, 700)[0] > 700  # the check does see a page wider than its window


@pytest.mark.algebra
def test_captions_read_the_likelihood_from_the_config_not_the_layer(tmp_path):
    grey = dataset_from_arrays(train=np.random.default_rng(0).random((20, 4, 4)), name=str(tmp_path / "faces.npz"), likelihood="bernoulli")
    gaussian = ExperimentConfig(model=ModelConfig(likelihood="gaussian"))
    assert report._describe(gaussian, grey, (2,)).likelihood == "gaussian"  # a user decoder's layer class says nothing about it
    assert report._describe(ExperimentConfig(), grey, (2,)).likelihood == "bernoulli"  # 'auto': the dataset's


@pytest.mark.slow
@pytest.mark.e2e
def test_report_gives_bits_per_dim_of_binarized_digits_and_none_of_grey_targets(default_study, tmp_path, monkeypatch):
    html = " ".join(default_study.read_text().split())
    assert "<th>test bits/dim</th>" in html and "with D = 64; lower is better" in html and "bits/dim (right axis)" in html
    assert re.search(r'<p class="lead" id="comparison">[^<]* nats \(\d\.\d+ bits/dim\)', html), html  # the sentence too
    text, _, _ = _study(tmp_path, monkeypatch, ("aevb",), data=DataConfig(binarization="none"))
    assert "bits/dim" not in text.replace("has no bits/dim", ""), text  # grey values as targets: nats alone


@pytest.mark.slow
@pytest.mark.e2e
def test_report_has_a_readable_title_and_cites_the_papers(default_study):
    html = " ".join(default_study.read_text().split())
    assert "<title>vaelab study: wake-sleep vs AEVB on digits</title>" in html  # a dataset given by path: _dataset_name
    assert "Kingma &amp; Welling 2013, Figure 2" in html and "wake-sleep (Hinton et al. 1995)" in html
    assert "Theorem 1 of Burda et al. 2015" in html
    assert "original study" not in html and "homework" not in html
    assert "<code>model.encoder</code></td><td>built-in</td>" in html and "<td>all</td>" not in html
