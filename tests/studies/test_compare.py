"""`vaelab compare` and `vaelab report` end to end on the embedded digits, tiny settings."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
import torch
from conftest import run_main

from vaelab.cli import main
from vaelab.config import ExperimentConfig, ModelConfig, TrainConfig
from vaelab.runio import read_metrics
from vaelab.studies.compare import run as compare_module
from vaelab.studies.compare.run import compare
from vaelab.studies.compare.study import Study
from vaelab.training import TrainingHooks, train

pytestmark = pytest.mark.e2e

TINY = ["--epochs", "2", "--hidden", "16", "--eval-every", "1", "--eval-k", "10", "--eval-train-size", "300", "--no-progress"]
TINY_CONFIG = ExperimentConfig(
    model=ModelConfig(hidden=(16,)), train=TrainConfig(epochs=2, eval_every=1, eval_k=10, eval_train_size=300)
)
CURVE_IMAGES = 60
FIGURES = ("training", "samples", "manifold", "reconstructions", "latent", "bound_vs_k")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
)
# Appended to a copy of the report: once the page has loaded, record for every <img> whether it decoded.
IMAGE_CHECK = """<script>
window.addEventListener("load", () => {
  document.body.dataset.images = Array.from(document.images, (image) => image.complete && image.naturalWidth > 0 ? "ok" : "broken").join(",");
});
</script>
</body>"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished two-algorithm study written by the command line (in this process), and its stdout."""
    out = tmp_path_factory.mktemp("study")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["compare", *TINY, "--curve-images", str(CURVE_IMAGES), "--out", str(out)]) == 0
    return out, stdout.getvalue()


def comparable(rows):
    return [{key: value for key, value in row.items() if not key.endswith("seconds")} for row in rows]


