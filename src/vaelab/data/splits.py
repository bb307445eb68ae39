"""What every loaded dataset is, named or given by path: its splits and what they hold."""

from dataclasses import dataclass

import torch

NUM_CLASSES = 10  # every labelled dataset here (digits, MNIST, Fashion-MNIST) has ten classes


@dataclass(frozen=True)
class Split:
    """One split of a dataset.

    images: float32 [N, D] with values in [0, 1], each image flattened row-major (D = height * width).
    labels: int64 [N] class indices, or None where the dataset has no labels.
    """

    images: torch.Tensor
    labels: torch.Tensor | None


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: its splits ('train', 'test', and 'valid' where it has one) and what they hold.

    likelihood: 'bernoulli' or 'gaussian', the observation model the data is meant for.
    is_binary: True when every pixel is already exactly 0 or 1.
    files: absolute path -> sha256 of every file read ({} for the embedded digits); for a
        dataset given by path (:mod:`vaelab.data.user`) one entry, the path and the sha256 of
        what was read from it.
    channels: colour channels C; a row of a split holds C planes of height x width, channels first.
    flat: True for vector data ``[N, D]`` (its ``image_shape`` only says how to draw it).
    num_labels: classes of a user dataset (None: 10 where labelled, as every built-in one).
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
