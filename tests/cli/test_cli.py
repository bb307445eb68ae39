"""The command line end to end on the embedded digits, and its answers to bad input."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from conftest import vaelab

from vaelab.machine import subnormals_flushed
from vaelab.runio import read_metrics

pytestmark = pytest.mark.e2e

FAST = ["--dataset", "digits", "--epochs", "2", "--hidden", "32", "--eval-every", "1", "--eval-k", "10", "--no-progress"]


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["aevb", "wake-sleep"])
def test_train_then_evaluate(tmp_path, algorithm):
    run = tmp_path / algorithm
    trained = vaelab("train", "--algorithm", algorithm, *FAST, "--out", run)
    assert trained.returncode == 0, trained.stderr
    assert "test L_10 =" in trained.stdout
    assert {"config.json", "environment.json", "metrics.jsonl", "checkpoint.pt"} <= {p.name for p in run.iterdir()}

    evaluated = vaelab("evaluate", run, "--k", "100")
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stdout.startswith("test L_100 = ")
    last = read_metrics(run / "metrics.jsonl")[-1]
    assert last["kind"] == "evaluate" and last["k"] == 100 and last["epoch"] == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        ["--algorithm", "iwae-dreg", "--num-samples", "5", "--prior", "vamp", "--prior-components", "20"],
        ["--algorithm", "rws", "--rws-phi", "mix", "--num-samples", "5", "--latent-dim", "8,4", "--upper-hidden", "16", "--prior", "mixture"],
        ["--algorithm", "vimco", "--num-samples", "5", "--latent", "bernoulli", "--prior", "bernoulli", "--latent-dim", "10,5", "--upper-hidden", "16"],
    ],
    ids=["iwae-dreg-vamp", "rws-mix-two-layers-mixture", "vimco-bernoulli-two-layers"],
)
def test_train_and_evaluate_beyond_the_seed(tmp_path, options):
    trained = vaelab("train", *options, *FAST, "--threads", "1", "--out", tmp_path / "run")
    assert trained.returncode == 0, trained.stderr
    environment = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert environment["torch_threads"] == 1
    assert environment["cpu"]["model"] and environment["cpu"]["logical_cpus"] >= 1
    assert environment["subnormals_flushed"] is True  # the command flushes them before any op
    assert environment["cpu"]["capability"] in {"DEFAULT", "VSX", "Z VECTOR", "NO AVX", "AVX2", "AVX512", "SVE256"}  # torch's documented values
    evaluated = vaelab("evaluate", tmp_path / "run", "--k", "50", "--images", "30")
    assert evaluated.returncode == 0, evaluated.stderr
    row = read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]
    assert row["num_images"] == 30 and row["k"] == 50
    assert row["elbo"] <= row["bound"] < 0  # L_50 >= L_1 (same images, fixed seed; the gap is several SE here)


@pytest.mark.slow
def test_resume_of_a_finished_run_is_a_no_op(tmp_path):
    assert vaelab("train", *FAST, "--out", tmp_path).returncode == 0
    rows = read_metrics(tmp_path / "metrics.jsonl")
    again = vaelab("train", *FAST, "--out", tmp_path, "--resume")
    assert again.returncode == 0, again.stderr
    assert read_metrics(tmp_path / "metrics.jsonl") == rows


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,fragments",
    [
        (["train", "--epochs", "-1", "--out", "x"], ["--epochs", "positive integer", "'-1'"]),
        (["train", "--algorithm", "gan", "--out", "x"], ["--algorithm", "invalid choice"]),
        (["train", "--hidden", "0", "--out", "x"], ["--hidden", "positive integers"]),
        (["train", "--lr", "2", "--out", "x"], ["--lr", "(0, 1)"]),
        (["train", "--epochs", "1"], ["--out"]),
        (["evaluate", "somewhere", "--k", "0"], ["--k", "positive integer"]),
    ],
)
def test_bad_options_get_one_line(tmp_path, args, fragments):
    result = vaelab(*args, cwd=tmp_path)
    assert_one_line_error(result, *fragments)
    assert result.returncode == 2
    assert not (tmp_path / "x").exists()  # nothing written


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--algorithm", "aevb", "--latent", "bernoulli", "--prior", "bernoulli"], "cannot train Bernoulli latents"),
        (["--algorithm", "rws", "--latent", "bernoulli"], "Bernoulli latents take the bernoulli prior"),
        (["--algorithm", "vimco"], "vimco needs num_samples >= 2"),
        (["--prior", "vamp", "--latent-dim", "4,2"], "vamp prior needs one stochastic layer"),
        (["--algorithm", "rws", "--num-samples", "5", "--prior", "vamp"], "vamp prior shares the recognition network"),
        (["--algorithm", "rws"], "wake-phi update needs num_samples >= 2"),
        # an option the run would not read is refused, not silently ignored
        (["--algorithm", "iwae", "--groups", "3"], "--groups applies to miwae and piwae only, not to iwae"),
        (["--algorithm", "wake-sleep", "--kl", "monte-carlo"], "--kl applies to aevb only"),
        (["--prior-components", "5"], "prior_components applies to the mixture and vamp priors only"),
        # --dataset takes a name or a path, so the data layer answers (before the run directory is made)
        (["--dataset", "cifar"], "unknown dataset 'cifar'"),
        (["--dataset", "no/such/data.npz"], "no/such/data.npz: no such file or folder"),
    ],
)
def test_configurations_that_cannot_train_get_one_line(tmp_path, args, fragment):
    result = vaelab("train", *args, "--out", tmp_path / "x")
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_compare_takes_an_option_that_one_of_its_algorithms_reads(tmp_path):
    assert_one_line_error(vaelab("compare", "--groups", "2", "--out", tmp_path / "x"), "--groups applies to miwae and piwae only, not to wake-sleep, aevb")
    assert not (tmp_path / "x").exists()
    result = vaelab("compare", "--algorithms", "aevb,miwae", "--groups", "2", "--num-samples", "2", "--epochs", "1", "--eval-k", "4",
                    "--curve-images", "20", "--no-progress", "--out", tmp_path / "y")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "y" / "miwae" / "config.json").read_text())["train"]["groups"] == 2
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_evaluate_of_a_missing_run_and_of_a_corrupt_checkpoint(tmp_path):
    assert_one_line_error(vaelab("evaluate", tmp_path / "nothing"), "not a vaelab run directory")
    run = tmp_path / "run"
    assert vaelab("train", *FAST, "--out", run).returncode == 0
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    del checkpoint["noise_generators"]  # the format of an older version
    torch.save(checkpoint, run / "checkpoint.pt")
    assert_one_line_error(vaelab("train", *FAST, "--epochs", "3", "--out", run, "--resume"), "checkpoint.pt", "missing noise_generators")
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert_one_line_error(vaelab("evaluate", run), "checkpoint.pt", "unreadable checkpoint")


@pytest.mark.slow
def test_missing_dataset_offline_names_the_files_and_folder(tmp_path):
    result = vaelab("train", "--dataset", "mnist", "--epochs", "1", "--out", tmp_path / "run", "--data-dir", tmp_path / "data")
    assert_one_line_error(result, "mnist", "train-images-idx3-ubyte.gz", str(tmp_path / "data"))
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.slow
def test_bad_config_file_gets_one_line(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"train": {"epochs": 0}}')
    assert_one_line_error(vaelab("train", "--config", config, "--out", tmp_path / "run"), "epochs must be a positive integer")
    config.write_text("{not json")
    assert_one_line_error(vaelab("train", "--config", config, "--out", tmp_path / "run"), "config.json", "not valid JSON")
    config.write_text('{"train": {"epochz": 3}}')
    assert_one_line_error(vaelab("train", "--config", config, "--out", tmp_path / "run"), "unknown key(s) epochz")


@pytest.mark.slow
def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    assert_one_line_error(vaelab("train", *FAST, "--out", blocker / "run"), "cannot create the run directory")


@pytest.mark.slow
def test_help_documents_every_option_with_its_default():
    result = vaelab("train", "--help")
    assert result.returncode == 0
    for option in ("--algorithm", "--dataset", "--epochs", "--eval-k", "--eval-every", "--binarization", "--resume", "--data-dir"):
        assert option in result.stdout
    assert "(default: 100)" in result.stdout and "(default: 1000)" in result.stdout


@pytest.mark.slow
def test_datasets_lists_local_files(shared_data_dir):
    result = vaelab("datasets", "--data-dir", shared_data_dir)
    assert result.returncode == 0, result.stderr
    assert "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609" in result.stdout
    assert "fashion-mnist" in result.stdout and "missing" in result.stdout


@pytest.mark.slow
def test_evaluate_with_k_hat_ais_and_bdmc(tmp_path):
    import numpy as np

    run = tmp_path / "run"
    assert vaelab("train", "--algorithm", "aevb", *FAST, "--eval-k", "30", "--threads", "1", "--out", run).returncode == 0
    trained = read_metrics(run / "metrics.jsonl")
    final = [row for row in trained if row["kind"] == "eval" and row["epoch"] == 2 and row["split"] == "test"][0]
    assert final["estimator"] == "iwae" and 0 <= final["k_hat_above"] <= 1  # k-hat in training's evaluations too
    saved = np.load(run / final["bounds_file"])  # per-image L_k of the in-training evaluation
    assert saved["bound"].shape == (final["num_images"],) and abs(saved["bound"].mean() - final["bound"]) < 1e-4
    assert (saved["image_index"] == np.arange(final["num_images"])).all()

    evaluated = vaelab("evaluate", run, "--k", "100", "--threads", "1")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "Pareto k-hat > 0.7 on" in evaluated.stdout
    row = read_metrics(run / "metrics.jsonl")[-1]
    assert 0 <= row["k_hat_above"] <= 1 and np.isfinite(row["k_hat_mean"])
    assert (np.load(run / row["bounds_file"])["k_hat"] > 0.7).mean() == pytest.approx(row["k_hat_above"])

    # T = 0 chains start from L_10's draws (the same generator and batches): the estimate is the L_10 row's
    assert vaelab("evaluate", run, "--k", "10", "--threads", "1").returncode == 0
    plain = read_metrics(run / "metrics.jsonl")[-1]
    assert plain["k_hat_above"] is None and plain["k_hat_mean"] is None  # k = 10 < 25: too few weights for a tail
    annealed = vaelab("evaluate", run, "--estimator", "ais", "--steps", "0", "--k", "10", "--threads", "1", "--no-progress")
    assert annealed.returncode == 0, annealed.stderr
    row = read_metrics(run / "metrics.jsonl")[-1]
    assert row["estimator"] == "ais" and row["steps"] == 0 and row["chains"] == 10 and row["acceptance"] is None
    assert row["log_px"] == pytest.approx(plain["bound"], abs=1e-4) and row["decoder_passes"] == 10

    annealed = vaelab("evaluate", run, "--estimator", "ais", "--steps", "10", "--k", "4", "--images", "50", "--threads", "1", "--no-progress")
    assert annealed.returncode == 0, annealed.stderr
    assert annealed.stdout.startswith("test AIS log p(x) = ") and "T=10, M=4" in annealed.stdout
    row = read_metrics(run / "metrics.jsonl")[-1]
    assert row["num_images"] == 50 and 0 < row["acceptance"] < 1 and row["decoder_passes"] == 4 * 51 + 2 * 51
    assert np.load(run / row["bounds_file"])["log_px"].shape == (50,)

    sandwich = vaelab("evaluate", run, "--bdmc", "10", "--steps", "0,20", "--k", "2", "--threads", "1", "--no-progress")
    assert sandwich.returncode == 0, sandwich.stderr
    lines = sandwich.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("BDMC T=20 M=2 on 10 simulated images: lower ")
    assert all("width |upper - lower| mean " in line and "inverted (upper < lower) on " in line for line in lines)
    rows = read_metrics(run / "metrics.jsonl")[-2:]
    assert [r["estimator"] for r in rows] == ["bdmc", "bdmc"] and [r["steps"] for r in rows] == [0, 20]
    assert all(np.isfinite(r["lower"]) and np.isfinite(r["upper"]) and r["width_max"] >= r["width_mean"] for r in rows)
    assert all(r["width_abs_mean"] >= abs(r["width_mean"]) and 0 <= r["inverted"] <= 1 for r in rows)

    assert_one_line_error(vaelab("evaluate", run, "--steps", "5"), "--steps and --ais-start apply to --estimator ais and --bdmc only")
    assert_one_line_error(vaelab("evaluate", run, "--estimator", "ais", "--steps", "1,2"), "takes one --steps T")
    assert_one_line_error(vaelab("evaluate", run, "--bdmc", "5", "--images", "3"), "--images does not apply")


@pytest.mark.parametrize("has_bf16_kernels", [False, True])
def test_bf16_on_a_cpu_without_bf16_kernels_is_said_to_be_slow(monkeypatch, capsys, has_bf16_kernels):
    from vaelab.cli.command import warn_if_bf16_is_slow_here
    from vaelab.models import backend

    monkeypatch.setattr(backend, "ONEDNN_LINEAR_BF16", has_bf16_kernels)
    warn_if_bf16_is_slow_here("bf16", "cpu")
    warn_if_bf16_is_slow_here("fp32", "cpu")
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == (0 if has_bf16_kernels else 1)
    assert all("--precision bf16 runs several times slower than fp32" in line for line in warnings)


def test_a_command_in_process_flushes_subnormals_and_restores_the_callers_setting(tmp_path, monkeypatch):
    from vaelab import cli

    monkeypatch.setenv("VAELAB_OFFLINE", "1")
    assert not subnormals_flushed()
    assert cli.main(["train", *FAST, "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "environment.json").read_text())["subnormals_flushed"] is True
    assert not subnormals_flushed(), "the command restores this thread's setting (Python's floats use it too)"


def test_a_log_gets_the_plan_and_every_evaluation_line_but_no_bars(tmp_path):
    """--no-progress (the flag for cluster logs) hides the bars alone; and where stderr is no terminal
    (here a pipe, as a log is) no bar is drawn either way, while every line is."""
    with_bars = [option for option in FAST if option != "--no-progress"]
    for flags in ([], ["--no-progress"]):
        run = tmp_path / f"run{len(flags)}"
        result = vaelab("train", "--algorithm", "aevb", *with_bars, *flags, "--threads", "1", "--out", run)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith("aevb on digits: 2 epochs of batch") and lines[-1] == f"run written to {run}"
        evaluations = [line for line in lines if " L_10 = " in line]
        splits = {row["split"] for row in read_metrics(run / "metrics.jsonl") if row["kind"] == "eval"}
        assert [line.split(":")[0] for line in evaluations] == [f"aevb epoch {epoch}" for epoch in (1, 2) for _ in splits]
        assert result.stderr == ""  # no bar


def test_evaluate_refuses_ais_beyond_memory_and_writes_exact_per_image(tmp_path, capsys):
    """AIS and BDMC go through the memory preflight; one image has no standard error; --exact writes its
    per-image log p(x) and L_k, which pair with AIS's image by image."""
    import numpy as np

    from vaelab.cli import main

    def evaluate(*args):
        status = main(["evaluate", str(run), *args, "--no-progress"])
        return status, *capsys.readouterr()

    run = tmp_path / "run"
    assert main(["train", "--algorithm", "aevb", *FAST, "--epochs", "1", "--hidden", "16", "--latent-dim", "2", "--out", str(run)]) == 0
    capsys.readouterr()
    metrics = (run / "metrics.jsonl").read_text()
    for args, fragments in [
        (["--estimator", "ais", "--k", str(10**9)], ["AIS with M = 1000000000 chains per image needs about", "GiB of memory", "lower --k"]),
        (["--bdmc", str(10**12), "--k", "1"], ["BDMC with M = 1 chains per image needs about", "1,000,000,000,000 simulated images", "or --bdmc"]),
    ]:
        status, out, err = evaluate(*args)
        assert status == 1 and out == "" and len(err.strip().splitlines()) == 1, err
        assert all(fragment in err for fragment in fragments), err
    assert (run / "metrics.jsonl").read_text() == metrics  # refused before anything was computed or written

    for args in (["--k", "10", "--images", "1"], ["--estimator", "ais", "--steps", "0", "--k", "2", "--images", "1"]):
        status, out, _ = evaluate(*args)
        assert status == 0 and "(one image: no standard error)" in out and "nan" not in out, out

    status, out, _ = evaluate("--exact", "--images", "5")
    assert status == 0 and "per image to " in out
    exact = json.loads((run / "exact-test.json").read_text())
    per_image = np.load(run / exact["bounds_file"])
    assert (per_image["image_index"] == np.arange(5)).all()
    assert per_image["log_px"].mean() == pytest.approx(exact["log_marginal"], abs=1e-4)
    for row in exact["bounds"]:
        assert per_image[f"bound_k{row['k']}"].mean() == pytest.approx(row["bound"], abs=1e-4)
    assert evaluate("--estimator", "ais", "--steps", "0", "--k", "2", "--images", "5")[0] == 0
    ais = np.load(run / read_metrics(run / "metrics.jsonl")[-1]["bounds_file"])
    assert (ais["image_index"] == per_image["image_index"]).all() and (ais["log_px"] <= per_image["log_px"] + 5).all()


