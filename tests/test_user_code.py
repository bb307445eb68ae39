"""Whatever a user's network code does (issue 29): one line naming it, before or during training, the
run directory left as it was; eval mode for every evaluation; consent before a run directory's code runs."""

from __future__ import annotations

import errno
import importlib.abc
import importlib.metadata
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import run_main

from vaelab.builders import build_model, load_run
from vaelab.config import ExperimentConfig, ModelConfig, TrainConfig
from vaelab.data import load_dataset
from vaelab.errors import ConfigError
from vaelab.evaluation.evaluate import evaluate_split
from vaelab.runio import read_metrics

pytestmark = pytest.mark.e2e

TINY = ["--hidden", "16", "--eval-every", "1", "--eval-k", "5", "--eval-train-size", "100", "--batch-size", "100", "--no-progress", "--threads", "1"]

# Networks over [B, 1, 8, 8] digits: good ones, one with BatchNorm and dropout, and broken ones.
USER_MODULE = textwrap.dedent(
    """
    import math
    import sys
    import torch
    from torch import nn

    def encoder(data_shape, latent_dim):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(data_shape), 24), nn.Tanh(), nn.Linear(24, 2 * latent_dim))

    def decoder(data_shape, latent_dim):
        return nn.Sequential(nn.Linear(latent_dim, 24), nn.Tanh(), nn.Linear(24, math.prod(data_shape)), nn.Unflatten(1, data_shape))

    def normalised(data_shape, latent_dim):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(data_shape), 24), nn.BatchNorm1d(24), nn.Tanh(), nn.Dropout(0.5), nn.Linear(24, 2 * latent_dim))

    def raises(data_shape, latent_dim):
        raise RuntimeError("no GPU here\\nsecond line")

    def exits(data_shape, latent_dim):
        sys.exit(0)

    def interrupts(data_shape, latent_dim):
        raise KeyboardInterrupt

    class Wrapped(nn.Module):
        def __init__(self, data_shape, latent_dim, output):
            super().__init__()
            self.inner, self.output = encoder(data_shape, latent_dim), output

        def forward(self, x):
            return self.output(self.inner(x))

    def int64(data_shape, latent_dim):
        return Wrapped(data_shape, latent_dim, lambda h: h.long())

    def float64(data_shape, latent_dim):
        return Wrapped(data_shape, latent_dim, lambda h: h.double())

    def exits_in_forward(data_shape, latent_dim):
        return Wrapped(data_shape, latent_dim, lambda h: sys.exit(0))

    def right_for_two_only(data_shape, latent_dim):
        return Wrapped(data_shape, latent_dim, lambda h: h if h.shape[0] <= 2 else h[:, :1])
    """
)


@pytest.fixture
def user_module(tmp_path):
    path = tmp_path / "mynets.py"
    path.write_text(USER_MODULE)
    return path


@pytest.mark.parametrize(
    "factory, fragment",
    [
        ("raises", "failed to build its network (RuntimeError: no GPU here)"),
        ("exits", "failed to build its network (SystemExit: 0)"),
        ("interrupts", "failed to build its network (KeyboardInterrupt)"),
        ("int64", "returned torch.int64 for torch.float32 input [2, 1, 8, 8]; expected torch.float32"),
        ("float64", "returned torch.float64 for torch.float32 input [2, 1, 8, 8]; expected torch.float32"),
        ("exits_in_forward", "failed on a batch of 2 (SystemExit: 0)"),
        # right for the 2-image probe, wrong for the first training batch of 100
        ("right_for_two_only", "returned shape [100, 1] for input [100, 1, 8, 8]; expected [100, 4]"),
    ],
)
def test_a_failing_user_network_is_one_line_and_leaves_no_run(factory, fragment, user_module, tmp_path, capsys):
    run = tmp_path / "run"
    command = ["train", *TINY, "--epochs", "1", "--encoder", f"{user_module}:{factory}", "--decoder", f"{user_module}:decoder", "--out", str(run)]
    for _ in range(2):  # the same command again: refused for the same reason, not for want of --overwrite
        status, error = run_main(command, capsys)
        assert status == 1 and error.count("\n") == 1 and "Traceback" not in error, error
        assert f"--encoder {user_module}:{factory}: {fragment}" in error, error
        assert "checkpoint" not in error and not run.exists(), error


