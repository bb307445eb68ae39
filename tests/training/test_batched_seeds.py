"""Seeds trained together over stacked parameters (vaelab.batched) against lone runs of vaelab.training.train."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vaelab.batched import train_together
from vaelab.builders import dataset_of
from vaelab.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from vaelab.errors import ConfigError
from vaelab.training import train

pytestmark = pytest.mark.e2e

SEEDS = (0, 1, 2)


def _config(algorithm: str, num_samples: int, binarization: str = "dynamic") -> ExperimentConfig:
    # digits, 2 epochs of 29 steps: the second epoch checks the per-seed redraw of binarization and order
    return ExperimentConfig(
        data=DataConfig(binarization=binarization),
        model=ModelConfig(latent_dim=2, hidden=(16,)),
        train=TrainConfig(algorithm=algorithm, num_samples=num_samples, epochs=2, batch_size=50, eval_k=1, eval_splits=("test",)),
    )


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([parameter.detach().flatten() for parameter in model.parameters()])


@pytest.mark.parametrize(("algorithm", "num_samples", "binarization"), [("iwae", 3, "dynamic"), ("aevb", 1, "dynamic"), ("iwae", 2, "static")])
def test_each_seed_of_a_batched_run_follows_its_lone_run(tmp_path, algorithm, num_samples, binarization):
    config = _config(algorithm, num_samples, binarization)
    models, bounds = train_together(config, SEEDS, dataset_of(config.data))
    lone = [train(dataclasses.replace(config, seed=seed), tmp_path / str(seed), progress=False) for seed in SEEDS]
    for index, run in enumerate(lone):
        expected, got = _flat(run.model), _flat(models[index])
        # Not bitwise: the stacked layers multiply with bmm, whose float32 summation order differs from the
        # lone run's mm; after 58 Adam steps the parameters agree to ~3e-8 of their largest value.
        assert (got - expected).abs().max() <= 1e-6 * expected.abs().max()
        trained = [row["bound"] for row in run.metrics if row["kind"] == "train"]
        torch.testing.assert_close(bounds[:, index], torch.tensor(trained, dtype=torch.float64), rtol=0, atol=1e-4)
    # the seeds are not one run three times: each took its own initialisation, data order and noise
    assert not torch.allclose(_flat(models[0]), _flat(models[1]))
    assert len(set(bounds[-1].tolist())) == len(SEEDS)


def test_algorithms_without_a_batched_path_are_refused():
    config = _config("wake-sleep", 1)
    with pytest.raises(ConfigError, match="aevb and iwae only"):
        train_together(config, SEEDS, dataset_of(config.data))
    with pytest.raises(ConfigError, match="distinct"):
        train_together(_config("iwae", 2), (0, 0), dataset_of(config.data))
