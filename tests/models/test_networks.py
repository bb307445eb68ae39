"""Networks beyond the MLP (issues 13 and 29): --architecture conv and the user's --encoder/--decoder
factories through train, evaluate (--exact too), compare and report; exact resume; load_run in
Python; and whatever a user's code does: one line naming it, before or during training, the run
directory left as it was; eval mode for every evaluation; consent before a run directory's code runs."""

from __future__ import annotations

import errno
import importlib.abc
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import run_main

from vaelab.builders import build_model, load_run
from vaelab.cli import main
from vaelab.config import ExperimentConfig, ModelConfig, TrainConfig
from vaelab.data import load_dataset
from vaelab.errors import ConfigError
from vaelab.estimators.bounds import evaluate_bound
from vaelab.evaluation.evaluate import evaluate_split
from vaelab.models.networks import NetworkLayer
from vaelab.runio import read_metrics
from vaelab.studies.compare.run import save_bound_curve

TINY = ["--hidden", "16", "--eval-every", "1", "--eval-k", "5", "--eval-train-size", "100", "--batch-size", "100", "--no-progress", "--threads", "1"]

# A module a user might write: small networks over [B, C, H, W] images, with a few broken factories.
USER_MODULE = textwrap.dedent(
    """
    import math
    import torch
    from torch import nn

    def encoder(data_shape, latent_dim):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(data_shape), 24), nn.Tanh(), nn.Linear(24, 2 * latent_dim))

    def decoder(data_shape, latent_dim):
        return nn.Sequential(nn.Linear(latent_dim, 24), nn.Tanh(), nn.Linear(24, math.prod(data_shape)), nn.Unflatten(1, data_shape))

    def wrong_shape(data_shape, latent_dim):
        return nn.Linear(latent_dim, 3)

    def not_finite(data_shape, latent_dim):
        class Broken(nn.Module):
            def forward(self, x):
                return torch.full((x.shape[0], *data_shape), float("nan"))
        return Broken()

    def not_a_module(data_shape, latent_dim):
        return "a string"

    def crashes(data_shape, latent_dim):
        class Crash(nn.Module):
            def forward(self, x):
                raise RuntimeError("mat1 and mat2 shapes cannot be multiplied\\nsecond line")
        return Crash()
    """
)


@pytest.fixture
def user_module(tmp_path):
    path = tmp_path / "mynets.py"
    path.write_text(USER_MODULE)
    return path


@pytest.mark.parametrize("networks", ["conv", "user"])
@pytest.mark.slow
@pytest.mark.e2e
def test_compare_evaluate_and_report_with_conv_and_user_networks(networks, user_module, tmp_path, capsys):
    options = ["--architecture", "conv"] if networks == "conv" else ["--encoder", f"{user_module}:encoder", "--decoder", f"{user_module}:decoder"]
    study = tmp_path / "study"
    assert main(["compare", *TINY, "--epochs", "1", *options, "--curve-images", "20", "--out", str(study)]) == 0
    trust = ["--trust-code"] if networks == "user" else []  # the runs name the user's module: it runs only with consent
    assert (study / "report.html").exists() and main(["report", str(study), *trust]) == 0
    run = study / "aevb"
    config = json.loads((run / "config.json").read_text())["model"]
    if networks == "user":
        assert config["encoder"] == f"{user_module}:encoder"
    else:
        assert config["architecture"] == "conv"
    assert main(["evaluate", str(run), "--k", "5", *trust]) == 0
    assert main(["evaluate", str(run), "--exact", "--images", "3", *trust]) == 0  # 2-D latent: quadrature
    assert (run / "exact-test.json").exists()
    capsys.readouterr()
    loaded = load_run(run, trust_code=True)
    assert isinstance(loaded.model.recognition, NetworkLayer) and isinstance(loaded.model.generative, NetworkLayer)
    assert read_metrics(run / "metrics.jsonl")[-1]["kind"] == "evaluate"


