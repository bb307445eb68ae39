"""The registry of likelihood families p_theta(x | z): one file and one entry per family.

An entry says what the rest of vaelab needs to know without building a model (command-line
choices and help, how data is prepared for it, which unit its bound is in, the words of report
captions) and names the class that computes it (:class:`~vaelab.likelihoods.family.LikelihoodFamily`,
imported only when a model is built, so that ``import vaelab.config`` and ``vaelab --help`` stay
free of PyTorch). Adding a family is one file holding its class and one entry below
(docs/extending.md has the recipe).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vaelab.errors import ConfigError

if TYPE_CHECKING:  # annotation only: the classes import torch
    from vaelab.likelihoods.family import LikelihoodFamily


@dataclass(frozen=True)
class LikelihoodEntry:
    """One family of p(x | z) over images.

    Attributes:
        name: the registry name (``--likelihood NAME``).
        implementation: ``"module:Class"`` of its :class:`~vaelab.likelihoods.family.LikelihoodFamily`.
        summary: one line for ``vaelab train --help``.
        discrete: a probability of each of the data's ``levels`` values per sub-pixel, so its
            bound is in nats of a discrete log P(x) and converts to bits/dim as it is.
        binarizes: grey data become binary targets first (``--binarization``).
        dequantizes: a density over continuous values: discrete data are dequantized,
            y = (v + u) / levels with u ~ U[0, 1), and its bound compares with a discrete one
            after subtracting D ln(levels) (Glow's ``-log(n_bins) * D``).
        caption: what the report says the model's p(x | z) is.
        mean_words: what E[x | z] is called in figure captions ("pixel probabilities", ...).
    """

    name: str
    implementation: str
    summary: str
    discrete: bool
    binarizes: bool
    dequantizes: bool
    caption: str
    mean_words: str

    def family(self) -> type[LikelihoodFamily]:
        """The class that computes it (imports its module)."""
        module, _, name = self.implementation.partition(":")
        return getattr(importlib.import_module(module), name)


LIKELIHOODS: dict[str, LikelihoodEntry] = {
    entry.name: entry
    for entry in (
        LikelihoodEntry(
            "bernoulli", "vaelab.likelihoods.bernoulli:Bernoulli",
            "independent binary pixels, one logit each (grey data are binarized, see --binarization)",
            discrete=True, binarizes=True, dequantizes=False,
            caption="p(x | z) a product of Bernoulli pixels", mean_words="pixel probabilities",
        ),
        LikelihoodEntry(
            "gaussian", "vaelab.likelihoods.gaussian:Gaussian",
            "a diagonal Gaussian density, mean and scale per sub-pixel (discrete data are dequantized)",
            discrete=False, binarizes=False, dequantizes=True,
            caption="p(x | z) a Gaussian with diagonal covariance (continuous pixels)", mean_words="pixel means",
        ),
        LikelihoodEntry(
            "categorical", "vaelab.likelihoods.categorical:Categorical",
            "a 2^bits-way softmax per sub-pixel",
            discrete=True, binarizes=False, dequantizes=False,
            caption="p(x | z) a categorical distribution over each sub-pixel's levels", mean_words="pixel means",
        ),
        LikelihoodEntry(
            "discretized-logistic", "vaelab.likelihoods.discretized:DiscretizedLogistic",
            "a logistic per sub-pixel integrated over each level's bin, edge bins open (Kingma et al. 2016)",
            discrete=True, binarizes=False, dequantizes=False,
            caption="p(x | z) a discretized logistic per sub-pixel", mean_words="pixel means",
        ),
        LikelihoodEntry(
            "discretized-gaussian", "vaelab.likelihoods.discretized:DiscretizedGaussian",
            "a Gaussian per sub-pixel integrated over each level's bin, edge bins open",
            discrete=True, binarizes=False, dequantizes=False,
            caption="p(x | z) a discretized Gaussian per sub-pixel", mean_words="pixel means",
        ),
        LikelihoodEntry(
            "discretized-logistic-mixture", "vaelab.likelihoods.mixture:DiscretizedLogisticMixture",
            "PixelCNN++'s mixture of --mixture-components discretized logistics, R, G, B means coupled",
            discrete=True, binarizes=False, dequantizes=False,
            caption="p(x | z) a mixture of discretized logistics per pixel (PixelCNN++)", mean_words="pixel means",
        ),
    )
}

LIKELIHOOD_NAMES: tuple[str, ...] = tuple(LIKELIHOODS)


def get_likelihood(name: str) -> LikelihoodEntry:
    """The entry of ``name``; ConfigError (one line, listing the families) for an unknown one."""
    if name not in LIKELIHOODS:
        raise ConfigError(f"unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOOD_NAMES)}")
    return LIKELIHOODS[name]
