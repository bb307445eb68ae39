"""Checks of a training config against its dataset and this machine, before anything is allocated or written.

Every option is validated before the first epoch: an evaluation split the dataset lacks would
otherwise fail after the first epoch's training (and on every resume); a size such as
``--hidden 1000000000`` would otherwise reach the allocator (an 8 GB request on a shared machine
is really made) and end in its traceback; an unknown dataset would otherwise leave an empty run directory.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from vaelab.config import ExperimentConfig
from vaelab.data.datasets import REGISTRY, check_dataset_name
from vaelab.data.levels import levels_after_bits
from vaelab.data.splits import refuse_valid_fraction
from vaelab.errors import ConfigError
from vaelab.estimators.bounds import DECODER_NUMBERS_AT_ONCE
from vaelab.likelihoods import get_likelihood
from vaelab.machine import available_memory
from vaelab.objectives.registry import check_config

if TYPE_CHECKING:  # annotation only
    from vaelab.data import Dataset

FLOAT_BYTES = 4
# A parameter is held four times while training: its value, its gradient and Adam's two moments.
COPIES_PER_PARAMETER = 4
# Activations alive at once in a forward and backward pass, per hidden unit of every layer: the
# pre-activation, the activation and their gradients.
COPIES_PER_ACTIVATION = 4
# Latent vectors per AIS chain during an HMC step: the position, gradients of log q and log p(x, z)
# of the current state and of the proposal, and the momentum.
COPIES_PER_LATENT = 7


def check_experiment(config: ExperimentConfig) -> None:
    """Raise ConfigError or DataError (one line) for a config that cannot train: one its algorithm
    cannot train (the objective registry's rules), or one that cannot run here
    (:func:`check_before_training`). The one check of a config, made by
    :func:`vaelab.training.train` and :func:`vaelab.studies.compare.compare` before anything is written."""
    check_config(config)
    check_before_training(config)


def check_before_training(config: ExperimentConfig) -> None:
    """Raise ConfigError or DataError (one line) for a config that cannot run here: a dataset that is
    neither a known name nor an existing path, an evaluation split the dataset lacks (the valid
    split of ``--valid-fraction`` counted), a ``--valid-fraction`` for a dataset with its own valid
    split, ``--bits`` on data that are not 8-bit, a likelihood that cannot score the data
    (:func:`check_likelihood`), or sizes needing more memory than is available. (Seeds beyond
    2^63 - 1 are the config's to refuse.) Data given by path are checked once read (:func:`check_loaded_data`)."""
    name = config.data.dataset
    check_dataset_name(name)
    spec = REGISTRY.get(name)
    if spec is None:  # data given by path: its splits, levels and size are known once it is read
        return
    refuse_valid_fraction(config.data.valid_fraction, spec.split_sizes, f"dataset {name}")
    check_splits(config, name, (*spec.split_sizes, *(("valid",) if config.data.valid_fraction else ())))
    levels = levels_after_bits(spec.levels, config.data.bits, name)
    check_likelihood(config, name, spec.likelihood, levels)
    data_dim = spec.channels * math.prod(spec.image_shape)
    check_memory(memory_needed(config, data_dim, spec.split_sizes, levels), "this config", "for its parameters and batches", MEMORY_ADVICE)


def check_loaded_data(config: ExperimentConfig, dataset: Dataset) -> None:
    """What :func:`check_before_training` checks of a named dataset, for data given by path, once
    read: its splits, its likelihood and the memory of its size (nothing again for a named dataset)."""
    if config.data.dataset in REGISTRY:
        return
    check_splits(config, dataset.name, tuple(dataset.splits))
    check_likelihood(config, dataset.name, dataset.likelihood, dataset.levels)
    sizes = {split: len(values.images) for split, values in dataset.splits.items()}
    check_memory(memory_needed(config, dataset.data_dim, sizes, dataset.levels), "this config", "for its parameters and batches", MEMORY_ADVICE)


MEMORY_ADVICE = "reduce --hidden, --upper-hidden, --latent-dim, --batch-size, --num-samples or --eval-k"


def check_likelihood(config: ExperimentConfig, name: str, data_likelihood: str, levels: int | None) -> None:
    """Raise ConfigError (one line) where the model's likelihood cannot score the data ``name``
    (whose own likelihood is ``data_likelihood``, sub-pixels of ``levels`` values): a discrete
    family other than Bernoulli (which binarizes) on continuous data (``levels`` None)."""
    family = data_likelihood if config.model.likelihood == "auto" else config.model.likelihood
    entry = get_likelihood(family)
    if entry.discrete and not entry.binarizes and levels is None:
        raise ConfigError(f"{family} needs images with integer levels (8-bit or binary); {name} is continuous")


def decoder_heads(config: ExperimentConfig, levels: int | None) -> int:
    """Numbers per sub-pixel the x decoder gives, at least 2 (today's estimate): the family's heads
    with ``levels`` (unknown, None: the fewest, 2), 4K for the mixture (RGB's)."""
    model = config.model
    if model.likelihood == "auto":  # the dataset's: bernoulli, gaussian or (cifar10) discretized-logistic
        return 2
    family = get_likelihood(model.likelihood).family()((3, 1, 1), levels or 2, components=model.mixture_components)
    return max(2, family.heads)


def check_memory(needed: int, what: str, purpose: str, advice: str) -> None:
    """Raise ConfigError, in one line, where ``needed`` bytes are more than this machine has available:
    '``what`` needs about N GiB of memory ``purpose``, more than the M GiB available; ``advice``'."""
    available = available_memory()
    if available is not None and needed > available:
        raise ConfigError(f"{what} needs about {_gib(needed)} of memory {purpose}, more than the {_gib(available)} available; {advice}")


def check_splits(config: ExperimentConfig, dataset: str, splits: tuple[str, ...]) -> None:
    """Raise ConfigError (one line) when ``config`` evaluates a split that ``dataset`` (which has
    ``splits``) lacks; a missing valid split names ``--valid-fraction``, which makes one."""
    missing = [split for split in config.train.eval_splits if split not in splits]
    if "valid" in missing:
        raise ConfigError(
            f"dataset {dataset} has no valid split (it has {', '.join(splits)}); pass --valid-fraction F "
            "to hold out a fraction F of its train images (drawn with --split-seed) as one"
        )
    if missing:
        raise ConfigError(f"dataset {dataset} has no {', '.join(missing)} split (it has {', '.join(splits)}); choose --eval-splits among those")


def memory_needed(config: ExperimentConfig, data_dim: int, split_sizes: dict[str, int] | None = None, levels: int | None = None) -> int:
    """A lower estimate, in bytes, of what training ``config`` on ``data_dim``-pixel images holds at once:
    every parameter (with its gradient and Adam's moments) plus the larger of a training batch's
    activations (batch_size x num_samples x groups rows through every layer, kept for the backward
    pass) and an evaluation batch's (eval_batch_size x eval_k rows, one layer's input and output at
    a time; the decoder's heads beyond two for one chunk, at most
    :data:`~vaelab.estimators.bounds.DECODER_NUMBERS_AT_ONCE` numbers). Dense layers only: a width w to w' layer has w w' + w' parameters, in each direction.

    With the dataset's ``split_sizes`` a batch holds no more images than its split (training) or
    the largest evaluated split (evaluation): ``--batch-size 10**9`` on 1,350 images is a batch of 1,350.
    The decoder's output is :func:`decoder_heads` numbers per pixel (``levels`` of them for categorical)."""
    heads = decoder_heads(config, levels)
    parameters, units, _, _ = _network_sizes(config, data_dim, heads)
    widest = _network_sizes(config, data_dim)[3]  # of every layer but the decoder's extra heads
    train = config.train
    batch_size, eval_batch_size = train.batch_size, train.eval_batch_size
    if split_sizes:  # a batch is its split's images at most
        batch_size = min(batch_size, split_sizes.get("train", batch_size), train.train_size or batch_size)
        eval_batch_size = min(eval_batch_size, max((split_sizes.get(split, eval_batch_size) for split in train.eval_splits), default=eval_batch_size))
    training = COPIES_PER_ACTIVATION * batch_size * train.num_samples * train.groups * units
    rows = eval_batch_size * train.eval_k
    # no gradients: a layer's input and output at once; a decoder's heads beyond two (categorical's
    # levels) only for one chunk's DECODER_NUMBERS_AT_ONCE outputs, as the bound is computed
    evaluation = 2 * (rows * widest + min(rows * max(0, heads - 2) * data_dim, DECODER_NUMBERS_AT_ONCE))
    return FLOAT_BYTES * (COPIES_PER_PARAMETER * parameters + max(training, evaluation))


def _network_sizes(config: ExperimentConfig, data_dim: int, heads: int = 2) -> tuple[int, int, int, int]:
    """(parameters, units of both directions, units of the generative direction, the widest layer) of
    ``config``'s dense networks on ``data_dim``-pixel images whose decoder gives ``heads`` numbers per
    pixel: a width w to w' layer has w w' + w' parameters."""
    model = config.model
    stacks = [(data_dim, model.hidden, model.latent_dims[0], heads)]
    stacks += [(lower, model.upper_hidden, upper, 2) for lower, upper in zip(model.latent_dims, model.latent_dims[1:])]
    parameters, units, generative_units, widest = 0, 0, 0, 0
    for bottom, hidden, top, outputs in stacks:
        for widths in ((bottom, *hidden, 2 * top), (top, *hidden[::-1], outputs * bottom)):  # recognition, generative
            parameters += sum(a * b + b for a, b in zip(widths, widths[1:]))
            units += sum(widths)
            widest = max(widest, *widths)
        generative_units += sum(widths)  # the last of the pair
    parameters += (config.model.prior_components or 0) * data_dim  # at most: vamp pseudo-inputs
    return parameters, units, generative_units, widest


def ais_memory_needed(config: ExperimentConfig, data_dim: int, rows: int, simulated_images: int = 0) -> int:
    """A lower estimate, in bytes, of what AIS or BDMC (:mod:`vaelab.estimators.ais`) on ``config``'s
    model holds at once: its parameters, ``rows`` chains (chains x images per batch) each taking an
    HMC step through the generative network with a backward (every unit's activation kept, as in
    training, plus each chain's position, momentum and gradients: ``COPIES_PER_LATENT`` latent
    vectors), and BDMC's ``simulated_images`` images with their z."""
    parameters, _, generative_units, _ = _network_sizes(config, data_dim)
    latent = sum(config.model.latent_dims)
    chains = rows * (COPIES_PER_ACTIVATION * generative_units + COPIES_PER_LATENT * latent)
    return FLOAT_BYTES * (parameters + chains + simulated_images * (data_dim + latent))


def _gib(size: int) -> str:
    return f"{size / 2**30:,.1f} GiB"