@pytest.mark.slow
def test_compare_writes_runs_figures_and_a_self_contained_report(study):
    out, stdout = study
    # built on the paired per-image difference (every run saved its per-image L_10)
    sentence = stdout.splitlines()[-2]  # after the plan and evaluation lines, before "report written to"
    assert re.match(r"(AEVB|Wake-sleep) is (ahead of|not significantly ahead of) (wake-sleep|AEVB) on test L_10 (by |\()-?\d+\.\d\d+ ± \d+\.\d\d+ nats", sentence), stdout
    assert "over the same 300 test images ± its paired standard error." in stdout
    assert f"report written to {out / 'report.html'}" in stdout
    saved = json.loads((out / "compare.json").read_text())
    assert saved["algorithms"] == ["wake-sleep", "aevb"] and saved["config"]["train"]["epochs"] == 2
    assert "algorithm" not in saved["config"]["train"]
    for algorithm in ("wake-sleep", "aevb"):
        config = ExperimentConfig.load(out / algorithm / "config.json")
        assert config.train.algorithm == algorithm and config.model.hidden == (16,) and config.seed == 0
        curve = json.loads((out / algorithm / "bound_curve.json").read_text())
        assert curve["k"] == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] and curve["num_images"] == CURVE_IMAGES
        assert curve["bound"][0] <= curve["bound"][-1]  # L_1 <= L_1000 from the same samples, up to noise
    for name in FIGURES:
        for suffix in (".png", ".pdf"):
            assert (out / "figures" / f"{name}{suffix}").stat().st_size > 1000, name
    html = (out / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(FIGURES)
    assert not re.search(r"""(src|href)=["']?(https?:|//)|<link|@import|url\(""", html)  # nothing fetched
    text = " ".join(html.split())
    for fragment in ("Kingma &amp; Welling 2013, Figure 2", "wake-sleep (Hinton et al. 1995)", "active units", "test L<sub>10</sub>",
                     "1497 train / 300 test images of 8 × 8 pixels", "test k&#770; &gt; 0.7", "Pareto smoothed importance sampling"):
        assert fragment in text, fragment


@pytest.mark.slow
def test_report_renders_in_chromium_with_every_image(study, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); the report's rendering is not checked")
    html = (study[0] / "report.html").read_text()
    checked, broken = tmp_path / "checked.html", tmp_path / "broken.html"
    checked.write_text(html.replace("</body>", IMAGE_CHECK))
    start = html.index("base64,") + len("base64,")
    broken.write_text((html[:start] + "!!!!" + html[start + 4:]).replace("</body>", IMAGE_CHECK))  # a control

    def render(page, *options):
        command = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", *options, "--dump-dom", page.as_uri()]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        found = re.search(r'data-images="([^"]*)"', result.stdout)
        assert found, f"the page did not finish loading: {result.stderr[-2000:]}"
        return found.group(1).split(",")

    screenshot = tmp_path / "report.png"
    assert render(checked, f"--screenshot={screenshot}", "--window-size=1200,3000") == ["ok"] * len(FIGURES)
    assert render(broken)[0] == "broken"  # the check does see a broken image
    pixels = matplotlib.image.imread(screenshot)
    assert pixels.shape[:2] == (3000, 1200) and pixels[..., :3].std() > 0.05  # drawn, not blank


@pytest.mark.slow
def test_report_rebuilds_from_saved_results_without_training_or_sampling_bounds(study, tmp_path):
    out = tmp_path / "study"
    shutil.copytree(study[0], out)
    before = (out / "report.html").read_text()
    shutil.rmtree(out / "figures")
    (out / "report.html").unlink()
    # In a fresh interpreter: the report's code path never loads training or the L_k estimators.
    probe = (
        "import sys; from vaelab.cli import main; code = main(['report', sys.argv[1]]); "
        "loaded = [m for m in ('vaelab.training', 'vaelab.estimators.bounds') if m in sys.modules]; "
        "print('loaded:', loaded); sys.exit(code)"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "report written to" in result.stdout and "loaded: []" in result.stdout
    assert (out / "report.html").read_text() == before  # the same figures, from the same saved results
    assert {path.name for path in (out / "figures").iterdir()} == {f"{name}{suffix}" for name in FIGURES for suffix in (".png", ".pdf")}


@pytest.mark.slow
def test_killed_compare_continues_where_it_stopped(study, tmp_path, monkeypatch):
    reference = study[0]
    out = tmp_path / "study"
    monkeypatch.setattr(compare_module, "build_report", lambda *args, **kwargs: None)  # the report is tested above
    real_curve = compare_module.bound_curve

    def training_with(hooks):
        """The study's train() with ``hooks``."""
        return lambda *args, **kwargs: train(*args, **kwargs, hooks=hooks)

    def crash_in_second_run(path, state):
        if "aevb" in path.parts and state["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(compare_module, "train", training_with(TrainingHooks(on_checkpoint=crash_in_second_run)))
    with pytest.raises(KeyboardInterrupt):
        compare(Study(("wake-sleep", "aevb"), TINY_CONFIG, CURVE_IMAGES), out, progress=False)
    monkeypatch.setattr(compare_module, "train", train)
    first_checkpoint = (out / "wake-sleep" / "checkpoint.pt").read_bytes()
    assert torch.load(out / "aevb" / "checkpoint.pt", weights_only=True)["epoch"] == 1

    curves = []
    monkeypatch.setattr(compare_module, "bound_curve", lambda model, *args: curves.append(model) or real_curve(model, *args))
    compare(Study(("wake-sleep", "aevb"), TINY_CONFIG, CURVE_IMAGES), out, progress=False)
    assert len(curves) == 1  # only the unfinished run is analysed
    assert (out / "wake-sleep" / "checkpoint.pt").read_bytes() == first_checkpoint  # not retrained
    for algorithm in ("wake-sleep", "aevb"):  # the same numbers as the uninterrupted study
        assert comparable(read_metrics(out / algorithm / "metrics.jsonl")) == comparable(read_metrics(reference / algorithm / "metrics.jsonl"))
        saved, expected = (json.loads((root / algorithm / "bound_curve.json").read_text()) for root in (out, reference))
        assert saved == expected

    def no_training(objective):
        def step(*args):
            raise AssertionError("a finished run was trained again")
        return step

    monkeypatch.setattr(compare_module, "train", training_with(TrainingHooks(wrap_objective=no_training)))
    compare(Study(("wake-sleep", "aevb"), TINY_CONFIG, CURVE_IMAGES), out, progress=False)
    assert len(curves) == 1  # a finished study: nothing trained, nothing recomputed


def test_the_curve_is_read_from_the_last_test_evaluation_of_1000_samples(tmp_path, monkeypatch):
    # L_1000 of every test image in the last epoch's evaluation: the curve comes from its draws, no second pass.
    def no_second_pass(*args, **kwargs):
        raise AssertionError("the curve was computed again")

    real_curve = compare_module.bound_curve
    monkeypatch.setattr(compare_module, "bound_curve", no_second_pass)
    monkeypatch.setattr(compare_module, "build_report", lambda *args, **kwargs: None)
    config = ExperimentConfig(model=ModelConfig(hidden=(16,)), train=TrainConfig(epochs=1, eval_k=1000, eval_splits=("test",)))
    compare(Study(("aevb",), config, None), tmp_path, progress=False)
    curve = json.loads((tmp_path / "aevb" / "bound_curve.json").read_text())
    row = [row for row in read_metrics(tmp_path / "aevb" / "metrics.jsonl") if row["kind"] == "eval"][-1]
    assert curve["num_images"] == row["num_images"] == 300
    assert curve["bound"][-1] == row["bound"] and curve["bound_stderr"][-1] == row["bound_stderr"]  # the very same L_1000
    assert curve["bound"][0] < curve["bound"][-1]  # L_1 below L_1000 on the same samples (by ~nats on this model)

    # A per-image file without the curve's columns (a run trained by an earlier vaelab): the curve is drawn again.
    path = tmp_path / "aevb" / row["bounds_file"]
    with np.load(path) as arrays:
        kept = {name: arrays[name] for name in arrays.files if not name.startswith("bound_k")}
    np.savez(path, **kept)
    (tmp_path / "aevb" / "bound_curve.json").unlink()
    passes = []
    monkeypatch.setattr(compare_module, "bound_curve", lambda model, *args: passes.append(model) or real_curve(model, *args))
    compare(Study(("aevb",), config, None), tmp_path, progress=False)
    assert len(passes) == 1
    redrawn = json.loads((tmp_path / "aevb" / "bound_curve.json").read_text())
    assert redrawn["num_images"] == 300 and abs(redrawn["bound"][-1] - row["bound"]) < 3 * row["bound_stderr"]


@pytest.mark.slow
def test_compare_refuses_a_study_with_a_different_config(study, tmp_path, capsys):
    out = tmp_path / "study"
    shutil.copytree(study[0], out)
    status, error = run_main(["compare", *TINY, "--lr", "0.01", "--batch-size", "50", "--out", str(out)], capsys)
    assert status == 1 and error.count("\n") == 1 and "differs in train.batch_size, train.learning_rate" in error
    assert json.loads((out / "compare.json").read_text()) == json.loads((study[0] / "compare.json").read_text())


@pytest.mark.slow
def test_compare_of_one_algorithm_with_three_latent_dimensions(tmp_path, capsys):
    out = tmp_path / "study"
    args = ["--algorithms", "aevb", "--latent-dim", "3", "--binarization", "none", "--epochs", "1", "--hidden", "8",
            "--eval-k", "5", "--eval-splits", "test", "--no-progress", "--out", str(out)]
    assert main(["compare", *args]) == 0
    assert capsys.readouterr().out.splitlines()[-2].startswith("AEVB reaches test L_5 = ")  # after the plan and evaluation lines
    assert not (out / "figures" / "manifold.png").exists()
    assert json.loads((out / "aevb" / "bound_curve.json").read_text())["num_images"] == 300
    text = " ".join((out / "report.html").read_text().split())
    for fragment in ("the 2-D latent manifold figure is skipped", "not a normalised log-likelihood", "principal components",
                     "on 300 test images:"):
        assert fragment in text, fragment


@pytest.mark.parametrize(
    "args,code,fragments",
    [
        (["compare", "--algorithms", "aevb,gan", "--out", "x"], 2, ["--algorithms", "'aevb,gan'"]),
        (["compare", "--algorithms", "aevb,aevb", "--out", "x"], 1, ["each algorithm may appear once"]),
        (["compare", "--eval-splits", "train", "--out", "x"], 1, ["eval splits must include 'test'"]),
        (["report", "."], 1, ["not a vaelab study", "compare.json"]),
    ],
)
def test_bad_input_gets_one_line(tmp_path, monkeypatch, capsys, args, code, fragments):
    monkeypatch.chdir(tmp_path)
    status, error = run_main(args, capsys)
    assert status == code and error.count("\n") == 1 and "Traceback" not in error, error
    for fragment in fragments:
        assert fragment in error, error
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_report_of_an_unfinished_study_says_how_to_finish_it(study, tmp_path, capsys):
    out = tmp_path / "study"
    shutil.copytree(study[0], out)
    (out / "aevb" / "bound_curve.json").unlink()
    status, error = run_main(["report", str(out)], capsys)
    assert status == 1 and "no L_k curve" in error
    shutil.rmtree(out / "aevb")
    status, error = run_main(["report", str(out)], capsys)
    assert error == f"vaelab report: error: {out / 'aevb'}: not trained yet; run the same 'vaelab compare' again to finish the study\n"


@pytest.mark.slow
def test_report_of_a_study_without_per_image_files_keeps_the_old_sentence(study, tmp_path, capsys):
    # studies written before per-image files: the sentence compares the runs' means, as it used to
    out = tmp_path / "old"
    shutil.copytree(study[0], out)
    for path in out.glob("*/bounds-*.npz"):
        path.unlink()
    assert main(["report", str(out)]) == 0
    sentence = capsys.readouterr().out.splitlines()[0]
    assert re.match(r"(AEVB|Wake-sleep) is (ahead of|level with) (wake-sleep|AEVB) on test L_10 (by \d+\.\d nats )?\(", sentence), sentence
    assert "paired" not in sentence
