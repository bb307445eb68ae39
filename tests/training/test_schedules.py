"""Learning-rate schedules: Burda et al.'s staged values, Adam's options, and exact resume mid-schedule."""

from __future__ import annotations

import math

import pytest
import torch

from vaelab.builders import build_run
from vaelab.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from vaelab.data import load_dataset
from vaelab.errors import ConfigError
from vaelab.schedules import burda_epochs, burda_stage, learning_rate_at
from vaelab.training import TrainingHooks, train


@pytest.mark.algebra
def test_burda_stages_are_3_to_the_i_epochs_long():
    stages = [burda_stage(epoch) for epoch in range(1, burda_epochs(7) + 1)]
    assert [stages.count(i) for i in range(8)] == [3**i for i in range(8)]
    assert stages == sorted(stages)  # stages follow one another
    assert burda_epochs(5) == 364 and burda_epochs(7) == 3280  # the i = 0..5 and the paper's 3,280 passes
    assert [burda_stage(e) for e in (1, 2, 4, 5, 13, 14, 364, 365, 3280, 3281)] == [0, 1, 1, 2, 2, 3, 5, 6, 7, 8]
    with pytest.raises(ValueError):
        burda_stage(0)


@pytest.mark.algebra
def test_burda_learning_rates_are_1e_3_times_10_to_the_minus_i_over_7():
    config = TrainConfig(lr_schedule="burda", learning_rate=1e-3)
    last_epochs = [burda_epochs(i) for i in range(8)]  # 1, 4, 13, 40, 121, 364, 1093, 3280
    for i, epoch in enumerate(last_epochs):
        assert learning_rate_at(config, epoch) == pytest.approx(1e-3 * 10 ** (-i / 7), rel=1e-12)
    assert learning_rate_at(config, 3280) == pytest.approx(1e-4, rel=1e-12)  # one decade over the seven steps
    assert math.isclose(learning_rate_at(TrainConfig(learning_rate=3e-4), 1000), 3e-4)  # constant


@pytest.mark.algebra
def test_adam_takes_the_configs_betas_and_epsilon():
    config = ExperimentConfig(
        model=ModelConfig(latent_dim=2, hidden=(8,)), train=TrainConfig(adam_beta1=0.5, adam_beta2=0.99, adam_eps=1e-4)
    )
    _, optimizer = build_run(config, load_dataset("digits"))
    for group in optimizer.param_groups:
        assert group["betas"] == (0.5, 0.99) and group["eps"] == 1e-4


@pytest.mark.parametrize("options", [{"adam_beta1": 1.0}, {"adam_eps": 0.0}, {"lr_schedule": "cosine"}, {"train_size": 0}])
@pytest.mark.algebra
def test_bad_optimiser_options_are_refused(options):
    with pytest.raises(ConfigError):
        TrainConfig(**options)


def _staged_config(epochs: int) -> ExperimentConfig:
    return ExperimentConfig(
        data=DataConfig(dataset="digits"),
        model=ModelConfig(latent_dim=2, hidden=(16,)),
        train=TrainConfig(
            algorithm="iwae", num_samples=3, epochs=epochs, batch_size=50, learning_rate=3e-3, lr_schedule="burda",
            adam_eps=1e-4, eval_every=100, eval_k=5, eval_splits=("test",), train_size=300,
        ),
        seed=5,
    )


@pytest.mark.e2e
def test_training_sets_each_epochs_learning_rate(tmp_path):
    seen = []
    config = _staged_config(5)
    result = train(config, tmp_path, progress=False, hooks=TrainingHooks(on_epoch_start=lambda epoch, lr: seen.append((epoch, lr))))
    assert seen == [(epoch, learning_rate_at(config.train, epoch)) for epoch in range(1, 6)]
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert [group["lr"] for group in checkpoint["optimizer"]["param_groups"]] == pytest.approx([3e-3 * 10 ** (-2 / 7)] * 2)
    assert result.dataset.splits["train"].images.shape[0] == 1497  # train_size subsets training, not the dataset


@pytest.mark.e2e
def test_a_run_killed_mid_schedule_resumes_bitwise_equal(tmp_path):
    """Killed in epoch 3 (stage 1) and resumed: stage 2 then starts at epoch 5 as in the
    uninterrupted run, and every parameter and Adam moment is bitwise equal."""
    reference = train(_staged_config(6), tmp_path / "reference", progress=False)

    calls = {"steps": 0}

    def dying_objective(objective):
        def step(model, x, generator, **step_options):
            calls["steps"] += 1
            if calls["steps"] == 2 * 6 + 3:  # 6 steps per epoch (300 images, batch 50): epoch 3, step 3
                raise KeyboardInterrupt
            return objective(model, x, generator, **step_options)

        return step

    with pytest.raises(KeyboardInterrupt):
        train(_staged_config(6), tmp_path / "killed", progress=False, hooks=TrainingHooks(wrap_objective=dying_objective))
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["epoch"] == 2

    resumed = train(_staged_config(6), tmp_path / "killed", resume=True, progress=False)
    for name, tensor in reference.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    saved = [torch.load(tmp_path / run / "checkpoint.pt", weights_only=True)["optimizer"] for run in ("reference", "killed")]
    for index, state in saved[0]["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(state[key], saved[1]["state"][index][key])
    assert [g["lr"] for g in saved[0]["param_groups"]] == [g["lr"] for g in saved[1]["param_groups"]]
