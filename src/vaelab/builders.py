"""Model and optimiser construction: the one place that turns a config, or a saved run, into networks.

``models/`` knows no config; training, evaluation and the studies build through here, so a
resumed or evaluated run rebuilds exactly the model it was trained with.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import sys
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaelab.config import LADDERS, DataConfig, ExperimentConfig, ModelConfig
from vaelab.data import Dataset, load_dataset
from vaelab.distributed import resolve_device
from vaelab.errors import ConfigError, DataError, RunError
from vaelab.likelihoods import get_likelihood
from vaelab.likelihoods.family import LikelihoodFamily
from vaelab.likelihoods.gaussian import Gaussian
from vaelab.models import (
    BernoulliLayer,
    DiagonalGaussianLayer,
    HelmholtzMachine,
    VampPrior,
)
from vaelab.models.conv import ConvDecoder, ConvEncoder
from vaelab.models.conv_ladder import ConvLadder, ConvLadderDecoder
from vaelab.models.ladder import LadderVAE, MLPLadder
from vaelab.models.layers import LikelihoodLayer, StochasticLayer
from vaelab.models.networks import NetworkLayer, call_user_code, evaluation_mode
from vaelab.models.priors import build_prior
from vaelab.posteriors import get_posterior
from vaelab.posteriors.flow import FlowRecognition
from vaelab.runio import (
    BEST_CHECKPOINT_KEYS,
    BEST_FILE,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    ENVIRONMENT_FILE,
    MODEL_CHECKPOINT_KEYS,
    load_checkpoint,
    load_model_state,
)

LATENT_LAYERS = {"gaussian": DiagonalGaussianLayer, "bernoulli": BernoulliLayer}


def likelihood_family(config: ModelConfig, likelihood: str, data_shape: tuple[int, ...], levels: int | None) -> LikelihoodFamily:
    """The family ``likelihood`` (a registry name) over data of ``data_shape`` with ``levels``
    values per sub-pixel, with ``config``'s options (mixture components, Gaussian means)."""
    family = get_likelihood(likelihood).family()
    return family(data_shape, levels, components=config.mixture_components, squash_mean=config.gaussian_mean == "sigmoid")


def build_model(
    config: ModelConfig, data_dim: int, likelihood: str, data_shape: tuple[int, ...] | None = None, levels: int | None = None
) -> HelmholtzMachine:
    """The Helmholtz machine of ``config`` for data of ``data_dim`` values, each example of ``data_shape``
    (default ``(data_dim,)``; ``(C, H, W)`` for images) whose sub-pixels take ``levels`` values
    (``Dataset.levels``; None: continuous data).

    ``likelihood`` is the dataset's (a name of :data:`vaelab.likelihoods.LIKELIHOODS`);
    ``config.likelihood`` overrides it unless it is 'auto'. x <-> z_1 networks are MLPs with
    ``config.hidden`` units (for Bernoulli pixels :class:`BernoulliLayer`, whose fused and folded
    paths read its logits; else a :class:`LikelihoodLayer` giving the family's heads), the conv
    networks of :mod:`vaelab.models.conv`, or the user's factories (:func:`network_factory`);
    z_l <-> z_{l+1} networks are MLPs with ``config.upper_hidden`` units.
    """
    if config.likelihood != "auto":
        likelihood = config.likelihood
    data_shape = tuple(data_shape or (data_dim,))
    family = likelihood_family(config, likelihood, data_shape, levels)
    dims, latent_layer = config.latent_dims, LATENT_LAYERS[config.latent]
    if config.architecture in LADDERS:
        return _ladder(config, data_dim, data_shape, family, likelihood)
    if config.architecture == "mlp" and config.encoder is None:
        generative = _mlp_decoder(config, dims[0], data_dim, family, likelihood)
        recognition = latent_layer(data_dim, dims[0], config.hidden, config.activation)
    else:
        generative, recognition = _network_layers(config, data_shape, dims[0], family)
    upper_generative = [latent_layer(upper, lower, config.upper_hidden, config.activation) for lower, upper in zip(dims, dims[1:])]
    upper_recognition = [latent_layer(lower, upper, config.upper_hidden, config.activation) for lower, upper in zip(dims, dims[1:])]
    entry = get_posterior(config.posterior)
    if entry.implementation is not None:  # a flow: its context is the encoder's last hidden layer
        flow = entry.flow()(dims[0], recognition.trunk.out_features, config.flow_steps)
        recognition = FlowRecognition(recognition, flow)
    prior = build_prior(config.prior, dims[-1], config.prior_size, data_dim, recognition)
    return HelmholtzMachine(prior, generative, recognition, dims, upper_generative, upper_recognition, data_shape)


