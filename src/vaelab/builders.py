"""Model and optimiser construction: the one place that turns a config, or a saved run, into networks.

``models/`` knows no config; training, evaluation and the studies build through here, so a
resumed or evaluated run rebuilds exactly the model it was trained with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vaelab.config import ExperimentConfig, ModelConfig
from vaelab.data import Dataset, load_dataset
from vaelab.distributed import resolve_device
from vaelab.errors import RunError
from vaelab.models import BernoulliLayer, DiagonalGaussianLayer, HelmholtzMachine, VampPrior
from vaelab.models.priors import build_prior
from vaelab.runio import CHECKPOINT_FILE, CONFIG_FILE, load_checkpoint, load_model_state

LIKELIHOOD_LAYERS = {"bernoulli": BernoulliLayer, "gaussian": DiagonalGaussianLayer}
LATENT_LAYERS = {"gaussian": DiagonalGaussianLayer, "bernoulli": BernoulliLayer}


def build_model(config: ModelConfig, data_dim: int, likelihood: str) -> HelmholtzMachine:
    """The MLP Helmholtz machine of ``config`` for data of ``data_dim`` pixels.

    ``likelihood`` is the dataset's ('bernoulli' or 'gaussian'); ``config.likelihood`` overrides it
    unless it is 'auto'. x <-> z_1 networks have ``config.hidden`` units, z_l <-> z_{l+1} networks
    ``config.upper_hidden``.
    """
    if config.likelihood != "auto":
        likelihood = config.likelihood
    dims, latent_layer = config.latent_dims, LATENT_LAYERS[config.latent]
    generative = LIKELIHOOD_LAYERS[likelihood](dims[0], data_dim, config.hidden, config.activation)
    recognition = latent_layer(data_dim, dims[0], config.hidden, config.activation)
    upper_generative = [latent_layer(upper, lower, config.upper_hidden, config.activation) for lower, upper in zip(dims, dims[1:])]
    upper_recognition = [latent_layer(lower, upper, config.upper_hidden, config.activation) for lower, upper in zip(dims, dims[1:])]
    prior = build_prior(config.prior, dims[-1], config.prior_size, data_dim, recognition)
    return HelmholtzMachine(prior, generative, recognition, dims, upper_generative, upper_recognition)


def initial_model(config: ExperimentConfig, dataset: Dataset) -> HelmholtzMachine:
    """The model of ``config``, initialised from ``config.seed`` (output biases and pseudo-inputs from the data)."""
    torch.manual_seed(config.seed)  # nn.Linear initialisers draw from the global RNG
    model = build_model(config.model, dataset.data_dim, dataset.likelihood)
    train_images = dataset.splits["train"].images
    if isinstance(model.generative, BernoulliLayer):
        model.generative.init_output_bias(train_images.mean(0))
    if isinstance(model.prior, VampPrior):  # pseudo-inputs start at random training images
        model.prior.init_pseudo_inputs(train_images[torch.randint(len(train_images), (config.model.prior_size,))])
    return model


def build_run(config: ExperimentConfig, dataset: Dataset) -> tuple[HelmholtzMachine, torch.optim.Adam]:
    """The initial model and Adam with theta and phi as separate groups.

    Adam's betas and epsilon are the config's (Burda et al. 2015: 0.9, 0.999, 1e-4); its learning
    rate is the schedule's first, and training sets each epoch's (:mod:`vaelab.schedules`).
    Adam's fused kernel (one pass over each parameter instead of about ten) is used where this
    PyTorch has it for the parameters' device; it is Adam all the same.
    """
    model = initial_model(config, dataset)
    groups = [
        {"params": model.generative_parameters(), "name": "theta"},
        {"params": model.recognition_parameters(), "name": "phi"},
    ]
    train = config.train
    adam = {"lr": train.learning_rate, "betas": (train.adam_beta1, train.adam_beta2), "eps": train.adam_eps}
    try:
        optimizer = torch.optim.Adam(groups, **adam, fused=True)
    except RuntimeError:  # PyTorch < 2.4 fuses Adam on CUDA only
        optimizer = torch.optim.Adam(groups, **adam)
    return model, optimizer


def load_run(
    run_dir: str | Path, data_dir: str | Path | None = None, device: str = "cpu"
) -> tuple[ExperimentConfig, HelmholtzMachine, Dataset, dict[str, Any]]:
    """The config, the model at its last checkpoint (on ``device``), the dataset and the checkpoint of ``run_dir``.

    Takes no lock: the files it reads are replaced atomically, so it reads a consistent snapshot
    even while the run trains.

    Raises:
        RunError: not a run; a config or checkpoint that is unreadable, of another shape, or
            whose model does not fit the config; a parameter holding NaN or infinity (refused
            before any evaluation, naming the tensor).
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).exists():
        raise RunError(f"{run_dir}: not a vaelab run directory (no {CONFIG_FILE})")
    config = ExperimentConfig.load(run_dir / CONFIG_FILE)
    checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE)
    dataset = load_dataset(config.data.dataset, data_dir)
    model = initial_model(config, dataset)
    load_model_state(model, checkpoint["model"], run_dir / CHECKPOINT_FILE)
    model.to(resolve_device(device))
    model.eval()
    return config, model, dataset, checkpoint
