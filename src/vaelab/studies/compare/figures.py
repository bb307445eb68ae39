"""The study's figures: plain functions from numbers and images to a matplotlib ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state; rendered by Agg) and written
as PNG and PDF by :func:`save_figure`. Algorithms keep one colour across figures: the i-th one
given is drawn in matplotlib's colour ``C<i>``. Images are flat ``[..., height * width]`` arrays of
pixel probabilities or means, shown on a grey scale from black (0) to white (1); values outside
[0, 1] (a Gaussian decoder's means) are drawn clipped, and the panel titles say how many were.
Panels wrap into rows of at most ``MAX_COLUMNS`` and tiny images are upsampled (:func:`tile_scale`),
so that an 8 x 8 digit stays large enough to judge however many algorithms are compared.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from vaelab.evaluation.units import BitsPerDim
from vaelab.runio import write_figure_atomic
from vaelab.studies.compare.summary import Series

PANEL_INCHES = 4.2  # width and height of one algorithm's panel
MAX_COLUMNS = 2  # panels per row: the report's column (about 1000 px) then shows each at 450 px or more
MIN_TILE_PIXELS = 32  # tiles smaller than this (8 x 8 digits) are upsampled by an integer factor to reach it
DPI = 150
_GREY = matplotlib.colormaps["gray"].with_extremes(bad="white")  # NaN: the gaps between tiles


def save_figure(figure: Figure, stem: Path) -> Path:
    """Write ``stem``.png and ``stem``.pdf, each atomically; returns the PNG's path."""
    png = stem.with_suffix(".png")
    write_figure_atomic(png, figure, dpi=DPI)
    write_figure_atomic(stem.with_suffix(".pdf"), figure)
    return png


def training_curves_figure(
    histories: dict[str, dict[str, list[Series]]], k: int, per_seed_lines: bool = False, bits: BitsPerDim | None = None
) -> Figure:
    """L_k on train (solid) and test (dashed) against epoch for every algorithm (after Kingma & Welling 2013, Figure 2).

    Args:
        histories: algorithm name -> split ('train', 'test') -> its evaluations, one series per seed.
            One seed: the line and a band of ±1 standard error over images. Several: the mean over
            seeds and a band from the lowest to the highest seed (min-max: with a few seeds, an sd
            band would claim a spread that few points cannot show), at the epochs every seed reached.
        per_seed_lines: with several seeds, also each seed's curve as a thin line.
        bits: the study's bits/dim (discrete data): a second y axis on the right (:func:`_bits_axis`).
    """
    figure = Figure(figsize=(7.5, 4.5), layout="constrained")
    axes = figure.add_subplot()
    seeds = 1
    for index, (name, splits) in enumerate(histories.items()):
        for split, style, marker in (("train", "-", "o"), ("test", "--", "s")):
            if split not in splits:
                continue
            runs = splits[split]
            seeds = len(runs)
            length = min(len(series.epochs) for series in runs)
            epochs = runs[0].epochs[:length]
            values = np.array([series.mean[:length] for series in runs])  # [seeds, E]
            mean = values.mean(axis=0)
            if seeds == 1:
                stderr = np.array(runs[0].stderr[:length])
                low, high = mean - stderr, mean + stderr
            else:
                low, high = values.min(axis=0), values.max(axis=0)
                if per_seed_lines:
                    for seed_values in values:
                        axes.plot(epochs, seed_values, style, color=f"C{index}", linewidth=0.7, alpha=0.6)
            axes.plot(epochs, mean, style, marker=marker, color=f"C{index}", label=f"{name}, {split}")
            axes.fill_between(epochs, low, high, color=f"C{index}", alpha=0.2, linewidth=0)
    axes.set_xlabel("epoch")
    axes.set_ylabel(f"$\\mathcal{{L}}_{{{k}}}$ (nats per image)")
    _bits_axis(axes, bits)
    over = "" if seeds == 1 else f"\nmean over {seeds} seeds, band from the lowest to the highest seed"
    axes.set_title(f"$\\mathcal{{L}}_{{{k}}}$ during training: train solid, test dashed{over}")
    axes.grid(alpha=0.3)
    axes.legend()
    return figure