def _mlp_decoder(config: ModelConfig, latent_dim: int, data_dim: int, family: LikelihoodFamily, likelihood: str) -> StochasticLayer:
    """p(x | z_1) as an MLP of ``config.hidden``: :class:`BernoulliLayer` for Bernoulli pixels, else a :class:`LikelihoodLayer`."""
    if likelihood == "bernoulli":
        return BernoulliLayer(latent_dim, data_dim, config.hidden, config.activation)
    return LikelihoodLayer(latent_dim, family, config.hidden, config.activation)


def _ladder(config: ModelConfig, data_dim: int, data_shape: tuple[int, ...], family: LikelihoodFamily, likelihood: str) -> LadderVAE:
    """The ladder VAE of ``config`` (:mod:`vaelab.models.ladder`): MLPs, or convolutions with spatial latents."""
    if config.architecture == "ladder":
        networks = MLPLadder(data_dim, config.latent_dims, config.hidden, config.upper_hidden, config.activation, config.ladder_merge)
        return LadderVAE(networks, _mlp_decoder(config, config.latent_dims[0], data_dim, family, likelihood), data_shape)
    if len(data_shape) != 3:
        raise ConfigError(f"--architecture conv-ladder needs image data [C, H, W] (this data is vectors of {data_shape[0]})")
    networks = ConvLadder(data_shape, config.latent_dims, config.ladder_merge)
    first = networks.latent_shapes[0]
    decoder = NetworkLayer(ConvLadderDecoder(data_shape, first, family.heads), (math.prod(first),), (family.heads, *data_shape), family, "the conv ladder's decoder")
    return LadderVAE(networks, decoder, data_shape)


def _network_layers(config: ModelConfig, data_shape: tuple[int, ...], latent_dim: int, family: LikelihoodFamily) -> tuple[NetworkLayer, NetworkLayer]:
    """p(x | z_1) and q(z_1 | x) around the conv networks or the user's factories."""
    if config.encoder is None:  # architecture conv
        if len(data_shape) != 3:
            raise ConfigError(f"--architecture conv needs image data [C, H, W] (this data is vectors of {data_shape[0]})")
        encoder, decoder = ConvEncoder(data_shape, latent_dim), ConvDecoder(data_shape, latent_dim, family.heads)
        names = ("the conv encoder", "the conv decoder")
    else:
        names = (f"--encoder {config.encoder}", f"--decoder {config.decoder}")
        built = "failed to build its network"
        encoder = call_user_code(names[0], built, network_factory(config.encoder, "--encoder"), data_shape=data_shape, latent_dim=latent_dim)
        factory = network_factory(config.decoder, "--decoder")
        heads = {"heads": family.heads} if _takes_heads(factory) else {}
        decoder = call_user_code(names[1], built, factory, data_shape=data_shape, latent_dim=latent_dim, **heads)
        for network, name in zip((encoder, decoder), names):
            if not isinstance(network, nn.Module):
                raise ConfigError(f"{name}: returned a {type(network).__name__}, not a torch.nn.Module")
    latent = Gaussian((latent_dim,), None, squash_mean=False)  # q(z_1 | x): mean, then raw scale
    return (
        NetworkLayer(decoder, (latent_dim,), (family.heads, *data_shape), family, names[1]),
        NetworkLayer(encoder, data_shape, (2 * latent_dim,), latent, names[0]),
    )


