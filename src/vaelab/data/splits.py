"""What every loaded dataset is, named or given by path: its splits and what they hold."""

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import torch

from vaelab.errors import ConfigError, DataError

NUM_CLASSES = 10  # every labelled dataset here (digits, MNIST, Fashion-MNIST) has ten classes
MIN_SPLIT_IMAGES = 2  # a standard error needs two values
# Entropy added to ``split_seed`` for the valid split's draw: the test split's draw (older) takes the
# seed alone, so one seed draws the two held-out sets independently.
VALID_STREAM = 1


@dataclass(frozen=True)
class Split:
    """One split of a dataset.

    images: [N, D], each image flattened channels first, row-major (D = channels * height * width):
        for discrete data (``Dataset.levels`` not None) uint8 levels v = 0 .. levels - 1, for
        continuous data float32 in [0, 1]. What a model sees of them is
        :func:`to_unit_interval` (v / (levels - 1)) or, under a dequantizing
        likelihood, :func:`vaelab.data.levels.dequantize`.
    labels: int64 [N] class indices, or None where the dataset has no labels.
    """

    images: torch.Tensor
    labels: torch.Tensor | None


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: its splits ('train', 'test', and 'valid' where it has one) and what they hold.

    likelihood: the observation model the data is meant for (a :data:`vaelab.likelihoods.LIKELIHOODS` name).
    is_binary: True when every pixel is already at its lowest or highest value (0 or 1 in [0, 1]).
    files: absolute path -> sha256 of every file read ({} for the embedded digits); for a
        dataset given by path (:mod:`vaelab.data.user`) one entry, the path and the sha256 of
        what was read from it.
    channels: colour channels C; a row of a split holds C planes of height x width, channels first.
    flat: True for vector data ``[N, D]`` (its ``image_shape`` only says how to draw it).
    num_labels: classes of a user dataset (None: 10 where labelled, as every built-in one).
    levels: the values a sub-pixel takes, v = 0 .. levels - 1 (256 for 8-bit images, 2 for binary
        ones, 17 for the 8x8 digits), or None for continuous data; after ``--bits N``, 2^N.
    """

    name: str
    splits: dict[str, Split]
    image_shape: tuple[int, int]
    likelihood: str
    is_binary: bool
    files: dict[str, str]
    channels: int = 1
    flat: bool = False
    num_labels: int | None = None
    levels: int | None = None

    @property
    def data_dim(self) -> int:
        """Values per image, channels * height * width."""
        height, width = self.image_shape
        return self.channels * height * width

    @property
    def data_shape(self) -> tuple[int, ...]:
        """The shape networks see one example in: ``(C, H, W)`` for images, ``(D,)`` for vectors."""
        return (self.data_dim,) if self.flat else (self.channels, *self.image_shape)

    @property
    def num_classes(self) -> int | None:
        """The number of classes where the dataset is labelled, else None."""
        if self.splits["train"].labels is None:
            return None
        return self.num_labels or NUM_CLASSES

    def unit_images(self, split: str) -> torch.Tensor:
        """The images of ``split`` as a model sees them before any draw: float32 ``[N, D]`` in [0, 1]."""
        return to_unit_interval(self.splits[split].images, self.levels)


def to_unit_interval(images: torch.Tensor, levels: int | None) -> torch.Tensor:
    """What a model sees of stored images ``[N, D]``: uint8 levels v -> float32 v / (levels - 1);
    float images (continuous data, or already transformed) are returned as they are."""
    if images.is_floating_point():
        return images
    return images.to(torch.float32) / (levels - 1)


def refuse_valid_fraction(valid_fraction: float, split_names: Collection[str], where: str) -> None:
    """ConfigError (one line) for a ``valid_fraction`` of data whose splits ``split_names`` hold their own valid split."""
    if valid_fraction and "valid" in split_names:
        raise ConfigError(f"{where}: has its own valid split; leave --valid-fraction at 0")


def hold_out(splits: dict[str, Split], into: str, fraction: float, seed: int, where: str) -> dict[str, Split]:
    """Move a seeded ``fraction`` of the train split (at least two images) into a new split ``into``
    ('test' or 'valid'); the rest stays train, in its order. Disjoint by construction: one
    permutation of the train images, its first ``round(fraction * N)`` held out."""
    train = splits["train"]
    count = len(train.images)
    held = max(MIN_SPLIT_IMAGES, round(fraction * count))
    if not 0 < fraction < 1 or count - held < MIN_SPLIT_IMAGES:
        raise DataError(
            f"{where}: has no {into} split, and holding out {fraction} of {count} train images (at least {MIN_SPLIT_IMAGES})"
            f" leaves fewer than {MIN_SPLIT_IMAGES} to train on"
        )
    rng = np.random.default_rng(seed if into == "test" else (seed, VALID_STREAM))
    order = torch.from_numpy(rng.permutation(count))
    chosen, rest = order[:held].sort().values, order[held:].sort().values
    pick = lambda index: Split(train.images[index], None if train.labels is None else train.labels[index])  # noqa: E731
    return {**splits, "train": pick(rest), into: pick(chosen)}