@pytest.mark.e2e
def test_resume_of_a_user_factory_run_is_bitwise_exact(user_module, tmp_path):
    options = [*TINY, "--encoder", f"{user_module}:encoder", "--decoder", f"{user_module}:decoder", "--algorithm", "iwae", "--num-samples", "3"]
    assert main(["train", *options, "--epochs", "2", "--out", str(tmp_path / "straight")]) == 0
    assert main(["train", *options, "--epochs", "1", "--out", str(tmp_path / "resumed")]) == 0
    assert main(["train", *options, "--epochs", "2", "--resume", "--out", str(tmp_path / "resumed")]) == 0
    straight, resumed = (torch.load(tmp_path / name / "checkpoint.pt", weights_only=False) for name in ("straight", "resumed"))
    assert straight["model"].keys() == resumed["model"].keys()
    for key in straight["model"]:
        assert torch.equal(straight["model"][key], resumed["model"][key]), key
    drop = lambda rows: [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in rows]  # noqa: E731
    assert drop(read_metrics(tmp_path / "straight" / "metrics.jsonl")) == drop(read_metrics(tmp_path / "resumed" / "metrics.jsonl"))


@pytest.mark.e2e
def test_load_run_samples_encodes_and_scores_new_x(tmp_path):
    assert main(["train", *TINY, "--architecture", "conv", "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    run = load_run(tmp_path / "run")
    images = run.model.sample(5, torch.Generator().manual_seed(0))
    assert images.shape == (5, 1, 8, 8) and ((images >= 0) & (images <= 1)).all()
    x = torch.bernoulli(run.dataset.unit_images("test")[:4], generator=torch.Generator().manual_seed(1)).reshape(4, 1, 8, 8)
    posterior = run.model.encode(x)
    assert isinstance(posterior, torch.distributions.Distribution) and posterior.batch_shape == (4,) and posterior.event_shape == (2,)
    bound = run.log_likelihood_bound(x, k=50, seed=2)
    assert bound.shape == (4,) and torch.isfinite(bound).all()
    torch.testing.assert_close(bound, evaluate_bound(run.model, x.reshape(4, 64), 50, torch.Generator().manual_seed(2)))
    assert (bound >= run.log_likelihood_bound(x, k=1, seed=2) - 1.0).all()  # L_50 above the ELBO, up to noise
    config, model, dataset, checkpoint = run  # the tuple the evaluation modules unpack
    assert model is run.model and checkpoint["epoch"] == 1


@pytest.mark.algebra
def test_network_layer_flattens_and_restores_sample_dimensions():
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=3, architecture="conv"), 3 * 6 * 5, "gaussian", (3, 6, 5))
    z = torch.randn(4, 2, 3)  # [k, B, latent]
    joint = model.likelihood(z)
    assert joint.batch_shape == (4, 2) and joint.event_shape == (90,)
    for index in range(4):
        torch.testing.assert_close(joint.mean[index], model.likelihood(z[index]).mean)
    x = torch.rand(2, 90)
    assert model.log_likelihood(x, z).shape == (4, 2)


@pytest.mark.parametrize(
    "encoder, decoder, fragment",
    [
        ("nosuchmodule_xyz:encoder", None, "cannot import nosuchmodule_xyz (ModuleNotFoundError"),
        ("{path}:missing", None, "has no callable 'missing'"),
        ("{path}:not_a_module", None, "returned a str, not a torch.nn.Module"),
        (None, "{path}:wrong_shape", "returned shape [2, 3] for input [2, 2]; expected [2, 1, 8, 8]"),
        (None, "{path}:not_finite", "returned non-finite values"),
        ("{path}:crashes", None, "failed on a batch of 2 (RuntimeError: mat1 and mat2 shapes cannot be multiplied"),
        ("/nonexistent/nets.py:encoder", None, "cannot import /nonexistent/nets.py (FileNotFoundError"),
    ],
)
@pytest.mark.e2e
def test_bad_factories_get_one_line_before_training(encoder, decoder, fragment, user_module, tmp_path, capsys):
    broken = "--encoder" if encoder else "--decoder"
    encoder = (encoder or "{path}:encoder").format(path=user_module)
    decoder = (decoder or "{path}:decoder").format(path=user_module)
    status, error = run_main(["train", *TINY, "--epochs", "1", "--encoder", encoder, "--decoder", decoder, "--out", str(tmp_path / "run")], capsys)
    assert status == 1 and error.count("\n") == 1 and "Traceback" not in error, error
    assert fragment in error, error
    assert f"{broken} {encoder if broken == '--encoder' else decoder}: " in error, error  # names the path
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--encoder", "m:f"], "--encoder and --decoder go together"),
        (["--encoder", "m:f", "--decoder", "m:g", "--architecture", "conv"], "leave --architecture at mlp"),
        (["--architecture", "conv", "--latent", "bernoulli", "--prior", "bernoulli"], "conv and user networks take Gaussian latents"),
        (["--encoder", "nocolon", "--decoder", "m:g"], "--encoder: must be MODULE:FACTORY"),
    ],
)
@pytest.mark.e2e
def test_inconsistent_network_options_get_one_line(args, fragment, tmp_path, capsys):
    status, error = run_main(["train", *TINY, "--epochs", "1", *args, "--out", str(tmp_path / "run")], capsys)
    assert status in (1, 2) and error.count("\n") == 1 and fragment in error, error


