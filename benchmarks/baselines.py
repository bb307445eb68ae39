"""The code a user would write, kept deliberately plain: the baselines vaelab is measured against.

Everything here follows the PyTorch VAE example: ``nn.Linear`` MLPs, eager mode,
``torch.optim.Adam`` with default settings, ``binary_cross_entropy_with_logits``. Networks are the
seed's (784-512-2, ReLU), the same sizes vaelab uses.

Every training loop takes ``fused``: False is Adam as a user writes it (``foreach``, about ten
kernels per step), True is Adam's fused kernel (one pass over each parameter), the optimiser
vaelab itself uses; measured against both, vaelab's ratio with ``fused=True`` says what it adds
beyond the optimiser.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class PlainVAE(nn.Module):
    def __init__(self, data_dim: int = 784, hidden: int = 512, latent_dim: int = 2):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(data_dim, hidden), nn.ReLU())
        self.encoder_mu = nn.Linear(hidden, latent_dim)
        self.encoder_logvar = nn.Linear(hidden, latent_dim)
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, data_dim))
        self.latent_dim = latent_dim

    def encode(self, x):
        h = self.encoder(x)
        return self.encoder_mu(h), self.encoder_logvar(h)


def adam(model: nn.Module, fused: bool = False) -> torch.optim.Adam:
    """Adam with default settings; ``fused=True`` takes its fused kernel (as vaelab does)."""
    return torch.optim.Adam(model.parameters(), fused=True) if fused else torch.optim.Adam(model.parameters())


def plain_aevb_epoch(model: PlainVAE, images: torch.Tensor, batch_size: int = 100, fused: bool = False) -> None:
    optimizer = adam(model, fused)
    for x in images[torch.randperm(images.shape[0])].split(batch_size):
        mu, logvar = model.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        reconstruction = F.binary_cross_entropy_with_logits(model.decoder(z), x, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        loss = (reconstruction + kl) / x.shape[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def plain_wake_sleep_epoch(model: PlainVAE, images: torch.Tensor, batch_size: int = 100, fused: bool = False) -> None:
    optimizer = adam(model, fused)
    for x in images[torch.randperm(images.shape[0])].split(batch_size):
        mu, logvar = model.encode(x)
        z = (mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)).detach()
        wake = F.binary_cross_entropy_with_logits(model.decoder(z), x, reduction="sum")
        with torch.no_grad():
            z_dream = torch.randn(x.shape[0], model.latent_dim)
            x_dream = torch.bernoulli(torch.sigmoid(model.decoder(z_dream)))
        mu_d, logvar_d = model.encode(x_dream)
        sleep = 0.5 * torch.sum(logvar_d + (z_dream - mu_d).pow(2) / logvar_d.exp())
        loss = (wake + sleep) / x.shape[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def plain_log_weights(model: PlainVAE, x: torch.Tensor, k: int) -> torch.Tensor:
    """log p(x, z) - log q(z | x) ``[k, B]`` as first written: sample [k, B, 2], decode [k, B, 784], BCE with logits."""
    mu, logvar = model.encode(x)
    std = torch.exp(0.5 * logvar)
    z = mu + std * torch.randn(k, *mu.shape)
    log_likelihood = -F.binary_cross_entropy_with_logits(model.decoder(z), x.expand(k, -1, -1), reduction="none").sum(-1)
    log_prior = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_q = (-0.5 * ((z - mu) / std).pow(2) - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)
    return log_likelihood + log_prior - log_q


def plain_iwae_epoch(model: PlainVAE, images: torch.Tensor, k: int = 50, batch_size: int = 100, fused: bool = False) -> None:
    optimizer = adam(model, fused)
    for x in images[torch.randperm(images.shape[0])].split(batch_size):
        loss = -(torch.logsumexp(plain_log_weights(model, x, k), 0) - math.log(k)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def plain_rws_epoch(model: PlainVAE, images: torch.Tensor, k: int = 50, batch_size: int = 100, fused: bool = False) -> None:
    """Reweighted wake-sleep with wake-phi as first written: theta ascends L_k, phi the weighted
    sum_i w~_i log q(z_i | x) at detached samples; one backward pass, phi's log q kept out of theta's loss."""
    optimizer = adam(model, fused)
    for x in images[torch.randperm(images.shape[0])].split(batch_size):
        mu, logvar = model.encode(x)
        std = torch.exp(0.5 * logvar)
        z = (mu + std * torch.randn(k, *mu.shape)).detach()
        log_likelihood = -F.binary_cross_entropy_with_logits(model.decoder(z), x.expand(k, -1, -1), reduction="none").sum(-1)
        log_prior = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_q = (-0.5 * ((z - mu) / std).pow(2) - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_weights = log_likelihood + log_prior - log_q.detach()  # theta's L_k; q enters phi's loss only
        weights = torch.softmax(log_weights.detach(), 0)
        loss = -(torch.logsumexp(log_weights, 0) - math.log(k)).mean() - (weights * log_q).sum(0).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@torch.no_grad()
def straightforward_bound(model: PlainVAE, images: torch.Tensor, k: int, batch_size: int = 100) -> torch.Tensor:
    """L_k as first written, one batch of images at a time."""
    return torch.cat([torch.logsumexp(plain_log_weights(model, x, k), 0) - math.log(k) for x in images.split(batch_size)])


def pyro_svi_epoch(model: PlainVAE, images: torch.Tensor, loss_name: str, batch_size: int = 100) -> int:
    """One epoch of Pyro SVI on the same networks; returns the number of images processed."""
    import pyro
    import pyro.distributions as dist
    from pyro.infer import SVI, RenyiELBO, ReweightedWakeSleep, Trace_ELBO, TraceMeanField_ELBO

    pyro.clear_param_store()

    def generative(x):
        pyro.module("decoder", model.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], model.latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=model.decoder(z)).to_event(1), obs=x)

    def recognition(x):
        pyro.module("encoder", model.encoder)
        pyro.module("encoder_mu", model.encoder_mu)
        pyro.module("encoder_logvar", model.encoder_logvar)
        with pyro.plate("data", x.shape[0]):
            mu, logvar = model.encode(x)
            pyro.sample("z", dist.Normal(mu, torch.exp(0.5 * logvar)).to_event(1))

    optimizer = pyro.optim.Adam({"lr": 1e-3})
    batches = list(images[torch.randperm(images.shape[0])].split(batch_size))
    losses = {
        "Trace_ELBO": Trace_ELBO,
        "TraceMeanField_ELBO": TraceMeanField_ELBO,
        # k = 50 particles: reweighted wake-sleep, and alpha = 0 Renyi, which is the IWAE bound L_50
        "ReweightedWakeSleep": lambda: ReweightedWakeSleep(num_particles=50, vectorize_particles=True, max_plate_nesting=1),
        "RenyiELBO": lambda: RenyiELBO(alpha=0, num_particles=50, vectorize_particles=True, max_plate_nesting=1),
    }
    svi = SVI(generative, recognition, optimizer, loss=losses[loss_name]())
    for x in batches:
        svi.step(x)
    return sum(x.shape[0] for x in batches)