def test_a_user_module_that_exits_on_import_is_one_line(tmp_path, capsys):
    module = tmp_path / "quits.py"
    module.write_text("import sys\nsys.exit(0)\n")
    status, error = run_main(["train", *TINY, "--epochs", "1", "--encoder", f"{module}:e", "--decoder", f"{module}:d", "--out", str(tmp_path / "run")], capsys)
    assert status == 1 and f"--encoder {module}:e: cannot import {module} (SystemExit: 0)" in error, error


def test_a_failed_start_in_an_empty_directory_leaves_it_empty(user_module, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    command = ["train", *TINY, "--epochs", "1", "--encoder", f"{user_module}:float64", "--decoder", f"{user_module}:decoder", "--out", str(run)]
    assert run_main(command, capsys)[0] == 1
    assert run.is_dir() and [path.name for path in run.iterdir() if path.name != ".vaelab.lock"] == []
    assert run_main(command, capsys)[0] == 1  # the same refusal, nothing about --overwrite


def test_evaluation_runs_in_eval_mode_and_leaves_batchnorm_statistics_alone(user_module):
    dataset = load_dataset("digits")
    model_config = ModelConfig(latent_dim=2, encoder=f"{user_module}:normalised", decoder=f"{user_module}:decoder")
    config = ExperimentConfig(model=model_config, train=TrainConfig(eval_k=5))
    torch.manual_seed(0)
    model = build_model(model_config, 64, "bernoulli", (1, 8, 8))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    first = evaluate_split(model, config, dataset, "test", 5, 1, num_images=50)
    second = evaluate_split(model, config, dataset, "test", 5, 1, num_images=50)
    assert first["bound"] == second["bound"]  # no dropout: the same draws give the same number
    assert all(torch.equal(value, before[name]) for name, value in model.state_dict().items())  # running statistics untouched
    assert all(module.training for module in model.modules())  # back in train mode


def test_l_k_during_training_equals_evaluate_for_a_batchnorm_dropout_network(user_module, tmp_path, capsys):
    run = tmp_path / "run"
    networks = ["--encoder", f"{user_module}:normalised", "--decoder", f"{user_module}:decoder"]
    assert run_main(["train", *TINY, "--epochs", "1", *networks, "--out", str(run)], capsys)[0] == 0
    assert run_main(["evaluate", str(run), "--k", "5", "--trust-code"], capsys)[0] == 0
    rows = read_metrics(run / "metrics.jsonl")
    during = next(row for row in rows if row["kind"] == "eval" and row["split"] == "test")
    after = next(row for row in rows if row["kind"] == "evaluate")
    assert during["bound"] == pytest.approx(after["bound"], abs=1e-5)


def test_code_named_by_a_run_runs_only_with_consent(user_module, tmp_path, capsys):
    marker = tmp_path / "ran"
    module = tmp_path / "nets.py"
    module.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n" + USER_MODULE)
    run = tmp_path / "run"
    networks = ["--encoder", f"{module}:encoder", "--decoder", f"{module}:decoder"]
    assert run_main(["train", *TINY, "--epochs", "1", *networks, "--out", str(run)], capsys)[0] == 0  # the command line is consent
    marker.unlink()
    for name in [name for name, loaded in sys.modules.items() if getattr(loaded, "__file__", None) == str(module)]:
        del sys.modules[name]  # imported once per process: forget it, so that running it again would show
    refusal = f"{run / 'config.json'}: names network code that would run ({module}); pass --trust-code if you trust it"
    for command in (["evaluate", str(run), "--k", "5"], ["evaluate", str(run), "--exact", "--images", "2"],
                    ["evaluate", str(run), "--estimator", "ais", "--steps", "1", "--k", "2", "--images", "2"],
                    ["train", *TINY, "--epochs", "2", "--resume", "--out", str(run)]):
        status, error = run_main(command, capsys)
        assert status == 1 and error.count("\n") == 1 and refusal in error, (command, error)
    with pytest.raises(ConfigError, match="trust_code=True in Python"):
        load_run(run)
    assert not marker.exists()  # nothing of the module ran
    assert load_run(run, trust_code=True).config.model.encoder == f"{module}:encoder" and marker.exists()
    assert run_main(["train", *TINY, "--epochs", "2", "--resume", "--out", str(run), "--trust-code"], capsys)[0] == 0
    assert run_main(["train", *TINY, "--epochs", "3", "--resume", "--out", str(run), *networks], capsys)[0] == 0


def test_a_study_of_user_networks_is_reported_only_with_consent(user_module, tmp_path, capsys):
    study = tmp_path / "study"
    networks = ["--encoder", f"{user_module}:encoder", "--decoder", f"{user_module}:decoder"]
    assert run_main(["compare", *TINY, "--epochs", "1", "--algorithms", "aevb", "--jobs", "1", *networks, "--curve-images", "5", "--out", str(study)], capsys)[0] == 0
    status, error = run_main(["report", str(study)], capsys)
    assert status == 1 and "pass --trust-code" in error and str(user_module) in error, error
    assert run_main(["report", str(study), "--trust-code"], capsys)[0] == 0


class _InterruptedImport(importlib.abc.MetaPathFinder):
    """Ctrl-C while ``vaelab.cli`` (and through it torch) is being imported, deterministically."""

    def find_spec(self, name, path, target=None):
        if name == "vaelab.cli":
            raise KeyboardInterrupt
        return None


def test_ctrl_c_while_loading_is_one_line_and_exit_130(monkeypatch, capsys):
    from vaelab.__main__ import main as entry_point

    monkeypatch.delitem(sys.modules, "vaelab.cli")
    monkeypatch.setattr(sys, "meta_path", [_InterruptedImport(), *sys.meta_path])
    assert entry_point() == 130
    assert capsys.readouterr().err == "vaelab: interrupted\n"
    (script,) = [entry for entry in importlib.metadata.entry_points(group="console_scripts") if entry.name == "vaelab"]
    assert script.value == "vaelab.__main__:main"  # the installed command goes through it


def test_ctrl_c_sent_while_the_command_loads_is_one_line():
    # the installed command, under -X importtime, which reports each import as it completes: SIGINT
    # goes once the command line has begun to load, while it and torch (a second or more) still load
    command = [sys.executable, "-X", "importtime", str(Path(sys.executable).parent / "vaelab"), "datasets"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        if line.split("|")[-1].strip() == "vaelab.errors":
            break
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=60)
    lines = [line for line in rest.splitlines() if not line.startswith("import time:")]
    assert process.returncode == 130 and len(lines) == 1 and "interrupted" in lines[0], rest[-2000:]


def test_a_batch_larger_than_the_data_is_sized_as_the_data(tmp_path, capsys):
    status, error = run_main(["train", *TINY, "--batch-size", str(10**9), "--epochs", "1", "--out", str(tmp_path / "run")], capsys)
    assert status == 0, error  # one batch of the 1,350 training images, not a refusal for 3,427 GiB


@pytest.mark.parametrize("call, named", [("pwrite", ".vaelab.lock"), ("fsync", "environment.json")])
def test_a_full_disk_at_the_start_is_one_line_and_leaves_nothing(call, named, tmp_path, capsys, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, call, full)
    run = tmp_path / "run"
    status, error = run_main(["train", *TINY, "--epochs", "1", "--out", str(run)], capsys)
    assert status == 1 and error.count("\n") == 1 and f"{run / named}: cannot write (No space left on device)" in error, error
    assert not run.exists()


def test_a_study_file_without_algorithms_is_refused_without_an_index_error(tmp_path, capsys):
    (tmp_path / "compare.json").write_text('{"algorithms": [], "config": {"train": {}}, "curve_images": 5}')
    status, error = run_main(["report", str(tmp_path)], capsys)
    assert status == 1 and "not a valid study file (ConfigError: a study needs at least one algorithm)" in error, error
    assert "IndexError" not in error
