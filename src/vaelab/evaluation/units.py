"""Bits per dimension: the unit in which the field reports likelihoods of discrete images.

A bound L (a lower bound on log p(x), in nats per image) of an image with D sub-pixels
(D = C * H * W) is reported as

    bits/dim = -(L - offset) / (D ln 2),

the negative log-likelihood in bits divided by the number of dimensions (Theis, van den Oord and
Bethge 2016, "A note on the evaluation of generative models", Section 3.1; PixelRNN, van den Oord
et al. 2016). ``offset`` makes the bound one of a discrete probability P(x):

- a discrete family (a probability of each of the data's ``levels`` values per sub-pixel, Bernoulli
  on binary data included) scores P(x) itself: offset 0;
- a continuous density p(y) on dequantized data y = (v + u) / levels, u ~ U[0, 1), gives the
  discrete model P(v) = ∫ p(y) dy over v's cell of volume levels^-D, so by Jensen
  log P(v) >= E_u[log p(y)] - D ln(levels): offset = D ln(levels) (Theis et al. 2016, Section 3.1;
  Glow's ``objective += -log(n_bins) * D``, Kingma & Dhariwal 2018);
- a continuous density on continuous data, or Bernoulli targets that are grey values
  (binarization 'none'), has no bits/dim: no offset (None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

from vaelab.config import ExperimentConfig
from vaelab.data import Dataset
from vaelab.evaluation.protocol import model_likelihood
from vaelab.likelihoods import get_likelihood

Number = TypeVar("Number")  # a float, a numpy array or a torch tensor: the arithmetic is the same

LN2 = math.log(2.0)


def bits_per_dim(nats: Number, dims: int, offset: float = 0.0) -> Number:
    """-(nats - offset) / (dims ln 2): a bound on log p(x) in nats per image as bits per dimension
    (a negative log-likelihood: lower is better). Works elementwise on floats, arrays and tensors."""
    return -(nats - offset) / (dims * LN2)


def bits_per_dim_spread(nats: Number, dims: int) -> Number:
    """nats / (dims ln 2): a standard error or a difference of bounds, in bits per dimension
    (no offset, no sign change: a lead of 3 nats in the bound is 3 / (D ln 2) bits/dim fewer)."""
    return nats / (dims * LN2)


def bits_per_dim_offset(config: ExperimentConfig, dataset: Dataset) -> float | None:
    """The offset (nats) that turns the experiment's bound into one of a discrete P(x), or None
    where its bound has no bits/dim.

    From the registry entry of the model's likelihood (:func:`vaelab.evaluation.protocol.model_likelihood`):
    a binarizing family (Bernoulli) 0.0 where the data it scores are binary (a binary dataset, or
    ``binarization`` other than 'none'), None on grey targets; otherwise, on discrete data
    (``dataset.levels`` set), D ln(levels) for a dequantizing family and 0.0 for a discrete one;
    None on continuous data (``levels`` None).
    """
    entry = get_likelihood(model_likelihood(config, dataset))
    if entry.binarizes:
        return 0.0 if dataset.is_binary or config.data.binarization != "none" else None
    if dataset.levels is None:
        return None
    return dataset.data_dim * math.log(dataset.levels) if entry.dequantizes else 0.0


@dataclass(frozen=True)
class BitsPerDim:
    """The bits/dim of one experiment: its D (``dims``) and offset in nats (:func:`bits_per_dim_offset`)."""

    dims: int
    offset: float

    def of(self, nats: Number) -> Number:
        """A bound in nats per image as bits/dim (:func:`bits_per_dim`)."""
        return bits_per_dim(nats, self.dims, self.offset)

    def spread(self, nats: Number) -> Number:
        """A standard error or difference in nats as bits/dim (:func:`bits_per_dim_spread`)."""
        return bits_per_dim_spread(nats, self.dims)

    def nats(self, bits: Number) -> Number:
        """The inverse of :meth:`of`: offset - bits * D ln 2 (a figure's second axis)."""
        return self.offset - bits * self.dims * LN2


def experiment_bits(config: ExperimentConfig, dataset: Dataset) -> BitsPerDim | None:
    """The experiment's :class:`BitsPerDim`, or None where its bound has none (:func:`bits_per_dim_offset`)."""
    offset = bits_per_dim_offset(config, dataset)
    return None if offset is None else BitsPerDim(dataset.data_dim, offset)


# The keys of evaluation rows holding a bound on (or estimate of) log p(x) in nats per image, each
# with a standard error under "<key>_stderr": L_k and the ELBO, AIS's log p(x), BDMC's sandwich.
NATS_KEYS = ("bound", "elbo", "log_px", "lower", "upper")


def bits_per_dim_fields(row: dict, config: ExperimentConfig, dataset: Dataset) -> dict[str, float]:
    """``<key>_bpd`` and ``<key>_bpd_stderr`` for each of :data:`NATS_KEYS` that ``row`` holds, in
    bits/dim (:func:`experiment_bits`); {} where there is no bits/dim."""
    bits = experiment_bits(config, dataset)
    if bits is None:
        return {}
    fields = {}
    for key in NATS_KEYS:
        if key in row:
            fields[f"{key}_bpd"] = bits.of(row[key])
            fields[f"{key}_bpd_stderr"] = bits.spread(row[f"{key}_stderr"])
    return fields