@pytest.mark.e2e
def test_conv_refuses_vector_data(tmp_path, capsys):
    import numpy as np

    np.savez(tmp_path / "vectors.npz", train=np.random.default_rng(0).random((50, 7)))
    status, error = run_main(["train", *TINY, "--epochs", "1", "--architecture", "conv", "--dataset", str(tmp_path / "vectors.npz"), "--out", str(tmp_path / "run")], capsys)
    assert status == 1 and "--architecture conv needs image data [C, H, W] (this data is vectors of 7)" in error, error


# Networks over [B, 1, 8, 8] digits: good ones, one with BatchNorm and dropout, and broken ones.
FAULTY_MODULE = textwrap.dedent(
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
def faulty_module(tmp_path):
    path = tmp_path / "mynets.py"
    path.write_text(FAULTY_MODULE)
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
@pytest.mark.e2e
def test_a_failing_user_network_is_one_line_and_leaves_no_run(factory, fragment, faulty_module, tmp_path, capsys):
    run = tmp_path / "run"
    command = ["train", *TINY, "--epochs", "1", "--encoder", f"{faulty_module}:{factory}", "--decoder", f"{faulty_module}:decoder", "--out", str(run)]
    for _ in range(2):  # the same command again: refused for the same reason, not for want of --overwrite
        status, error = run_main(command, capsys)
        assert status == 1 and error.count("\n") == 1 and "Traceback" not in error, error
        assert f"--encoder {faulty_module}:{factory}: {fragment}" in error, error
        assert "checkpoint" not in error and not run.exists(), error


@pytest.mark.e2e
def test_a_user_module_that_exits_on_import_is_one_line(tmp_path, capsys):
    module = tmp_path / "quits.py"
    module.write_text("import sys\nsys.exit(0)\n")
    status, error = run_main(["train", *TINY, "--epochs", "1", "--encoder", f"{module}:e", "--decoder", f"{module}:d", "--out", str(tmp_path / "run")], capsys)
    assert status == 1 and f"--encoder {module}:e: cannot import {module} (SystemExit: 0)" in error, error


@pytest.mark.e2e
def test_a_failed_start_in_an_empty_directory_leaves_it_empty(faulty_module, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    command = ["train", *TINY, "--epochs", "1", "--encoder", f"{faulty_module}:float64", "--decoder", f"{faulty_module}:decoder", "--out", str(run)]
    assert run_main(command, capsys)[0] == 1
    assert run.is_dir() and [path.name for path in run.iterdir() if path.name != ".vaelab.lock"] == []
    assert run_main(command, capsys)[0] == 1  # the same refusal, nothing about --overwrite


@pytest.mark.e2e
def test_evaluation_runs_in_eval_mode_and_leaves_batchnorm_statistics_alone(faulty_module):
    dataset = load_dataset("digits")
    model_config = ModelConfig(latent_dim=2, encoder=f"{faulty_module}:normalised", decoder=f"{faulty_module}:decoder")
    config = ExperimentConfig(model=model_config, train=TrainConfig(eval_k=5))
    torch.manual_seed(0)
    model = build_model(model_config, 64, "bernoulli", (1, 8, 8))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    first = evaluate_split(model, config, dataset, "test", 5, 1, num_images=50)
    second = evaluate_split(model, config, dataset, "test", 5, 1, num_images=50)
    assert first["bound"] == second["bound"]  # no dropout: the same draws give the same number
    assert all(torch.equal(value, before[name]) for name, value in model.state_dict().items())  # running statistics untouched
    assert all(module.training for module in model.modules())  # back in train mode


@pytest.mark.e2e
def test_the_compare_curve_of_a_trained_model_runs_it_in_eval_mode(faulty_module, tmp_path):
    dataset = load_dataset("digits")
    model_config = ModelConfig(latent_dim=2, encoder=f"{faulty_module}:normalised", decoder=f"{faulty_module}:decoder")
    config = ExperimentConfig(model=model_config, train=TrainConfig(eval_k=5))
    torch.manual_seed(0)
    model = build_model(model_config, 64, "bernoulli", (1, 8, 8))  # in train mode, as train() hands it back
    before = {name: value.clone() for name, value in model.state_dict().items()}
    runs = [tmp_path / "a", tmp_path / "b"]  # two run directories: the second call must not read the first's saved curve
    for run in runs:
        run.mkdir()
    curves = [save_bound_curve(run, config, model, dataset, 1, 10)["bound"] for run in runs]
    assert curves[0] == curves[1]  # no dropout: the same seeded draws give the same curve
    assert all(torch.equal(value, before[name]) for name, value in model.state_dict().items())  # running statistics untouched
    assert all(module.training for module in model.modules())  # back in train mode


@pytest.mark.e2e
def test_l_k_during_training_equals_evaluate_for_a_batchnorm_dropout_network(faulty_module, tmp_path, capsys):
    run = tmp_path / "run"
    networks = ["--encoder", f"{faulty_module}:normalised", "--decoder", f"{faulty_module}:decoder"]
    assert run_main(["train", *TINY, "--epochs", "1", *networks, "--out", str(run)], capsys)[0] == 0
    assert run_main(["evaluate", str(run), "--k", "5", "--trust-code"], capsys)[0] == 0
    rows = read_metrics(run / "metrics.jsonl")
    during = next(row for row in rows if row["kind"] == "eval" and row["split"] == "test")
    after = next(row for row in rows if row["kind"] == "evaluate")
    assert during["bound"] == pytest.approx(after["bound"], abs=1e-5)


@pytest.mark.e2e
def test_code_named_by_a_run_runs_only_with_consent(faulty_module, tmp_path, capsys):
    marker = tmp_path / "ran"
    module = tmp_path / "nets.py"
    module.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n" + FAULTY_MODULE)
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


@pytest.mark.e2e
def test_an_own_encoder_does_not_vouch_for_the_files_decoder(faulty_module, tmp_path, capsys):
    marker = tmp_path / "ran"
    theirs = tmp_path / "theirs.py"
    theirs.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n" + FAULTY_MODULE)
    config = tmp_path / "theirs.json"
    ExperimentConfig(model=ModelConfig(latent_dim=2, encoder=f"{theirs}:encoder", decoder=f"{theirs}:decoder")).save(config)
    mine = ["--encoder", f"{faulty_module}:encoder"]
    refusal = f"{config}: names network code that would run ({theirs}); pass --trust-code if you trust it"
    status, error = run_main(["train", *TINY, "--epochs", "1", "--config", str(config), *mine, "--out", str(tmp_path / "a")], capsys)
    assert status == 1 and error.count("\n") == 1 and refusal in error, error
    run = tmp_path / "run"  # a run of theirs: resuming it with an encoder of one's own still runs their decoder
    assert run_main(["train", *TINY, "--epochs", "1", "--config", str(config), "--trust-code", "--out", str(run)], capsys)[0] == 0
    marker.unlink()
    for name in [name for name, loaded in sys.modules.items() if getattr(loaded, "__file__", None) == str(theirs)]:
        del sys.modules[name]  # imported once per process: forget it, so that running it again would show
    status, error = run_main(["train", *TINY, "--epochs", "2", "--resume", "--out", str(run), *mine], capsys)
    assert status == 1 and f"{run / 'config.json'}: names network code that would run ({theirs})" in error, error
    assert not marker.exists()  # nothing of their module ran
    both = [*mine, "--decoder", f"{faulty_module}:decoder"]  # both networks one's own: no consent asked
    assert run_main(["train", *TINY, "--epochs", "1", "--config", str(config), *both, "--out", str(tmp_path / "b")], capsys)[0] == 0
    assert not marker.exists()


@pytest.mark.e2e
def test_bounds_on_a_run_of_user_networks_runs_it_only_with_consent(faulty_module, tmp_path, capsys):
    run = tmp_path / "run"
    networks = ["--encoder", f"{faulty_module}:encoder", "--decoder", f"{faulty_module}:decoder"]
    assert run_main(["train", *TINY, "--epochs", "1", "--latent-dim", "2", *networks, "--out", str(run)], capsys)[0] == 0
    command = ["bounds", "--run", str(run), "--quick", "--no-progress", "--out", str(tmp_path / "bounds")]
    status, error = run_main(command, capsys)
    assert status == 1 and error.count("\n") == 1 and "pass --trust-code" in error and str(faulty_module) in error, error
    assert run_main([*command, "--trust-code"], capsys)[0] == 0
    trained = next(curve for curve in json.loads((tmp_path / "bounds" / "bounds.json").read_text())["curves"] if curve["name"] == "trained")
    assert trained["run"] == str(run)


@pytest.mark.e2e
def test_a_study_of_user_networks_is_reported_only_with_consent(faulty_module, tmp_path, capsys):
    study = tmp_path / "study"
    networks = ["--encoder", f"{faulty_module}:encoder", "--decoder", f"{faulty_module}:decoder"]
    assert run_main(["compare", *TINY, "--epochs", "1", "--algorithms", "aevb", "--jobs", "1", *networks, "--curve-images", "5", "--out", str(study)], capsys)[0] == 0
    status, error = run_main(["report", str(study)], capsys)
    assert status == 1 and "pass --trust-code" in error and str(faulty_module) in error, error
    assert run_main(["report", str(study), "--trust-code"], capsys)[0] == 0


class _InterruptedImport(importlib.abc.MetaPathFinder):
    """Ctrl-C while ``vaelab.cli`` (and through it torch) is being imported, deterministically."""

    def find_spec(self, name, path, target=None):
        if name == "vaelab.cli":
            raise KeyboardInterrupt
        return None


@pytest.mark.e2e
def test_ctrl_c_while_loading_is_one_line_and_exit_130(monkeypatch, capsys):
    from vaelab.__main__ import main as entry_point

    monkeypatch.delitem(sys.modules, "vaelab.cli")
    monkeypatch.setattr(sys, "meta_path", [_InterruptedImport(), *sys.meta_path])
    assert entry_point() == 130
    assert capsys.readouterr().err == "vaelab: interrupted\n"
    (script,) = [entry for entry in importlib.metadata.entry_points(group="console_scripts") if entry.name == "vaelab"]
    assert script.value == "vaelab.__main__:main"  # the installed command goes through it


@pytest.mark.e2e
def test_ctrl_c_sent_while_the_command_loads_is_one_line():
    # a real SIGINT, sent by the process to itself as Python starts to import vaelab.cli: the moment
    # is fixed by the import, not by how fast this test reads another process's output (a loaded
    # machine let the command finish first)
    code = textwrap.dedent(
        """
        import os, signal, sys

        class InterruptOnLoad:
            def find_spec(self, name, path=None, target=None):
                if name == "vaelab.cli":
                    os.kill(os.getpid(), signal.SIGINT)
                return None

        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal: a shell's background job starts with SIGINT ignored
        sys.meta_path.insert(0, InterruptOnLoad())
        from vaelab.__main__ import main
        sys.argv = ["vaelab", "datasets"]
        sys.exit(main())
        """
    )
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert process.returncode == 130 and process.stderr.splitlines() == ["vaelab: interrupted"], process.stderr[-2000:]
    assert process.stdout == ""


@pytest.mark.e2e
def test_a_batch_larger_than_the_data_is_sized_as_the_data(tmp_path, capsys):
    status, error = run_main(["train", *TINY, "--batch-size", str(10**9), "--epochs", "1", "--out", str(tmp_path / "run")], capsys)
    assert status == 0, error  # one batch of the 1,350 training images, not a refusal for 3,427 GiB


@pytest.mark.parametrize("call, named", [("pwrite", ".vaelab.lock"), ("fsync", "environment.json")])
@pytest.mark.e2e
def test_a_full_disk_at_the_start_is_one_line_and_leaves_nothing(call, named, tmp_path, capsys, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, call, full)
    run = tmp_path / "run"
    status, error = run_main(["train", *TINY, "--epochs", "1", "--out", str(run)], capsys)
    assert status == 1 and error.count("\n") == 1 and f"{run / named}: cannot write (No space left on device)" in error, error
    assert not run.exists()


@pytest.mark.e2e
def test_a_study_file_without_algorithms_is_refused_without_an_index_error(tmp_path, capsys):
    (tmp_path / "compare.json").write_text('{"algorithms": [], "config": {"train": {}}, "curve_images": 5}')
    status, error = run_main(["report", str(tmp_path)], capsys)
    assert status == 1 and "not a valid study file (ConfigError: a study needs at least one algorithm)" in error, error
    assert "IndexError" not in error
