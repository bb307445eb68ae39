"""A standard convolutional encoder and decoder for images of any size (``--architecture conv``).

They follow the convolutional VAE of the TensorFlow tutorial "Convolutional Variational
Autoencoder" (tensorflow.org/tutorials/generative/cvae, the network most PyTorch and Keras
examples copy): encoder Conv(32, 3x3, stride 2) -> ReLU -> Conv(64, 3x3, stride 2) -> ReLU ->
Linear(2 * latent_dim); decoder Linear -> ReLU -> [64, h/4, w/4] -> ConvTranspose(64, 3x3, stride 2)
-> ReLU -> ConvTranspose(32, 3x3, stride 2) -> ReLU -> Conv(out, 3x3, stride 1). Two changes make
it fit any image size: padding 1 everywhere (each stride-2 layer maps a side s to ceil(s / 2)),
and the decoder crops its 4 ceil(ceil(s/2)/2) output to the image (28 -> 7 -> 28 exactly;
8x8 digits -> 2 -> 8; 28x20 Frey faces -> 7x5 -> 28x20).
Both follow the network contract of :mod:`vaelab.models.networks`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

CHANNELS = (32, 64)


def _downsampled(side: int) -> int:
    for _ in CHANNELS:
        side = (side + 1) // 2  # a 3x3 stride-2 convolution with padding 1: ceil(side / 2)
    return side


class ConvEncoder(nn.Module):
    """x ``[B, C, H, W]`` -> ``[B, 2 * latent_dim]`` (means, then raw scales)."""

    def __init__(self, data_shape: tuple[int, int, int], latent_dim: int):
        super().__init__()
        channels, height, width = data_shape
        widths = (channels, *CHANNELS)
        layers: list[nn.Module] = []
        for inputs, outputs in zip(widths, widths[1:]):
            layers += [nn.Conv2d(inputs, outputs, 3, stride=2, padding=1), nn.ReLU()]
        self.convolutions = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(CHANNELS[-1] * _downsampled(height) * _downsampled(width), 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convolutions(x))


class ConvDecoder(nn.Module):
    """z ``[B, latent_dim]`` -> ``[B, heads, *data_shape]``: the likelihood family's ``heads`` numbers
    per sub-pixel (:mod:`vaelab.models.networks`), output channel h * C + c holding head h of channel c."""

    def __init__(self, data_shape: tuple[int, int, int], latent_dim: int, heads: int = 1):
        super().__init__()
        channels, self.height, self.width = data_shape
        self.heads, self.data_shape = heads, tuple(data_shape)
        self.start = (CHANNELS[-1], _downsampled(self.height), _downsampled(self.width))
        self.project = nn.Sequential(nn.Linear(latent_dim, math.prod(self.start)), nn.ReLU())
        widths = CHANNELS[::-1] + (CHANNELS[0],)  # 64 -> 64 -> 32, as the tutorial's decoder
        layers: list[nn.Module] = []
        for inputs, outputs in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(inputs, outputs, 3, stride=2, padding=1, output_padding=1), nn.ReLU()]
        self.upsample = nn.Sequential(*layers, nn.Conv2d(CHANNELS[0], heads * channels, 3, padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        grid = self.upsample(self.project(z).reshape(-1, *self.start))
        grid = grid[..., : self.height, : self.width]  # each transposed convolution doubles; crop to the image
        return grid.reshape(grid.shape[0], self.heads, *self.data_shape)
