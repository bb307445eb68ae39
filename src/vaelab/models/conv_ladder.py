"""The convolutional ladder (``--architecture conv-ladder``): spatial latents at several scales.

For images ``[C, H, W]`` and ``--latent-dim c_1,...,c_L`` (channels per layer), the latents sit on
the scales ceil(H/2), ceil(H/4), ... down to the first side of at most 4 (28x28 MNIST: 14, 7, 4;
32x32: 16, 8, 4), the L layers split evenly between them from the finest up (extra layers at the
coarse end), as VDVAE and Dittadi's LVAE stack several latent layers per resolution. All
deterministic paths have :data:`CHANNELS` channels and Swish (SiLU) activations, as NVAE's cells:

- bottom-up: a stride-2 stem to the finest scale, then per layer a stride-2 stage where the scale
  halves, else a residual block;
- top-down: a 3x3 convolution of [z_{l+1}, t_{l+1}], a stride-2 transposed convolution (cropped
  to the scale) where z_l is finer, then a 3x3 convolution;
- heads: 3x3 convolutions to (mean, raw scale) per latent channel;
- decoder: z_1 -> 3x3 convolution -> stride-2 transposed convolution -> the likelihood's heads
  ``[B, heads, C, H, W]`` (the network contract of :mod:`vaelab.models.networks`).
"""

from __future__ import annotations

import torch
from torch import nn

from vaelab.models.ladder import LadderNetworks

CHANNELS = 64


def _halved(side: int) -> int:
    return (side + 1) // 2  # a 3x3 stride-2 convolution with padding 1


def _on_grids(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``module`` on ``[..., C, H, W]`` with any leading dimensions."""
    outputs = module(inputs.reshape(-1, *inputs.shape[-3:]))
    return outputs.reshape(*inputs.shape[:-3], *outputs.shape[1:])


def _conv(inputs: int, outputs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1)


class _Residual(nn.Module):
    """x + conv(silu(conv(silu(x)))) at one resolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.SiLU(), _conv(channels, channels), nn.SiLU(), _conv(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _Upsample(nn.Module):
    """A stride-2 transposed convolution cropped to ``side`` (each doubles; odd sides are cropped)."""

    def __init__(self, channels: int, side: tuple[int, int]):
        super().__init__()
        self.side = side
        self.up = nn.ConvTranspose2d(channels, channels, 3, stride=2, padding=1, output_padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)[..., : self.side[0], : self.side[1]]


def latent_sides(height: int, width: int, layers: int) -> list[tuple[int, int]]:
    """(h_l, w_l) of each of ``layers`` latent layers, z_1 first (the module docstring's schedule)."""
    scales = [(_halved(height), _halved(width))]
    while min(scales[-1]) > 4:
        scales.append((_halved(scales[-1][0]), _halved(scales[-1][1])))
    scales = scales[:layers]
    per_scale, extra = divmod(layers, len(scales))
    counts = [per_scale + (1 if index >= len(scales) - extra else 0) for index in range(len(scales))]
    return [side for side, count in zip(scales, counts) for _ in range(count)]


class ConvLadder(LadderNetworks):
    """The conv ladder's networks over images ``data_shape`` with ``latent_channels`` per layer."""

    def __init__(self, data_shape: tuple[int, int, int], latent_channels: tuple[int, ...], merge: str):
        channels, height, width = data_shape
        sides = latent_sides(height, width, len(latent_channels))
        super().__init__([(c, *side) for c, side in zip(latent_channels, sides)], merge)
        self.data_shape = tuple(data_shape)
        top = len(latent_channels) - 1
        stages = [nn.Sequential(nn.Unflatten(-1, data_shape), _conv(channels, CHANNELS, 2), nn.SiLU(), _conv(CHANNELS, CHANNELS), nn.SiLU())]
        for below, side in zip(sides, sides[1:]):
            halves = side != below
            stages.append(nn.Sequential(_conv(CHANNELS, CHANNELS, 2), nn.SiLU(), _conv(CHANNELS, CHANNELS), nn.SiLU()) if halves else _Residual(CHANNELS))
        self.bottom_up = nn.ModuleList(stages)
        self.top_down = nn.ModuleList()
        for layer in range(top):
            above = latent_channels[layer + 1] + (CHANNELS if layer + 1 < top else 0)
            resize = [_Upsample(CHANNELS, sides[layer]), nn.SiLU()] if sides[layer] != sides[layer + 1] else []
            self.top_down.append(nn.Sequential(_conv(above, CHANNELS), nn.SiLU(), *resize, _conv(CHANNELS, CHANNELS), nn.SiLU()))
        self.prior_heads = nn.ModuleList(_conv(CHANNELS, 2 * latent_channels[layer]) for layer in range(top))
        self.posterior_heads = nn.ModuleList(
            _conv(CHANNELS * (2 if merge == "residual" and layer < top else 1), 2 * c) for layer, c in enumerate(latent_channels)
        )

    def bottom_up_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """d_1, ..., d_L ``[..., CHANNELS, h_l, w_l]`` for x ``[..., C * H * W]``."""
        leading = x.shape[:-1]
        return [features.reshape(*leading, *features.shape[1:]) for features in super().bottom_up_features(x.reshape(-1, x.shape[-1]))]

    def top_down_features(self, layer: int, z_above: torch.Tensor, features_above: torch.Tensor | None) -> torch.Tensor:
        inputs = z_above if features_above is None else torch.cat([z_above, features_above], -3)
        return _on_grids(self.top_down[layer], inputs)

    def prior_head(self, layer: int, features: torch.Tensor) -> torch.Tensor:
        return _on_grids(self.prior_heads[layer], features).unflatten(-3, (2, -1))

    def posterior_head(self, layer: int, bottom_up: torch.Tensor, top_down: torch.Tensor | None) -> torch.Tensor:
        if top_down is not None:
            bottom_up = torch.cat([bottom_up.expand(*top_down.shape[:-3], *bottom_up.shape[-3:]), top_down], -3)
        return _on_grids(self.posterior_heads[layer], bottom_up).unflatten(-3, (2, -1))


class ConvLadderDecoder(nn.Module):
    """z_1 ``[B, c_1 * h * w]`` (flat) -> ``[B, heads, C, H, W]``."""

    def __init__(self, data_shape: tuple[int, int, int], latent_shape: tuple[int, int, int], heads: int):
        super().__init__()
        self.heads, self.data_shape = heads, tuple(data_shape)
        channels, height, width = data_shape
        self.network = nn.Sequential(
            nn.Unflatten(-1, latent_shape),
            _conv(latent_shape[0], CHANNELS), nn.SiLU(),
            _Upsample(CHANNELS, (height, width)), nn.SiLU(),
            _conv(CHANNELS, heads * channels),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.network(z).reshape(z.shape[0], self.heads, *self.data_shape)
