"""vaelab: deep latent-variable generative models (Helmholtz machines, VAEs) in PyTorch.

Train with wake-sleep or AEVB, measure with the importance-weighted bound L_k::

    from vaelab import ExperimentConfig, TrainConfig, train
    result = train(ExperimentConfig(train=TrainConfig(algorithm="wake-sleep", epochs=5)), "runs/ws")
"""

from vaelab.estimators.bounds import evaluate_bound, importance_weighted_bound
from vaelab.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from vaelab.errors import ConfigError, DataError, RunError, VaelabError
from vaelab.evaluation.evaluate import evaluate_run, load_run
from vaelab.training import train

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataConfig",
    "DataError",
    "ExperimentConfig",
    "ModelConfig",
    "RunError",
    "TrainConfig",
    "VaelabError",
    "evaluate_bound",
    "evaluate_run",
    "importance_weighted_bound",
    "load_run",
    "train",
]
