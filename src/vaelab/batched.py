"""Several seeds of one experiment trained together in one process, over stacked parameters (issue 32, item 4).

S copies of the model, one per seed, are initialised as lone runs would be (:func:`vaelab.builders.build_run`
with that seed), then their parameters are stacked into ``[S, ...]`` tensors
(:func:`torch.func.stack_module_state`). A step evaluates every seed's objective at once with
:func:`torch.func.vmap` over :func:`torch.func.functional_call` of the vaelab model, and one Adam
(the lone run's, fused where it is) updates the stacked parameters: Adam is elementwise, so this is
S independent Adams. Each seed keeps its own data generator (dynamic binarization, then the epoch's
order) and its own noise generator, seeded and drawn in the order ``vaelab.training.train`` draws them,
so seed s follows the trajectory of a lone run with seed s. Not bitwise: the stacked layers multiply
with batched kernels (bmm) whose summation order differs from the lone run's mm, which moves each
step's gradients by float32 rounding (tests/test_batched_seeds.py states the tolerance).

Why not vmap vaelab's objectives themselves: they draw z inside, with
``torch.randn(..., generator=generator)`` (:func:`vaelab.models.sampling.sample`). Under vmap a
random op draws from one generator for the whole batch of seeds (``randomness='different'``), so no
seed could draw its lone run's stream. Here the noise eps ``[S, k, B, D]`` is drawn outside vmap, one
seed's generator at a time, and the vmapped function reparameterises z = mu + sigma * eps and scores
it with the model's own posterior, prior and likelihood: the same maths as
:func:`vaelab.objectives.iwae.iwae` and :func:`vaelab.objectives.aevb.aevb`, for the models they share
(one Gaussian stochastic layer, standard-normal prior).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import kl_divergence
from torch.func import functional_call, stack_module_state, vmap

from vaelab.builders import build_run
from vaelab.config import ExperimentConfig
from vaelab.data import Dataset
from vaelab.draws import bernoulli_draw
from vaelab.errors import ConfigError
from vaelab.evaluation.protocol import seeded_generator, training_images, uses_binarization
from vaelab.models import HelmholtzMachine
from vaelab.models.backend import flushing_subnormals, matmul_precision
from vaelab.objectives.core import ImportanceSamples, log_mean_exp
from vaelab.preflight import check_experiment
from vaelab.schedules import learning_rate_at
from vaelab.training import NumericalError

# The algorithms with a batched path: those whose only draw is one reparameterised z per step.
BATCHED_ALGORITHMS = ("aevb", "iwae")


def check_batchable(config: ExperimentConfig) -> None:
    """Raise :class:`ConfigError` (one line) where ``config`` has no batched path."""
    check_experiment(config)
    model, train = config.model, config.train
    if train.algorithm not in BATCHED_ALGORITHMS:
        raise ConfigError(f"seeds train together for {' and '.join(BATCHED_ALGORITHMS)} only (got {train.algorithm}); train the seeds as separate runs")
    if model.architecture != "mlp" or model.encoder or model.decoder or model.prior != "standard-normal" or isinstance(model.latent_dim, tuple):
        raise ConfigError("seeds train together for MLP models with one Gaussian stochastic layer and the standard-normal prior only")


class _SeedBound(nn.Module):
    """One seed's bound ``[B]`` of x ``[B, D_x]`` given its noise eps ``[k, B, D_z]``; the seed's
    parameters are swapped in by ``functional_call`` and the seeds mapped over by ``vmap``."""

    def __init__(self, model: HelmholtzMachine, algorithm: str, kl: str):
        super().__init__()
        self.model, self.algorithm, self.kl = model, algorithm, kl

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        posterior = self.model.posterior(x)
        gaussian = posterior.base_dist
        z = gaussian.loc + gaussian.scale * noise  # vaelab.models.sampling.sample's reparameterisation, eps passed in
        prior = self.model.prior_distribution()
        if self.algorithm == "aevb" and self.kl != "monte-carlo":  # aevb's closed-form KL (one layer, standard normal)
            return self.model.log_likelihood(x, z).mean(0) - kl_divergence(posterior, prior)
        log_weights = ImportanceSamples(z, prior.log_prob(z), self.model.log_likelihood(x, z), posterior.log_prob(z)).log_weights
        return log_weights.mean(0) if self.algorithm == "aevb" else log_mean_exp(log_weights)


class BatchedSeeds:
    """S seeds of ``config`` as one stacked model and one Adam.

    Use: ``for epoch in 1..E: for i in range(start_epoch(epoch)): step(i)``, then :meth:`models`.
    """

    def __init__(self, config: ExperimentConfig, seeds: Sequence[int], dataset: Dataset):
        check_batchable(config)
        if len(set(seeds)) != len(seeds) or not seeds:
            raise ConfigError(f"seeds must be distinct and at least one (got {list(seeds)})")
        self.config, self.seeds = config, list(seeds)
        runs = [build_run(dataclasses.replace(config, seed=seed), dataset) for seed in self.seeds]
        self._models = [model for model, _ in runs]
        self.params, self.buffers = stack_module_state(self._models)  # [S, ...] leaves; params require grad
        # the lone run's Adam (its betas, eps, fused or not) over the stacked parameters: elementwise, so S Adams
        self.optimizer = type(runs[0][1])(list(self.params.values()), **runs[0][1].defaults)
        self._bound = vmap(self._seed_bound(copy.deepcopy(self._models[0]).to("meta")))
        # vaelab.training.train's generators: data (binarization, order) and noise (latent draws, rank 0)
        self.data_generators = [seeded_generator(seed) for seed in self.seeds]
        self.noise_generators = [seeded_generator(seed, 0) for seed in self.seeds]
        self.images = training_images(config, dataset)
        self.dynamic = config.data.binarization == "dynamic" and uses_binarization(config, dataset)
        # [S, N, D_x]: each seed's epoch draws into its own slice of one buffer allocated for the run (vaelab.training._EpochImages)
        shape = (len(self.seeds), *self.images.shape)
        self.epoch_images = torch.empty(shape) if self.dynamic else self.images.expand(shape)
        self.latent_dim = self._models[0].latent_dim
        self.batches: list[torch.Tensor] = []

    def _seed_bound(self, skeleton: HelmholtzMachine):
        """``bound(params, buffers, x [B, D_x], noise [k, B, D_z]) -> [B]`` for one seed."""
        module = _SeedBound(skeleton, self.config.train.algorithm, self.config.train.kl)
        return lambda params, buffers, x, noise: functional_call(module, ({f"model.{n}": p for n, p in {**params, **buffers}.items()}), (x, noise))

    def start_epoch(self, epoch: int) -> int:
        """Set the epoch's learning rate and draw every seed's (binarized) images and order; returns the number of steps."""
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate_at(self.config.train, epoch)
        orders = []
        for index, generator in enumerate(self.data_generators):  # in train()'s order: the binarization's uniforms, then the permutation
            if self.dynamic:
                bernoulli_draw(self.images, generator, out=self.epoch_images[index])
            orders.append(torch.randperm(self.images.shape[0], generator=generator))
        self.batches = list(torch.stack(orders).split(self.config.train.batch_size, dim=1))  # each [S, B]
        return len(self.batches)

    def step(self, batch_index: int) -> torch.Tensor:
        """One Adam step of every seed on its ``batch_index``-th minibatch; returns the bounds ``[S, B]`` (no gradient)."""
        order = self.batches[batch_index]
        x = self.epoch_images[torch.arange(len(self.seeds)).unsqueeze(1), order]  # [S, B, D_x]
        shape = (self.config.train.num_samples, order.shape[1], self.latent_dim)
        noise = torch.stack([torch.randn(shape, generator=generator) for generator in self.noise_generators])  # [S, k, B, D_z]
        with matmul_precision(self.config.train.precision):
            bound = self._bound(self.params, self.buffers, x, noise)
        self.optimizer.zero_grad(set_to_none=True)
        # the sum over seeds of each seed's loss -mean_b: seed s's gradient is its lone run's
        (-bound.mean(1).sum()).backward()
        self.optimizer.step()
        return bound.detach()

    def models(self) -> list[HelmholtzMachine]:
        """Each seed's model, holding its slice of the stacked parameters (copied)."""
        with torch.no_grad():
            for index, model in enumerate(self._models):
                for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
                    tensor.copy_({**self.params, **self.buffers}[name][index])
        return self._models


def train_seeds(config: ExperimentConfig, seeds: Sequence[int], dataset: Dataset) -> tuple[list[HelmholtzMachine], torch.Tensor]:
    """Train ``config`` for every seed of ``seeds`` together, ``config.train.epochs`` epochs.

    Returns each seed's trained model and the mean training bound of every epoch ``[E, S]`` (nats).
    """
    batched = BatchedSeeds(config, seeds, dataset)
    means = []
    with flushing_subnormals():  # as train() computes
        for epoch in range(1, config.train.epochs + 1):
            total = torch.zeros(len(seeds), dtype=torch.float64)
            for index in range(batched.start_epoch(epoch)):
                total += batched.step(index).sum(1)
            if not torch.isfinite(total).all():  # a non-finite bound stays in the sum: one check an epoch
                failed = [str(seed) for seed, finite in zip(seeds, torch.isfinite(total).tolist()) if not finite]
                raise NumericalError(f"epoch {epoch}: the training bound of seed(s) {', '.join(failed)} is not finite")
            means.append(total / batched.images.shape[0])
    return batched.models(), torch.stack(means)
