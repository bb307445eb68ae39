"""TensorBoard logging of a training run (``vaelab train --tensorboard``): under ``<run>/tensorboard/``.

Each epoch writes its metrics rows as scalars (``train/bound`` for the running bound of the
epoch, ``<split>/L_<k>`` and ``<split>/elbo`` for every evaluation row, and on discrete data the same
in bits/dim, ``<split>/L_<k>_bits_per_dim`` and ``<split>/elbo_bits_per_dim``), keyed by the optimiser
step; each evaluation epoch also writes image grids of E[x | z] for z ~ p(z) (``samples``) and of
test images above their reconstructions E[x | z = E_q[z | x]] (``reconstructions``). The pictures
draw from their own seeded generator, so logging never changes a run's numbers. TensorBoard is an
optional extra (``pip install 'vaelab[tensorboard]'``); without it, asking for it fails in one line
before any training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vaelab.errors import ConfigError
from vaelab.models import HelmholtzMachine
from vaelab.runio import TENSORBOARD_DIR

GRID_IMAGES = 16  # samples and reconstructions per grid


def require_tensorboard() -> None:
    """Raise ConfigError (one line) unless TensorBoard can be written."""
    _summary_writer_class()


def _summary_writer_class() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch ships the module; it imports the tensorboard package
        raise ConfigError("--tensorboard needs the tensorboard package: pip install 'vaelab[tensorboard]' (or pip install tensorboard)") from None
    return SummaryWriter


class TensorBoardLog:
    """Writes a run's rows and image grids as TensorBoard events under ``run_dir/tensorboard``.

    Args:
        image_shape: ``(C, H, W)`` of one image (grey data: C = 1), how rows ``[N, D]`` are drawn.
        test_images: up to ``GRID_IMAGES`` test images ``[n, D]`` to reconstruct.
    """

    def __init__(self, run_dir: str | Path, image_shape: tuple[int, int, int], test_images: torch.Tensor, seed: int):
        self.writer = _summary_writer_class()(log_dir=str(Path(run_dir) / TENSORBOARD_DIR))
        self.image_shape = tuple(image_shape)
        self.test_images = test_images[:GRID_IMAGES]
        self.seed = seed

    def write(self, rows: list[dict[str, Any]], model: HelmholtzMachine) -> None:
        """The scalars of one epoch's ``rows``; the image grids when the epoch evaluated."""
        step = rows[0]["step"]
        for row in rows:
            if row["kind"] == "train":
                self.writer.add_scalar("train/bound", row["bound"], step)
            else:
                self.writer.add_scalar(f"{row['split']}/L_{row['k']}", row["bound"], step)
                self.writer.add_scalar(f"{row['split']}/elbo", row["elbo"], step)
                if row.get("bound_bpd") is not None:  # discrete data (vaelab.evaluation.units)
                    self.writer.add_scalar(f"{row['split']}/L_{row['k']}_bits_per_dim", row["bound_bpd"], step)
                    self.writer.add_scalar(f"{row['split']}/elbo_bits_per_dim", row["elbo_bpd"], step)
        if any(row["kind"] != "train" for row in rows):
            samples, reconstructions = self._pictures(model)
            self.writer.add_images("samples", samples, step)
            self.writer.add_images("reconstructions", reconstructions, step)
        self.writer.flush()

    @torch.no_grad()
    def _pictures(self, model: HelmholtzMachine) -> tuple[torch.Tensor, torch.Tensor]:
        """E[x | z] of z ~ p(z), and test images stacked above their reconstructions: ``[n, C, H, W]`` in [0, 1]."""
        from vaelab.models.sampling import sample

        device = next(model.parameters()).device
        generator = torch.Generator(device).manual_seed(self.seed)  # the pictures' own stream
        samples = model.likelihood(sample(model.prior_distribution(), (GRID_IMAGES,), generator)).mean
        x = self.test_images.to(device)
        reconstructions = model.likelihood(model.posterior(x).mean).mean
        draw = lambda rows: rows.clamp(0, 1).reshape(-1, *self.image_shape).cpu()  # noqa: E731
        return draw(samples), draw(torch.cat([x, reconstructions]))

    def close(self) -> None:
        self.writer.close()
