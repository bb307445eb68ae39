"""KL warm-up and free bits in training: the schedule of beta step by step, the options' checks and
refusals, the report's note, exact resume, and a run whose metrics show beta rising."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import TINY, run_cli
from test_train import comparable, small_config

from vaelab.batched import train_together
from vaelab.builders import dataset_of
from vaelab.config import ExperimentConfig, TrainConfig
from vaelab.errors import ConfigError
from vaelab.objectives import kl_weight_at
from vaelab.objectives.registry import surrogate_notes
from vaelab.runio import read_metrics
from vaelab.training import TrainingHooks, train


@pytest.mark.algebra
def test_kl_weight_rises_linearly_over_the_warm_up_epochs_step_by_step():
    # 2 epochs of 4 steps: beta = completed steps / 8
    warm = TrainConfig(kl_warmup=2)
    steps = [(1, 0, 0.0), (1, 1, 0.125), (1, 3, 0.375), (2, 0, 0.5), (2, 3, 0.875), (3, 0, 1.0), (7, 2, 1.0)]
    assert [kl_weight_at(warm, epoch, batch, 4) for epoch, batch, _ in steps] == [beta for _, _, beta in steps]
    assert kl_weight_at(TrainConfig(kl_warmup=3), 2, 5, 10) == 15 / 30
    assert kl_weight_at(TrainConfig(), 1, 0, 4) == 1.0  # off
    assert kl_weight_at(TrainConfig(algorithm="iwae", kl_warmup=2), 1, 0, 4) == 1.0  # iwae does not warm up


@pytest.mark.parametrize(
    "options, message",
    [
        ({"kl_warmup": -1}, "kl_warmup must be a non-negative integer"),
        ({"kl_warmup": 1.5}, "kl_warmup must be a non-negative integer"),
        ({"free_bits": -0.5}, "free_bits must be a non-negative number"),
        ({"free_bits": float("inf")}, "free_bits must be a non-negative number"),
    ],
)
@pytest.mark.algebra
def test_bad_warm_up_and_free_bits_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**options)


@pytest.mark.algebra
def test_the_report_says_which_algorithms_trained_on_which_surrogate():
    train_config = TrainConfig(kl_warmup=10, free_bits=0.25)
    assert surrogate_notes(train_config, ["wake-sleep", "aevb"]) == [
        "aevb trained with KL warm-up over 10 epochs and 0.25 free nats per stochastic layer; every bound shown is the true ELBO or L_k."
    ]
    assert surrogate_notes(TrainConfig(kl_warmup=1), ["aevb"]) == ["aevb trained with KL warm-up over 1 epoch; every bound shown is the true ELBO or L_k."]
    assert surrogate_notes(train_config, ["iwae"]) == []  # none of them read the options
    assert surrogate_notes(TrainConfig(), ["aevb"]) == []


@pytest.mark.parametrize("flag, value", [("--kl-warmup", "5"), ("--free-bits", "0.5")])
@pytest.mark.e2e
def test_an_algorithm_that_does_not_warm_up_refuses_the_options_in_one_line(tmp_path, flag, value):
    status, _, stderr = run_cli("train", "--algorithm", "iwae", flag, value, *TINY, "--out", tmp_path / "run")
    assert status != 0 and "Traceback" not in stderr
    assert stderr.strip().splitlines() == [f"vaelab train: error: {flag} applies to aevb only, not to iwae"]
    assert not (tmp_path / "run").exists()


@pytest.mark.e2e
def test_a_resumed_warm_up_replays_the_uninterrupted_run(tmp_path):
    config = small_config(epochs=4, kl_warmup=3, free_bits=0.1)
    reference = train(config, tmp_path / "reference", progress=False)

    def crash_at_epoch_2(path, state):  # mid warm-up: beta has reached 1/3 of the way, not 1
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "crashed", progress=False, hooks=TrainingHooks(on_checkpoint=crash_at_epoch_2))
    resumed = train(config, tmp_path / "crashed", resume=True, progress=False)
    assert comparable(resumed.metrics) == comparable(reference.metrics)
    for name, tensor in reference.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    # and the warm-up changed the training: the same run without it ends elsewhere
    plain = train(dataclasses.replace(config, train=dataclasses.replace(config.train, kl_warmup=0, free_bits=0.0)), tmp_path / "plain", progress=False)
    assert not torch.equal(plain.model.generative.logits.bias, reference.model.generative.logits.bias)


@pytest.mark.e2e
def test_vaelab_train_with_warm_up_and_free_bits_records_beta_rising(tmp_path):
    run = tmp_path / "run"
    status, _, stderr = run_cli("train", *TINY, "--epochs", "3", "--eval-every", "3", "--kl-warmup", "2", "--free-bits", "0.5", "--out", run)
    assert status == 0, stderr
    saved = ExperimentConfig.load(run / "config.json").train
    assert (saved.kl_warmup, saved.free_bits) == (2, 0.5)
    rows = [row for row in read_metrics(run / "metrics.jsonl") if row["kind"] == "train"]
    steps = rows[0]["step"]  # per epoch
    # each train row carries its last step's beta: (steps - 1) / (2 steps), then (2 steps - 1) / (2 steps), then 1
    assert [row["kl_weight"] for row in rows] == [(steps - 1) / (2 * steps), (2 * steps - 1) / (2 * steps), 1.0]
    evaluations = [row for row in read_metrics(run / "metrics.jsonl") if row["kind"] == "eval"]
    assert evaluations and all(row["elbo"] < 0 for row in evaluations)  # bounds as ever, in nats


@pytest.mark.slow
@pytest.mark.e2e
def test_a_compare_report_says_its_aevb_run_warmed_up_and_only_its_rows_carry_beta(tmp_path):
    out = tmp_path / "study"
    status, _, stderr = run_cli("compare", "--algorithms", "aevb,wake-sleep", *TINY, "--epochs", "1", "--curve-images", "20", "--kl-warmup", "1", "--out", out)
    assert status == 0, stderr
    html = (out / "report.html").read_text()
    assert "aevb trained with KL warm-up over 1 epoch; every bound shown is the true ELBO or L_k." in html
    for algorithm, weighted in (("aevb", True), ("wake-sleep", False)):  # wake-sleep has no KL term to weigh
        rows = [row for row in read_metrics(out / algorithm / "metrics.jsonl") if row["kind"] == "train"]
        assert rows and all(("kl_weight" in row) == weighted for row in rows)


@pytest.mark.e2e
def test_seeds_trained_together_refuse_warm_up_and_free_bits():
    for options in ({"kl_warmup": 2}, {"free_bits": 0.5}):
        config = small_config(epochs=1, **options)
        with pytest.raises(ConfigError, match="without --kl-warmup and --free-bits"):
            train_together(config, (0, 1), dataset_of(config.data))
