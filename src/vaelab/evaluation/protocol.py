"""The evaluation protocol: seeded random streams, split tags, and which images and bits are evaluated.

Every evaluation draws from a generator seeded by a tuple of integers (seed, epoch, split tag, ...),
so it never perturbs the training stream and a resumed run replays the uninterrupted one exactly.
Grey data under a Bernoulli likelihood is evaluated on bits binarized once with the
``binarization_seed``, and discrete data under a density (a dequantizing likelihood, e.g.
'gaussian') on one dequantization drawn with that seed, so every run and every algorithm is
measured on the same points.
"""

from __future__ import annotations

import numpy as np
import torch

from vaelab.config import SPLITS, ExperimentConfig
from vaelab.data import Dataset, binarize, to_unit_interval
from vaelab.data.levels import dequantize
from vaelab.errors import RunError
from vaelab.likelihoods import LikelihoodEntry, get_likelihood

SPLIT_TAGS = {split: tag for tag, split in enumerate(SPLITS)}  # entropy of a split's random streams
TRAIN_SUBSET_TAG = 99  # entropy of the fixed train subset of ``eval_train_size`` images
TRAINING_SUBSET_TAG = 98  # entropy of the fixed subset of ``train_size`` training images


def seeded_generator(*entropy: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded from a tuple of integers (e.g. seed, epoch, split tag)."""
    seed = int(np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator(device).manual_seed(seed)


def model_likelihood(config: ExperimentConfig, dataset: Dataset) -> str:
    """The likelihood p(x | z) the model uses: the config's, or the dataset's where the config says 'auto'."""
    return dataset.likelihood if config.model.likelihood == "auto" else config.model.likelihood


def _family(config: ExperimentConfig, dataset: Dataset) -> LikelihoodEntry:
    return get_likelihood(model_likelihood(config, dataset))


def uses_binarization(config: ExperimentConfig, dataset: Dataset) -> bool:
    """True when grey pixels are turned into Bernoulli targets (a binarizing likelihood, grey data)."""
    return _family(config, dataset).binarizes and not dataset.is_binary


def uses_dequantization(config: ExperimentConfig, dataset: Dataset) -> bool:
    """True when discrete data are seen as y = (v + u) / levels, u ~ U[0, 1) (a dequantizing likelihood)."""
    return _family(config, dataset).dequantizes and dataset.levels is not None


def epoch_draw(config: ExperimentConfig, dataset: Dataset) -> str | None:
    """What training draws afresh over its images every epoch, before their order: 'binarize'
    (dynamic binarization), 'dequantize' (a fresh u per sub-pixel) or None."""
    if uses_binarization(config, dataset) and config.data.binarization == "dynamic":
        return "binarize"
    return "dequantize" if uses_dequantization(config, dataset) else None


def evaluation_images(config: ExperimentConfig, dataset: Dataset, split: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The images float32 ``[N, D]`` in [0, 1] (and labels ``[N]`` or None) on which L_k of ``split`` is measured.

    Grey data under a Bernoulli likelihood is binarized once with ``binarization_seed``
    (``threshold`` and ``none`` keep their own fixed transform), so every run and every algorithm
    is measured on the same bits; discrete data under a dequantizing likelihood are dequantized
    once with a generator seeded alike. Other discrete data are v / (levels - 1). The train split
    is subsampled to ``eval_train_size`` images.
    """
    if split not in dataset.splits:
        raise RunError(f"dataset {dataset.name} has no '{split}' split (it has {', '.join(dataset.splits)})")
    images, labels = dataset.splits[split].images, dataset.splits[split].labels
    generator = seeded_generator(config.data.binarization_seed, SPLIT_TAGS[split])
    if uses_dequantization(config, dataset):
        images = dequantize(images, dataset.levels, generator)
    else:
        images = to_unit_interval(images, dataset.levels)
    if uses_binarization(config, dataset):
        mode = "static" if config.data.binarization == "dynamic" else config.data.binarization
        images = binarize(images, mode, generator)
    subset = config.train.eval_train_size
    if split == "train" and subset is not None and subset < images.shape[0]:
        keep = torch.randperm(images.shape[0], generator=seeded_generator(config.data.binarization_seed, TRAIN_SUBSET_TAG))[:subset]
        images, labels = images[keep], None if labels is None else labels[keep]
    return images, labels


def training_images(config: ExperimentConfig, dataset: Dataset) -> torch.Tensor:
    """The training split ``[N, D]`` before any per-epoch draw (:func:`epoch_draw`): all of it, or the
    fixed subset of ``train_size`` images (the same for every seed and run). As stored (uint8
    levels or float32; :func:`vaelab.data.to_unit_interval` gives what a model sees), or
    float32 bits after a fixed binarization ('static', 'threshold'; 'none' keeps it as stored)."""
    images = dataset.splits["train"].images
    subset = config.train.train_size
    if subset is not None and subset < images.shape[0]:
        images = images[torch.randperm(images.shape[0], generator=seeded_generator(config.data.binarization_seed, TRAINING_SUBSET_TAG))[:subset]]
    if uses_binarization(config, dataset) and config.data.binarization not in ("dynamic", "none"):
        grey = to_unit_interval(images, dataset.levels)
        images = binarize(grey, config.data.binarization, seeded_generator(config.data.binarization_seed, SPLIT_TAGS["train"]))
    return images
