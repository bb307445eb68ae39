"""Network factories for `own_networks.py` (and `vaelab train --encoder examples/mynets.py:encoder ...`).

The contract (docs/guide/networks.md): each factory is called as FACTORY(data_shape=..., latent_dim=...)
and returns an nn.Module. The encoder maps x [B, *data_shape] to [B, 2 * latent_dim] (the mean, then
the raw scale); the decoder maps z [B, latent_dim] to Bernoulli logits [B, *data_shape].
"""

import math

from torch import nn


def encoder(data_shape, latent_dim):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(data_shape), 256), nn.ReLU(), nn.Linear(256, 2 * latent_dim))


def decoder(data_shape, latent_dim):
    return nn.Sequential(nn.Linear(latent_dim, 256), nn.ReLU(), nn.Linear(256, math.prod(data_shape)), nn.Unflatten(1, data_shape))
