"""Models: priors, stochastic layers and the Helmholtz machine that composes them."""

from vaelab.models.helmholtz import HelmholtzMachine, build_model
from vaelab.models.layers import BernoulliLayer, DiagonalGaussianLayer, StochasticLayer
from vaelab.models.priors import StandardNormalPrior

__all__ = ["BernoulliLayer", "DiagonalGaussianLayer", "HelmholtzMachine", "StandardNormalPrior", "StochasticLayer", "build_model"]
