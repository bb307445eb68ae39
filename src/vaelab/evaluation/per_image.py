"""Per-image results saved beside a run's metrics: one compressed ``.npz`` per evaluation row.

A metrics row holds a mean and its standard error; comparing two runs image by image (a paired
difference, whose standard error is far smaller than either run's when the images vary more than
the runs do) needs every image's value. Each evaluation writes them into
``bounds-<kind>-<split>-epoch<E>-<estimator>.npz`` (e.g. ``bounds-eval-test-epoch10-k1000.npz``),
float32, with ``image_index`` ``[N]`` (the position of each image in the split as evaluated, so
that two files pair up even when torchrun gathered them in another order), and the row names it
in ``bounds_file``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vaelab.errors import RunError
from vaelab.runio import write_arrays_atomic

__all__ = ["bounds_file_name", "load_per_image", "save_per_image"]


def bounds_file_name(kind: str, split: str, epoch: int, estimator: str) -> str:
    """``bounds-<kind>-<split>-epoch<E>-<estimator>.npz``; ``estimator`` says what was measured, e.g. 'k1000' or 'ais-T100-M16'."""
    return f"bounds-{kind}-{split}-epoch{epoch}-{estimator}.npz"


def gaps_file(split: str, epoch: int) -> str:
    """``gaps-<split>-epoch<E>.npz``, the per-image inference gaps of :func:`vaelab.evaluation.gaps.evaluate_gaps_run`."""
    return f"gaps-{split}-epoch{epoch}.npz"


def save_per_image(path: Path, image_index: torch.Tensor, **values: torch.Tensor) -> None:
    """Write ``image_index`` ``[N]`` (int64) and every named per-image tensor ``[N]`` (as float32) atomically."""
    arrays = {"image_index": image_index.cpu().numpy().astype(np.int64)}
    arrays.update({name: value.detach().cpu().numpy().astype(np.float32) for name, value in values.items()})
    write_arrays_atomic(Path(path), arrays)


def load_per_image(path: Path) -> dict[str, np.ndarray]:
    """Every array of a per-image file, by name.

    Raises:
        RunError: the file is missing, unreadable, or lacks ``image_index``.
    """
    try:
        with np.load(path, allow_pickle=False) as arrays:
            loaded = {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError, KeyError) as error:
        raise RunError(f"{path}: cannot read per-image results ({str(error).splitlines()[0][:200] if str(error) else type(error).__name__})") from None
    if "image_index" not in loaded:
        raise RunError(f"{path}: not a per-image results file (no image_index)")
    return loaded
