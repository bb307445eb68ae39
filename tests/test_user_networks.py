"""Networks beyond the MLP (issue 13): --architecture conv and the user's --encoder/--decoder factories
through train, evaluate (--exact too), compare and report; exact resume; load_run in Python; bad
factories answered in one line before any training."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from conftest import run_main

from vaelab.builders import build_model, load_run
from vaelab.cli import main
from vaelab.config import ModelConfig
from vaelab.estimators.bounds import evaluate_bound
from vaelab.models.networks import NetworkLayer
from vaelab.runio import read_metrics

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
    x = torch.bernoulli(run.dataset.splits["test"].images[:4], generator=torch.Generator().manual_seed(1)).reshape(4, 1, 8, 8)
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