def manifold_figure(
    panels: dict[str, np.ndarray], ticks: dict[float, float], image_shape: tuple[int, int], grid_title: str, clipped: dict[str, float] | None = None
) -> Figure:
    """Each algorithm's decoder means on a latent grid (Kingma & Welling 2013, Figure 4).

    Args:
        panels: algorithm name -> decoder means ``[size, size, H * W]``; entry [row, column] is
            tile (column, size - 1 - row) on the (z_1, z_2) axes, so that z_2 grows upwards.
        ticks: value of z -> its position on either axis, in tiles (tile i centred on i).
        grid_title: what the grid is (mathtext), e.g. '$z = \\Phi^{-1}(u)$, $u$ uniform on the unit square'.
        clipped: algorithm name -> fraction of its means outside [0, 1], named in its panel's title
            (None: means are probabilities, nothing is clipped).
    """
    figure, axes_list = _panel_figure(len(panels))
    height, width = image_shape[-2:]
    scale = tile_scale(image_shape)
    size = next(iter(panels.values())).shape[0]
    positions = np.array(list(ticks.values()))
    names = [f"{value:g}".replace("-", "\N{MINUS SIGN}") for value in ticks]  # as matplotlib's own ticks
    for axes, (name, images) in zip(axes_list, panels.items()):
        _show(axes, mosaic(images, image_shape, gap=1, scale=scale))
        step_x, step_y = width * scale + 1, height * scale + 1  # a tile and its gap, in mosaic pixels
        axes.set_xticks(positions * step_x + (width * scale - 1) / 2, names)
        axes.set_yticks((size - 1 - positions) * step_y + (height * scale - 1) / 2, names)
        axes.set_xlabel("$z_1$")
        axes.set_ylabel("$z_2$")
        axes.set_title(_panel_title(name, clipped))
    figure.suptitle(f"Decoder means $E[x \\mid z]$ on a grid of {grid_title}")
    return figure


def samples_figure(
    panels: dict[str, np.ndarray], image_shape: tuple[int, int], prior_title: str, clipped: dict[str, float] | None = None
) -> Figure:
    """Each algorithm's decoder means at the same draws z ~ p(z).

    Args:
        panels: algorithm name -> decoder means ``[rows, columns, H * W]``.
        prior_title: the draws from the prior (mathtext), e.g. '$z \\sim p(z) = N(0, I)$'.
        clipped: as in :func:`manifold_figure`.
    """
    figure, axes_list = _panel_figure(len(panels))
    for axes, (name, images) in zip(axes_list, panels.items()):
        _show(axes, mosaic(images, image_shape, gap=1, scale=tile_scale(image_shape)))
        axes.set_axis_off()
        axes.set_title(_panel_title(name, clipped))
    figure.suptitle(f"Samples: decoder means $E[x \\mid z]$ at {prior_title}")
    return figure


def reconstructions_figure(rows: dict[str, np.ndarray], image_shape: tuple[int, int], at: str = "$z = E_q[z \\mid x]$") -> Figure:
    """Rows of images with a label each: test images first, then each algorithm's reconstructions.

    Args:
        rows: label -> ``[n, H * W]`` images, the same n in every row, shown top to bottom.
        at: the latent each reconstruction decodes (mathtext), for the title.
    """
    scale = tile_scale(image_shape)
    tiled = mosaic(np.stack(list(rows.values())), image_shape, gap=1, scale=scale)
    count = next(iter(rows.values())).shape[0]
    image_width = min(10.0, 0.8 * count)  # inches
    figure = Figure(figsize=(image_width + 2.0, image_width * tiled.shape[0] / tiled.shape[1] + 0.6), layout="constrained")
    axes = figure.add_subplot()
    _show(axes, tiled)
    height = image_shape[-2] * scale
    axes.set_yticks(np.arange(len(rows)) * (height + 1) + (height - 1) / 2, list(rows))
    axes.set_xticks([])
    axes.tick_params(left=False)
    for spine in axes.spines.values():
        spine.set_visible(False)
    axes.set_title(f"Reconstructions: decoder means $E[x \\mid z]$ at {at}")
    return figure


def latent_figure(panels: dict[str, tuple[np.ndarray, tuple[str, str]]], labels: np.ndarray | None) -> Figure:
    """Each algorithm's posterior means of the test images, coloured by class.

    Args:
        panels: algorithm name -> (points ``[N, 2]``, (x label, y label)).
        labels: ``[N]`` class of each image, or None (one colour).
    """
    figure, axes_list = _panel_figure(len(panels))
    count = len(next(iter(panels.values()))[0])
    size = float(np.clip(3000 / count, 1, 12))
    classes = [None] if labels is None else np.unique(labels)
    colours = matplotlib.colormaps["tab10"]
    for axes, (name, (points, (x_label, y_label))) in zip(axes_list, panels.items()):
        for number, label in enumerate(classes):
            chosen = slice(None) if label is None else labels == label
            axes.scatter(
                points[chosen, 0], points[chosen, 1], s=size, alpha=0.7, linewidths=0, rasterized=True,
                color=colours(number % colours.N), label=None if label is None else str(label),
            )
        axes.set_aspect("equal", adjustable="datalim")
        axes.set_xlabel(x_label)
        axes.set_ylabel(y_label)
        axes.set_title(name)
        axes.grid(alpha=0.3)
    if labels is not None:
        figure.legend(*axes_list[0].get_legend_handles_labels(), loc="outside right upper", title="class", markerscale=max(1.0, 36 / size) ** 0.5)
    figure.suptitle(f"Posterior means $E_q[z \\mid x]$ of {count} test images")
    return figure


