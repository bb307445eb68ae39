"""Several seeds of one experiment trained together in one process, over stacked parameters (issue 32, item 4).

S copies of the model, one per seed, are initialised as lone runs would be (:func:`vaelab.builders.build_run`
with that seed), then their parameters are stacked into ``[S, ...]`` tensors
(:func:`torch.func.stack_module_state`). A step runs every seed's networks at once with batched
matrix products (``torch.baddbmm``: ``[S, N, in] @ [S, in, out]``), and one Adam (the lone run's, fused
where it is) updates the stacked parameters: Adam is elementwise, so this is S independent Adams.
Each seed keeps its own data generator (dynamic binarization, then the epoch's order) and its own
noise generator, seeded and drawn in the order :func:`vaelab.training.train` draws them, so seed s
follows the trajectory of a lone run with seed s. Not bitwise: bmm sums in another order than the
lone run's mm, which moves each step's gradients by float32 rounding (tests/training/test_batched_seeds.py
states the tolerance).

Why not ``torch.func.vmap`` over vaelab's objectives: they draw z inside, with
``torch.randn(..., generator=generator)`` (:func:`vaelab.models.sampling.sample`), and under vmap a
random op draws from one generator for the whole batch of seeds (``randomness='different'``), so no
seed could draw its lone run's stream. With the noise drawn outside and passed in, vmap over
``functional_call`` of the vaelab model does work, but was slower: 4 seeds of Burda's IWAE k=5 at
batch 20 took 37.7 ms a step against 28.6 ms here (one thread; 48.4 ms one after the other), its
per-step overhead 11.9 ms against 7.3 (widths cut to 8). So the two objectives that share this path
are written out below on the stacked networks, with the same formulas as
:func:`vaelab.objectives.iwae.iwae` and :func:`vaelab.objectives.aevb.aevb` for the models they
take: MLPs, one Gaussian stochastic layer, the standard-normal prior, a Bernoulli likelihood.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch.distributions import Independent, Normal, kl_divergence
from torch.func import stack_module_state
from torch.nn import functional as F

from vaelab.builders import build_run
from vaelab.config import ExperimentConfig
from vaelab.data import Dataset, to_unit_interval
from vaelab.draws import bernoulli_draw
from vaelab.errors import ConfigError
from vaelab.evaluation.protocol import epoch_draw, model_likelihood, seeded_generator, training_images
from vaelab.machine import flushing_subnormals
from vaelab.models import HelmholtzMachine
from vaelab.models.backend import ACTIVATION_FUNCTIONS
from vaelab.models.layers import MIN_SCALE
from vaelab.objectives.core import ImportanceSamples, log_mean_exp
from vaelab.preflight import check_experiment
from vaelab.schedules import learning_rate_at
from vaelab.training import NumericalError

# The algorithms with a batched path: those whose only draw is one reparameterised z per step.
BATCHED_ALGORITHMS = ("aevb", "iwae")


def check_batchable(config: ExperimentConfig, dataset: Dataset) -> None:
    """Raise :class:`ConfigError` (one line) where ``config`` has no batched path."""
    check_experiment(config)
    model, train = config.model, config.train
    if train.algorithm not in BATCHED_ALGORITHMS:
        raise ConfigError(f"seeds train together for {' and '.join(BATCHED_ALGORITHMS)} only (got {train.algorithm}); train the seeds as separate runs")
    if (
        model.architecture != "mlp" or model.encoder or model.decoder or model.prior != "standard-normal" or isinstance(model.latent_dim, tuple)
        or model.posterior != "diagonal"
    ):
        raise ConfigError("seeds train together for MLP models with one Gaussian stochastic layer, the diagonal posterior and the standard-normal prior only")
    if model_likelihood(config, dataset) != "bernoulli" or train.precision != "fp32":
        raise ConfigError("seeds train together with a Bernoulli likelihood in fp32 only")
    if train.kl_warmup or train.free_bits:  # the stacked aevb below ascends the ELBO itself
        raise ConfigError("seeds train together without --kl-warmup and --free-bits only; train the seeds as separate runs")


class BatchedSeeds:
    """S seeds of ``config`` as one stacked model and one Adam.

    Use: ``for epoch in 1..E: for i in range(start_epoch(epoch)): step(i)``, then :meth:`models`.
    """

    def __init__(self, config: ExperimentConfig, seeds: Sequence[int], dataset: Dataset):
        check_batchable(config, dataset)
        if len(set(seeds)) != len(seeds) or not seeds:
            raise ConfigError(f"seeds must be distinct and at least one (got {list(seeds)})")
        self.config, self.seeds = config, list(seeds)
        runs = [build_run(dataclasses.replace(config, seed=seed), dataset) for seed in self.seeds]
        self._models = [model for model, _ in runs]
        self.params, self.buffers = stack_module_state(self._models)  # [S, ...] leaves; params require grad
        # the lone run's Adam (its betas, eps, fused or not) over the stacked parameters: elementwise, so S Adams
        self.optimizer = type(runs[0][1])(list(self.params.values()), **runs[0][1].defaults)
        self.prior = self._models[0].prior_distribution()  # N(0, I): no parameters, the same for every seed
        self.activation = ACTIVATION_FUNCTIONS[config.model.activation]
        # vaelab.training.train's generators: data (binarization, order) and noise (latent draws, rank 0)
        self.data_generators = [seeded_generator(seed) for seed in self.seeds]
        self.noise_generators = [seeded_generator(seed, 0) for seed in self.seeds]
        # float32 [N, D] from the start: S seeds share one copy, and a batch is gathered per seed
        self.images = to_unit_interval(training_images(config, dataset), dataset.levels)
        self.dynamic = epoch_draw(config, dataset) == "binarize"  # a Bernoulli likelihood: nothing else is drawn
        # [S, N, D_x]: each seed's epoch draws into its own slice of one buffer allocated for the run (vaelab.training._EpochImages)
        shape = (len(self.seeds), *self.images.shape)
        self.epoch_images = torch.empty(shape) if self.dynamic else self.images.expand(shape)
        self.latent_dim = self._models[0].latent_dim
        self.batches: list[torch.Tensor] = []

    def _dense(self, inputs: torch.Tensor, name: str) -> torch.Tensor:
        """inputs ``[S, N, in]`` @ W^T + b of the stacked ``nn.Linear`` ``name`` (W ``[S, out, in]``): ``[S, N, out]``."""
        return torch.baddbmm(self.params[f"{name}.bias"].unsqueeze(1), inputs, self.params[f"{name}.weight"].transpose(1, 2))

    def _trunk(self, inputs: torch.Tensor, network: str) -> torch.Tensor:
        """The hidden layers of ``network`` ('recognition' or 'generative'), vaelab.models.backend.MLP's maths."""
        for index in range(len(self.config.model.hidden)):
            inputs = self.activation(self._dense(inputs, f"{network}.trunk.layers.{index}"))
        return inputs

    def bound(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Every seed's bound ``[S, B]`` of its x ``[S, B, D_x]`` with z = mu + sigma * eps, eps = ``noise`` ``[S, k, B, D_z]``.

        iwae: L_k = log mean_i w_i; aevb: mean_i log p(x | z_i) - KL(q || p) (or mean_i log w_i for kl
        'monte-carlo'), as the lone objectives compute them.
        """
        seeds, k, batch, latent = noise.shape
        features = self._trunk(x, "recognition")
        loc = self._dense(features, "recognition.loc").unsqueeze(1)  # [S, 1, B, D_z]: broadcast over the k samples
        scale = (F.softplus(self._dense(features, "recognition.raw_scale")) + MIN_SCALE).unsqueeze(1)
        posterior = Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)
        z = loc + scale * noise
        logits = self._dense(self._trunk(z.reshape(seeds, k * batch, latent), "generative"), "generative.logits").reshape(seeds, k, batch, -1)
        x = x.unsqueeze(1)
        log_likelihood = (logits * x).sum(-1) - F.softplus(logits).sum(-1)  # [S, k, B], BernoulliLayer.log_prob
        train = self.config.train
        if train.algorithm == "aevb" and train.kl != "monte-carlo":
            return log_likelihood.mean(1) - kl_divergence(posterior, self.prior).squeeze(1)
        log_weights = ImportanceSamples(z, self.prior.log_prob(z), log_likelihood, posterior.log_prob(z)).log_weights
        return log_weights.mean(1) if train.algorithm == "aevb" else log_mean_exp(log_weights, dim=1)

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
        bound = self.bound(x, noise)
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


def train_together(config: ExperimentConfig, seeds: Sequence[int], dataset: Dataset) -> tuple[list[HelmholtzMachine], torch.Tensor]:
    """Train ``config`` for every seed of ``seeds`` together, ``config.train.epochs`` epochs, in memory
    (no run directory; :func:`vaelab.seeds.train_seeds` trains one run directory per seed, as jobs).

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
