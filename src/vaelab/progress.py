"""Progress bars with an ETA for the long steps (evaluation passes, bound curves, quadrature).

A step that walks a split in batches iterates :func:`image_batches`; given a description it shows
a tqdm bar counting images, with their rate and the time left, on stderr, and removes it when done.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from tqdm import tqdm


def image_batches(images: torch.Tensor, batch_size: int, description: str | None = None) -> Iterator[torch.Tensor]:
    """``images.split(batch_size)``, with a progress bar titled ``description`` (None: no bar)."""
    bar = tqdm(total=images.shape[0], desc=description, unit="img", disable=description is None, leave=False)
    try:
        for batch in images.split(batch_size):
            yield batch
            bar.update(batch.shape[0])
    finally:
        bar.close()