def test_k_hat_above_on_most_images_advises_ais():
    from vaelab.evaluation.lines import k_hat_words

    assert k_hat_words({"k_hat_above": None}) == ""
    assert "--estimator ais" not in k_hat_words({"k_hat_above": 0.3, "k_hat_mean": 0.5})
    words = k_hat_words({"k_hat_above": 0.8, "k_hat_mean": 0.9})
    assert words.startswith("; Pareto k-hat > 0.7 on 80.0% of images (mean 0.90)") and "L_k is unreliable" in words
    assert words.endswith("--estimator ais")


def test_an_inverted_bdmc_sandwich_is_said_to_need_more_chains_or_steps():
    from vaelab.evaluation.lines import inverted_words

    assert inverted_words(0.0) == ""
    assert "neither estimate bounds log p(x)" in inverted_words(0.58) and "--k" in inverted_words(0.58) and "--steps" in inverted_words(0.58)


@pytest.mark.parametrize("world_size, leaves", [("2", True), ("1", False)])
def test_a_torchrun_process_leaves_without_interpreter_finalisation(monkeypatch, world_size, leaves):
    """gloo's threads abort a finished torchrun process at interpreter exit (1 run in 10 on 2 cores,
    measured): a process of a torchrun group ends by os._exit with the command's status instead."""
    import vaelab.__main__ as entry
    import vaelab.cli

    monkeypatch.setenv("WORLD_SIZE", world_size)
    monkeypatch.setattr(vaelab.cli, "main", lambda: 3)
    exits = []
    monkeypatch.setattr(entry.os, "_exit", exits.append)
    assert entry.main() == 3
    assert exits == ([3] if leaves else [])
