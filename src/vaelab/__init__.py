"""vaelab: deep latent-variable generative models (Helmholtz machines, VAEs) in PyTorch.

Train with wake-sleep or AEVB, measure with the importance-weighted bound L_k::

    from vaelab import ExperimentConfig, TrainConfig, train
    result = train(ExperimentConfig(train=TrainConfig(algorithm="wake-sleep", epochs=5)), "runs/ws")

The root is light: ``import vaelab`` loads no torch; each public name below is imported from
its module on first use (PEP 562), so ``vaelab --help`` and ``vaelab --version`` answer at once.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    "ConfigError": "vaelab.errors",
    "DataError": "vaelab.errors",
    "RunError": "vaelab.errors",
    "VaelabError": "vaelab.errors",
    "DataConfig": "vaelab.config",
    "ExperimentConfig": "vaelab.config",
    "ModelConfig": "vaelab.config",
    "TrainConfig": "vaelab.config",
    "evaluate_bound": "vaelab.estimators.bounds",
    "importance_weighted_bound": "vaelab.estimators.bounds",
    "evaluate_run": "vaelab.evaluation.evaluate",
    "load_run": "vaelab.builders",
    "LoadedRun": "vaelab.builders",
    "dataset_from_arrays": "vaelab.data.user",
    "dataset_from_torch": "vaelab.data.user",
    "train": "vaelab.training",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'vaelab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