def bound_against_k_figure(
    curves: dict[str, tuple[list[int], list[float], list[float]]], num_images: int, bits: BitsPerDim | None = None
) -> Figure:
    """Test L_k against k on a log axis, mean ± standard error over images, per algorithm.

    Args:
        curves: algorithm name -> (k ``[K]``, mean L_k ``[K]``, standard error ``[K]``).
        bits: the study's bits/dim (discrete data): a second y axis on the right (:func:`_bits_axis`).
    """
    figure = Figure(figsize=(7.5, 4.5), layout="constrained")
    axes = figure.add_subplot()
    count = len(curves)
    for index, (name, (ks, mean, stderr)) in enumerate(curves.items()):
        shift = 1.04 ** (index - (count - 1) / 2)  # side by side, so that error bars do not overlap
        axes.errorbar(np.array(ks) * shift, mean, yerr=stderr, marker="o", capsize=3, color=f"C{index}", label=name)
    ks = next(iter(curves.values()))[0]
    axes.set_xscale("log")
    axes.set_xticks(ks, [str(k) for k in ks])
    axes.minorticks_off()
    axes.set_xlabel("number of importance samples k (log scale)")
    axes.set_ylabel("test $\\mathcal{L}_k$ (nats per image)")
    _bits_axis(axes, bits)
    axes.set_title(f"The bound tightens with k: test $\\mathcal{{L}}_k$ on {num_images} images")
    axes.grid(alpha=0.3)
    axes.legend()
    return figure


def _bits_axis(axes, bits: BitsPerDim | None) -> None:
    """A right-hand y axis of the same curves in bits/dim, -(L - offset) / (D ln 2) (it runs downwards as
    the bound in nats rises: fewer bits are better); nothing without ``bits``."""
    if bits is not None:
        axes.secondary_yaxis("right", functions=(bits.of, bits.nats)).set_ylabel("bits/dim (lower is better)")


def tile_scale(image_shape: tuple[int, int]) -> int:
    """The integer factor by which each image is upsampled in a mosaic: 4 for 8 x 8 digits, 1 for
    MNIST or Frey faces. Upsampled pixels stay square blocks in the PNG and the PDF (where viewers
    would otherwise smooth an 8 x 8 image into a blur), and the 1-pixel gaps between tiles become
    thin next to the tiles."""
    return max(1, MIN_TILE_PIXELS // min(image_shape[-2:]))


def mosaic(images: np.ndarray, image_shape: tuple[int, ...], gap: int, scale: int = 1) -> np.ndarray:
    """Tile flat images ``[rows, columns, C * H * W]`` (``image_shape`` is ``(H, W)``, or ``(C, H, W)``
    channels first for colour), each upsampled ``scale`` times (nearest neighbour), into one
    ``[rows * (s H + gap) - gap, columns * (s W + gap) - gap]`` array (``[..., C]`` for colour), with
    NaN in the gaps."""
    rows, columns = images.shape[:2]
    channels, (height, width) = (image_shape[0] if len(image_shape) == 3 else 1), image_shape[-2:]
    pictures = images.reshape(rows, columns, channels, height, width).repeat(scale, axis=3).repeat(scale, axis=4)
    height, width = height * scale, width * scale
    tiles = np.full((rows, columns, channels, height + gap, width + gap), np.nan)
    tiles[..., :height, :width] = pictures
    tiled = tiles.transpose(0, 3, 1, 4, 2).reshape(rows * (height + gap), columns * (width + gap), channels)
    tiled = tiled[: tiled.shape[0] - gap, : tiled.shape[1] - gap]
    return tiled[..., 0] if channels == 1 else tiled


def _panel_title(name: str, clipped: dict[str, float] | None) -> str:
    """An algorithm's panel title, with the share of its pixels drawn clipped where any can be."""
    return name if clipped is None else f"{name}: {clipped[name]:.1%} of pixels clipped to [0, 1]"


def _show(axes, tiled: np.ndarray) -> None:
    """Draw a mosaic on the grey scale. Interpolation 'auto' keeps pixels crisp when magnified 3x or
    more (8 x 8 digits) and smooths when shrinking (large grids), so no pixel row is dropped."""
    if tiled.ndim == 3:  # colour: the gaps white, values clipped to [0, 1] as the grey scale clips them
        axes.imshow(np.clip(np.nan_to_num(tiled, nan=1.0), 0, 1), interpolation="auto")
    else:
        axes.imshow(tiled, cmap=_GREY, vmin=0, vmax=1, interpolation="auto")


def _panel_figure(count: int) -> tuple[Figure, list]:
    """A figure with ``count`` square panels, ``MAX_COLUMNS`` to a row (unused cells left blank)."""
    columns = min(count, MAX_COLUMNS)
    rows = -(-count // columns)
    figure = Figure(figsize=(PANEL_INCHES * columns + 1.2, (PANEL_INCHES + 0.3) * rows + 0.3), layout="constrained")
    axes_grid = figure.subplots(rows, columns, squeeze=False).ravel()
    for unused in axes_grid[count:]:
        unused.set_axis_off()
    return figure, list(axes_grid[:count])
