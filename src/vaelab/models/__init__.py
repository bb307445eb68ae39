"""Models: priors, stochastic layers and the Helmholtz machine that composes them."""

from vaelab.models.chain import Chain
from vaelab.models.helmholtz import HelmholtzMachine
from vaelab.models.layers import BernoulliLayer, DiagonalGaussianLayer, LikelihoodLayer, StochasticLayer
from vaelab.models.priors import (
    BernoulliPrior,
    MixturePrior,
    StandardNormalPrior,
    VampPrior,
)

__all__ = [
    "BernoulliLayer",
    "BernoulliPrior",
    "Chain",
    "DiagonalGaussianLayer",
    "HelmholtzMachine",
    "LikelihoodLayer",
    "MixturePrior",
    "StandardNormalPrior",
    "StochasticLayer",
    "VampPrior",
]