def _takes_heads(factory: Any) -> bool:
    """Whether a decoder factory takes ``heads`` (by name or ``**kwargs``): it is then told how many
    numbers per sub-pixel the likelihood needs; older factories are called as before."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a callable without a signature (some builtins): call it as before
        return False
    return any(p.name == "heads" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def network_factory(path: str, flag: str = "--encoder") -> Any:
    """The callable named by ``MODULE:FACTORY`` (MODULE a module on the Python path or a ``.py`` file).

    Raises ConfigError (one line, naming the path) when it cannot be imported (whatever its code
    raises, :func:`~vaelab.models.networks.call_user_code`) or is not callable.
    """
    module_name, _, attribute = path.rpartition(":")
    importer = (lambda: _module_from_file(Path(module_name))) if module_name.endswith(".py") else (lambda: importlib.import_module(module_name))
    module = call_user_code(f"{flag} {path}", f"cannot import {module_name}", importer)
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigError(f"{flag} {path}: {module_name} has no callable {attribute!r}")
    return factory


def _module_from_file(path: Path) -> Any:
    """Import a ``.py`` file once, as a module named after its absolute path."""
    name = "vaelab_user_" + hashlib.sha256(str(path.absolute()).encode()).hexdigest()[:16]
    if name in sys.modules:
        return sys.modules[name]
    if not path.is_file():
        raise FileNotFoundError(f"no such file {path}")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def check_networks(model: HelmholtzMachine, images: torch.Tensor) -> None:
    """Run q(z_1 | x) and p(x | z_1) once on ``images`` ``[B, D]``, in eval mode: a network that fails,
    returns another dtype or shape, or non-finite numbers is answered here, in one line naming it,
    before any training (every later call is checked too, :class:`~vaelab.models.networks.NetworkLayer`)."""
    for layer, inputs in ((model.recognition, images), (model.generative, torch.zeros(images.shape[0], model.latent_dims[0]))):
        if not isinstance(layer, NetworkLayer):
            continue
        with torch.no_grad(), evaluation_mode(model):  # the probe must not move BatchNorm's running statistics
            outputs = layer.parameters_of(inputs)  # a failure, a wrong dtype or shape: one line naming the network
        if not torch.isfinite(outputs).all():
            raise ConfigError(f"{layer.name}: returned non-finite values (NaN or inf) on a batch of {inputs.shape[0]}")


def initial_model(config: ExperimentConfig, dataset: Dataset) -> HelmholtzMachine:
    """The model of ``config``, initialised from ``config.seed`` (output biases and pseudo-inputs from the data)."""
    torch.manual_seed(config.seed)  # nn.Linear initialisers (and the user's factories) draw from the global RNG
    model = build_model(config.model, dataset.data_dim, dataset.likelihood, dataset.data_shape, dataset.levels)
    train_images = dataset.unit_images("train")
    # after every initialiser has drawn: the probe draws nothing, so it cannot shift them
    check_networks(model, train_images[:2])
    if isinstance(model.generative, (BernoulliLayer, LikelihoodLayer)):  # the MLP decoders: Burda's output bias
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


def dataset_of(config: DataConfig, data_dir: str | Path | None = None) -> Dataset:
    """The dataset of ``config``: by name from the data folder, or by path (held-out test split as configured)."""
    return load_dataset(
        config.dataset, data_dir, test_fraction=config.test_fraction, split_seed=config.split_seed, valid_fraction=config.valid_fraction,
        bits=config.bits,
    )


def check_data_unchanged(run_dir: str | Path, dataset: Dataset) -> None:
    """Refuse (DataError, one line) when data given by path differs from what ``run_dir`` was trained on.

    environment.json records path -> sha256 of what was read; a built-in dataset's files are
    checked against fixed checksums on every load instead, so only paths are compared here.
    """
    try:
        recorded = json.loads((Path(run_dir) / ENVIRONMENT_FILE).read_text()).get("data_files_sha256", {})
    except (OSError, ValueError, AttributeError):
        return  # an unreadable environment.json is the run-directory checks' to report
    for path, sha256 in dataset.files.items():
        if path == dataset.name and path in recorded and recorded[path] != sha256:
            raise DataError(f"{path}: the data changed since {run_dir} was trained on it (sha256 {sha256[:12]}..., recorded {recorded[path][:12]}...)")


@dataclass
class LoadedRun:
    """A trained run read back: its config, the model at its chosen checkpoint (in eval mode), the
    dataset and the checkpoint (``best.pt``'s holds ``selected_on``). Unpacks as ``config, model, dataset, checkpoint``."""

    config: ExperimentConfig
    model: HelmholtzMachine
    dataset: Dataset
    checkpoint: dict[str, Any]
    run_dir: Path

    def __iter__(self) -> Iterator[Any]:
        return iter((self.config, self.model, self.dataset, self.checkpoint))

    def log_likelihood_bound(self, x: torch.Tensor, k: int = 1000, seed: int = 0, batch_size: int = 100) -> torch.Tensor:
        """One-draw L_k ``[B]`` in nats for new x ``[B, *data_shape]`` or ``[B, D]`` with values in [0, 1],
        scored as given (binarize grey x yourself for a Bernoulli model to get a normalised bound)."""
        from vaelab.estimators.bounds import (
            evaluate_bound,  # estimation sits above construction
        )

        images = x.reshape(x.shape[0], -1).float()
        return evaluate_bound(self.model, images, k, torch.Generator().manual_seed(seed), batch_size)


def require_trust(config: ExperimentConfig, source: str | Path, trust_code: bool, own: Collection[str] = ()) -> None:
    """Refuse (ConfigError, one line naming the code) to build the model of a ``config`` read from the
    file ``source`` when it names user networks, whose modules building it would import and run,
    unless ``trust_code``: a run directory or config someone sent you must not run their code
    unasked (as Hugging Face's ``trust_remote_code``). Built-in networks, and those of ``own``
    ('encoder', 'decoder': the user named them, not the file), need no consent."""
    modules = sorted({
        path.rpartition(":")[0] for field, path in (("encoder", config.model.encoder), ("decoder", config.model.decoder)) if path is not None and field not in own
    })
    if modules and not trust_code:
        raise ConfigError(
            f"{source}: names network code that would run ({', '.join(modules)}); "
            "pass --trust-code if you trust it (trust_code=True in Python)"
        )


def checkpoint_file(run_dir: Path, config: ExperimentConfig, which: str | None = None) -> Path:
    """The checkpoint ``which`` ('best', 'last'; None: the run's selected one, best where it was
    trained with ``select_on``, else last) of the run in ``run_dir`` trained with ``config``.

    Raises:
        RunError: 'best' of a run trained without ``select_on``, or before its first evaluation.
    """
    which = which or ("best" if config.train.select_on else "last")
    if which == "last":
        return run_dir / CHECKPOINT_FILE
    if not config.train.select_on:
        raise RunError(f"{run_dir}: was trained without --select-on, so it has no best checkpoint ({BEST_FILE}); use --checkpoint last")
    if not (run_dir / BEST_FILE).exists():  # killed before its first evaluation
        raise RunError(f"{run_dir / BEST_FILE}: no best checkpoint yet (the {config.train.select_on} split was never evaluated); use --checkpoint last")
    return run_dir / BEST_FILE


def load_run(
    run_dir: str | Path, data_dir: str | Path | None = None, device: str = "cpu", trust_code: bool = False, checkpoint: str | None = None
) -> LoadedRun:
    """The config, the model at a checkpoint (on ``device``), the dataset and the checkpoint of ``run_dir``.

    ``checkpoint``: 'best' (``best.pt``, the best on the validation split), 'last', or None for
    the run's selected one (:func:`checkpoint_file`).

    A run of user networks imports and runs the code its config names: only with ``trust_code``
    (:func:`require_trust`).

    Takes no lock: the files it reads are replaced atomically, so it reads a consistent snapshot
    even while the run trains.

    Raises:
        ConfigError: the config names user networks and ``trust_code`` is not given.
        RunError: not a run; a config or checkpoint that is unreadable, of another shape, or
            whose model does not fit the config; a parameter holding NaN or infinity (refused
            before any evaluation, naming the tensor); 'best' of a run trained without ``select_on``.
        DataError: data given by path changed since the run was trained on it.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).exists():
        raise RunError(f"{run_dir}: not a vaelab run directory (no {CONFIG_FILE})")
    config = ExperimentConfig.load(run_dir / CONFIG_FILE)
    require_trust(config, run_dir / CONFIG_FILE, trust_code)
    path = checkpoint_file(run_dir, config, checkpoint)
    state = load_checkpoint(path, BEST_CHECKPOINT_KEYS if path.name == BEST_FILE else MODEL_CHECKPOINT_KEYS)
    dataset = dataset_of(config.data, data_dir)
    check_data_unchanged(run_dir, dataset)
    model = initial_model(config, dataset)
    load_model_state(model, state["model"], path)
    model.to(resolve_device(device))
    model.eval()
    return LoadedRun(config, model, dataset, state, run_dir)
