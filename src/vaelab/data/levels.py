"""Stored levels and the values in [0, 1] a model sees: conversion, ``--bits`` and dequantization.

Discrete data are stored as uint8 levels v = 0 .. levels - 1 (4 times smaller than float32); a
model sees them as x = v / (levels - 1), or, under a density (a dequantizing likelihood), as
y = (v + u) / levels with u ~ U[0, 1), a point of v's bin [v / levels, (v + 1) / levels).
Continuous data are stored as float32 in [0, 1] and seen as stored
(:func:`vaelab.data.splits.to_unit_interval` converts).
"""

from __future__ import annotations

import dataclasses

import torch

from vaelab.data.splits import Dataset, Split
from vaelab.errors import DataError

EIGHT_BIT_LEVELS = 256
BLOCK_ROWS = 1024  # rows converted at a time by the whole-split draws: small temporaries, whatever N

def levels_after_bits(levels: int | None, bits: int | None, name: str) -> int | None:
    """The levels a model sees of data with ``levels`` under ``--bits`` (None: the data's own);
    DataError (one line) for ``bits`` on data that are not 8-bit."""
    if bits is None:
        return levels
    if levels != EIGHT_BIT_LEVELS:
        has = "continuous values" if levels is None else f"{levels} levels"
        raise DataError(f"--bits needs 8-bit images; {name} has {has}")
    return 2**bits


def reduce_bits(dataset: Dataset, bits: int | None) -> Dataset:
    """``dataset`` with its 8-bit levels reduced to 2^bits, v -> v >> (8 - bits) (``--bits``);
    ``bits=None`` keeps the data's own levels. DataError (one line) for data that are not 8-bit."""
    if levels_after_bits(dataset.levels, bits, dataset.name) == dataset.levels:
        return dataset
    shift = 8 - bits
    splits = {name: Split(split.images >> shift, split.labels) for name, split in dataset.splits.items()}
    # 0 and 255 stay the lowest and highest level: binary data stay binary, and 1 bit makes any data binary
    return dataclasses.replace(dataset, splits=splits, levels=2**bits, is_binary=dataset.is_binary or bits == 1)


def dequantize(images: torch.Tensor, levels: int, generator: torch.Generator, out: torch.Tensor | None = None) -> torch.Tensor:
    """y = (v + u) / levels, u ~ U[0, 1) drawn with ``generator``, of uint8 levels ``images`` [N, D]:
    float32 [N, D] (into ``out`` when given), each y in [v / levels, (v + 1) / levels).

    The uniforms are drawn in one call, in memory order, so a draw depends on the generator alone.
    """
    drawn = torch.rand(images.shape, generator=generator, out=out)
    # float32 can round v + u up to v + 1 (u within half an ulp of v below 1): keep each y below its bin's top
    below_top = torch.nextafter(torch.arange(1, levels + 1, dtype=torch.float32) / levels, torch.tensor(0.0))
    for start in range(0, len(images), BLOCK_ROWS):
        values = images[start : start + BLOCK_ROWS]
        block = drawn[start : start + BLOCK_ROWS].add_(values).div_(levels)
        torch.minimum(block, below_top[values.long()], out=block)
    return drawn
