"""`vaelab bounds` and `vaelab evaluate --exact` end to end on the embedded digits, and their bad input."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import vaelab as vaelab_cli

from vaelab.cli import main
from vaelab.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from vaelab.training import train

pytestmark = pytest.mark.e2e


def vaelab(*args):
    # One intra-op thread: these small workloads gain nothing from more, and on a busy machine
    # extra threads mostly wait for each other (several times slower).
    return vaelab_cli(*args, env={"OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def bounds_out(tmp_path_factory):
    """The output of `vaelab bounds --quick`, which also trains a small 2-D model into OUT/digits-run."""
    out = tmp_path_factory.mktemp("bounds")
    result = vaelab("bounds", "--quick", "--out", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "page written to" in result.stdout and "truncated q" in result.stdout
    return out


@pytest.mark.slow
def test_bounds_quick_writes_figures_and_page(bounds_out):
    for name in ("bound_vs_k", "counterexample"):
        for suffix in ("png", "pdf"):
            assert (bounds_out / f"{name}.{suffix}").stat().st_size > 10_000
    page = (bounds_out / "bounds.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "the counterexample</b> to convergence" in page
    results = json.loads((bounds_out / "bounds.json").read_text())
    assert [curve["name"] for curve in results["curves"]] == ["linear-gaussian", "sigmoid-belief", "trained"]
    assert set(results["counterexample"]["proposals"]) == {"matched", "light-tailed", "truncated"}


@pytest.mark.slow
def test_evaluate_exact_reports_log_marginal_and_gaps(bounds_out):
    run = bounds_out / "digits-run"
    result = vaelab("evaluate", run, "--exact", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("test log p(x) = ") and "by quadrature" in lines[0]
    assert [line.split()[0] for line in lines[1:6]] == ["L_1", "L_10", "L_100", "L_1000", "L_5000"]
    saved = json.loads((run / "exact-test.json").read_text())
    assert saved["num_images"] == 300 and saved["quadrature_error_max"] < 1e-2
    assert len(saved["largest_gaps"]) == 10 and saved["largest_gaps"][0]["gap"] >= saved["largest_gaps"][-1]["gap"]
    gaps = {row["k"]: (row["gap"], row["gap_stderr"]) for row in saved["bounds"]}
    assert gaps[1][0] > 5 * gaps[1][1]  # the ELBO is measurably below log p(x) ...
    assert gaps[5000][0] < gaps[1][0] / 10  # ... L_5000 closes most of that gap ...
    assert gaps[5000][0] > -3 * gaps[5000][1] - saved["quadrature_error_mean"]  # ... and is not significantly above log p(x)


@pytest.fixture(scope="module")
def run_3d(tmp_path_factory):
    """A one-epoch digits run with a 3-D latent, trained in this process (no interpreter start-up)."""
    config = ExperimentConfig(model=ModelConfig(latent_dim=3, hidden=(8,)), train=TrainConfig(epochs=1, eval_k=1, eval_splits=("test",)))
    return train(config, tmp_path_factory.mktemp("z3"), progress=False, device="cpu").run_dir


@pytest.mark.parametrize("command", [["evaluate", "RUN", "--exact"], ["bounds", "--run", "RUN", "--out", "OUT"]])
@pytest.mark.slow
def test_exact_log_marginal_needs_a_2d_latent(run_3d, tmp_path, capsys, command):
    # in this process (the CLI's main, as the console script calls it): no interpreter start-up per case
    arguments = [str(run_3d) if part == "RUN" else str(tmp_path / "out") if part == "OUT" else part for part in command]
    code = main(arguments)
    error = capsys.readouterr().err
    assert code != 0 and "Traceback" not in error
    assert error.count("\n") == 1 and "2-D latent" in error and "latent_dim is 3" in error, error



def test_evaluate_exact_says_which_checkpoint_and_takes_checkpoint(tmp_path, capsys):
    # a 2-D run with selection: exact reads best.pt by default, as L_k, AIS and BDMC do, and says so
    config = ExperimentConfig(
        data=DataConfig(dataset="digits", valid_fraction=0.2), model=ModelConfig(latent_dim=2, hidden=(8,)),
        train=TrainConfig(epochs=2, eval_k=1, train_size=50, eval_splits=("valid", "test"), select_on="valid"),
    )
    run = train(config, tmp_path / "run", progress=False, device="cpu").run_dir
    best = torch.load(run / "best.pt", weights_only=True)["epoch"]
    capsys.readouterr()  # training's lines
    for chosen, checkpoint, words, epoch in ([], "best", "checkpoint: best on valid L_1", best), (["--checkpoint", "last"], "last", "checkpoint: last", 2):
        assert main(["evaluate", str(run), "--exact", "--images", "3", "--device", "cpu", "--no-progress", *chosen]) == 0
        first = capsys.readouterr().out.splitlines()[0]
        assert f"epoch {epoch}, " in first and first.endswith(words)
        saved = json.loads((run / "exact-test.json").read_text())
        assert (saved["epoch"], saved["checkpoint"]) == (epoch, checkpoint)
