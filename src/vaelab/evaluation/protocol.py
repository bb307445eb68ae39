"""The evaluation protocol: seeded random streams, split tags, and which images and bits are evaluated.

Every evaluation draws from a generator seeded by a tuple of integers (seed, epoch, split tag, ...),
so it never perturbs the training stream and a resumed run replays the uninterrupted one exactly.
Grey data under a Bernoulli likelihood is evaluated on bits binarized once with the
``binarization_seed``, so every run and every algorithm is measured on the same bits.
"""

from __future__ import annotations

import numpy as np
import torch

from vaelab.config import SPLITS, ExperimentConfig
from vaelab.data import Dataset, binarize
from vaelab.errors import RunError

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


def uses_binarization(config: ExperimentConfig, dataset: Dataset) -> bool:
    """True when grey pixels are turned into Bernoulli targets (Bernoulli likelihood, grey data)."""
    return model_likelihood(config, dataset) == "bernoulli" and not dataset.is_binary


def evaluation_images(config: ExperimentConfig, dataset: Dataset, split: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The images ``[N, D]`` (and labels ``[N]`` or None) on which L_k of ``split`` is measured.

    Grey data under a Bernoulli likelihood is binarized once with ``binarization_seed``
    (``threshold`` and ``none`` keep their own fixed transform), so every run and every algorithm
    is measured on the same bits. The train split is subsampled to ``eval_train_size`` images.
    """
    if split not in dataset.splits:
        raise RunError(f"dataset {dataset.name} has no '{split}' split (it has {', '.join(dataset.splits)})")
    images, labels = dataset.splits[split].images, dataset.splits[split].labels
    if uses_binarization(config, dataset):
        mode = "static" if config.data.binarization == "dynamic" else config.data.binarization
        images = binarize(images, mode, seeded_generator(config.data.binarization_seed, SPLIT_TAGS[split]))
    subset = config.train.eval_train_size
    if split == "train" and subset is not None and subset < images.shape[0]:
        keep = torch.randperm(images.shape[0], generator=seeded_generator(config.data.binarization_seed, TRAIN_SUBSET_TAG))[:subset]
        images, labels = images[keep], None if labels is None else labels[keep]
    return images, labels


def training_images(config: ExperimentConfig, dataset: Dataset) -> torch.Tensor:
    """The training split as the objective sees it before any per-epoch (dynamic) binarization:
    all of it, or the fixed subset of ``train_size`` images (the same for every seed and run)."""
    images = dataset.splits["train"].images
    subset = config.train.train_size
    if subset is not None and subset < images.shape[0]:
        images = images[torch.randperm(images.shape[0], generator=seeded_generator(config.data.binarization_seed, TRAINING_SUBSET_TAG))[:subset]]
    if uses_binarization(config, dataset) and config.data.binarization != "dynamic":
        images = binarize(images, config.data.binarization, seeded_generator(config.data.binarization_seed, SPLIT_TAGS["train"]))
    return images
