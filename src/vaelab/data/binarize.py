"""Turning grey-level images in [0, 1] into binary ones for Bernoulli likelihoods."""

import torch

from vaelab.config import BINARIZATIONS
from vaelab.data.levels import BLOCK_ROWS
from vaelab.data.splits import to_unit_interval
from vaelab.draws import bernoulli_draw
from vaelab.errors import ConfigError


def binarize(images: torch.Tensor, mode: str, generator: torch.Generator | None) -> torch.Tensor:
    """Binarize images of any shape (e.g. float [N, D]) with values in [0, 1]; same shape and dtype.

    'dynamic' and 'static' both draw each pixel from Bernoulli(grey value) with `generator`; they
    differ in how often the caller calls this: 'dynamic' draws afresh each call, with the fast
    :func:`vaelab.draws.bernoulli_draw` (as training does every epoch, into a buffer of its own); 'static' draws once (e.g. for a test set, with a seeded
    generator), with ``torch.bernoulli``, so its bits are those of earlier vaelab versions.
    'threshold' sets pixels above 0.5 to 1 and the rest to 0; 'none' returns `images` unchanged.
    """
    if mode == "dynamic":
        return bernoulli_draw(images, generator)
    if mode == "static":
        return torch.bernoulli(images, generator=generator)
    if mode == "threshold":
        return (images > 0.5).to(images.dtype)
    if mode == "none":
        return images
    raise ConfigError(f"unknown binarization {mode!r}; choose one of {', '.join(BINARIZATIONS)}")


def binarize_levels(images: torch.Tensor, levels: int | None, generator: torch.Generator, out: torch.Tensor) -> torch.Tensor:
    """'dynamic' binarization of stored images ``[N, D]`` (uint8 levels, or floats in [0, 1]) into
    ``out`` (float32 ``[N, D]``): the very bits of ``binarize(to_unit_interval(images, levels),
    'dynamic', generator)``, without a float copy of the images (a block of rows is converted at a time)."""
    uniforms = torch.rand(images.shape, generator=generator, out=out)  # one call: the uniforms of vaelab.draws.bernoulli_draw
    for start in range(0, len(images), BLOCK_ROWS):
        uniforms[start : start + BLOCK_ROWS].lt_(to_unit_interval(images[start : start + BLOCK_ROWS], levels))
    return uniforms
