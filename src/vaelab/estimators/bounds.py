"""The importance-weighted bound L_k (Burda, Grosse & Salakhutdinov 2015; the homework's section 1.4).

    L_k(x) = E[ log (1/k) sum_{i=1}^k p(x, z_i) / q(z_i | x) ],   z_i ~ q(z | x),
    L_1 = ELBO <= L_k <= L_{k+1} <= log p(x).

The estimate is formed in log space and accumulated over chunks of samples with a running
``logaddexp``, so memory is bounded by ``max_rows`` decoder rows whatever k is. Decoders with one
ReLU hidden layer are scored by active-unit folding where it pays (:mod:`vaelab.estimators.folding`),
on the same draws and to the same numbers up to rounding.
"""

from __future__ import annotations

import math

import torch

from vaelab.estimators import folding
from vaelab.estimators.pareto import k_hat_of_largest, tail_length
from vaelab.models import HelmholtzMachine
from vaelab.models.sampling import sample_and_log_prob
from vaelab.objectives.core import block_bound, importance_samples
from vaelab.progress import image_batches

__all__ = ["block_bound", "bound_and_k_hat", "bound_curve", "evaluate_bound", "evaluate_bound_and_k_hat", "evaluate_bound_curve_and_k_hat", "importance_weighted_bound", "log_weights_in_chunks", "mean_and_standard_error", "plus_minus"]

# Decoder rows (samples x examples) scored at once: 4096 rows of 784 pixels is ~13 MB of logits.
DEFAULT_MAX_ROWS = 4096
# Decoder outputs held at once (64 MiB of float32): 4,096 rows of a Bernoulli or Gaussian decoder
# of MNIST or Frey Face are far below it; a categorical decoder of CIFAR-10 (256 heads on 3,072
# sub-pixels, 786,432 numbers a row) takes 21 rows, where 4,096 would hold 12 GiB per tensor.
DECODER_NUMBERS_AT_ONCE = 2**24


def decoder_rows(model: HelmholtzMachine, max_rows: int = DEFAULT_MAX_ROWS) -> int:
    """``max_rows``, or fewer where one row's decoder output is wide: rows whose outputs fit
    :data:`DECODER_NUMBERS_AT_ONCE` (at least one). A decoder that does not give its width
    (``output_numbers`` 0, e.g. a hand-written layer) keeps ``max_rows``."""
    width = getattr(model.generative, "output_numbers", 0)
    return max(1, min(max_rows, DECODER_NUMBERS_AT_ONCE // width)) if width else max_rows
# Samples x examples whose z are drawn before a foldable decoder scores them, so that one fold of
# each image serves all its samples: 2^18 rows of a 16-D z is 16 MB.
FOLD_BLOCK_ROWS = 2**18


def _log_weight_chunks(model, x, num_samples, generator, max_rows):
    """Yield ``[chunk, B]`` log-weights of x until ``num_samples`` per row, ``max_rows`` decoder rows at a time.

    With a foldable decoder the chunks are blocks of up to ``FOLD_BLOCK_ROWS`` rows; z is drawn
    chunk by chunk all the same, so the draws (and the generator's state after) do not change.
    """
    posterior = model.posterior(x)
    max_rows = decoder_rows(model, max_rows)
    samples_per_chunk = max(1, max_rows // x.shape[0])
    decoder = folding.foldable_decoder(model)
    if decoder is None:
        for start in range(0, num_samples, samples_per_chunk):
            yield importance_samples(model, x, min(samples_per_chunk, num_samples - start), generator, posterior).log_weights
        return
    samples_per_block = samples_per_chunk * max(1, FOLD_BLOCK_ROWS // (samples_per_chunk * x.shape[0]))
    for block_start in range(0, num_samples, samples_per_block):
        block = min(samples_per_block, num_samples - block_start)
        draws = [sample_and_log_prob(posterior, (min(samples_per_chunk, block - start),), generator) for start in range(0, block, samples_per_chunk)]
        z, log_proposal = (torch.cat(parts) for parts in zip(*draws))
        log_likelihood = folding.log_likelihood(model, decoder, x, z, max_rows)
        yield model.prior_distribution().log_prob(z) + log_likelihood - log_proposal


@torch.no_grad()
def importance_weighted_bound(
    model: HelmholtzMachine,
    x: torch.Tensor,
    k: int,
    generator: torch.Generator | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> torch.Tensor:
    """One-draw estimate of L_k for each row of x ``[B, D_x]``; returns ``[B]`` nats."""
    return _bound(model, x, k, generator, max_rows, keep=0)[0]


@torch.no_grad()
def bound_and_k_hat(
    model: HelmholtzMachine,
    x: torch.Tensor,
    k: int,
    generator: torch.Generator | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`importance_weighted_bound` ``[B]`` (the same draws, the same numbers) and the Pareto k-hat
    ``[B]`` (float64; nan for k < 25) of each image's k weights (:mod:`vaelab.estimators.pareto`).

    Only a running top-(M + 1) of each image's log-weights is kept (M = the fitted tail's length,
    213 for k = 5000), so memory stays bounded by ``max_rows`` whatever k is.
    """
    bound, largest = _bound(model, x, k, generator, max_rows, keep=tail_length(k) + 1)
    return bound, k_hat_of_largest(largest, k)


def _bound(model, x, k, generator, max_rows, keep) -> tuple[torch.Tensor, torch.Tensor]:
    """L_k ``[B]`` by a running logaddexp over chunks, and the ``keep`` largest log-weights ``[<= keep, B]``."""
    if k < 1:
        raise ValueError(f"k must be a positive integer (got {k})")
    log_sum = torch.full((x.shape[0],), -math.inf, dtype=x.dtype, device=x.device)
    largest = torch.empty(0, x.shape[0], dtype=x.dtype, device=x.device)
    for log_weights in _log_weight_chunks(model, x, k, generator, max_rows):
        log_sum = torch.logaddexp(log_sum, torch.logsumexp(log_weights, 0))
        if keep:
            candidates = torch.cat([largest, log_weights])
            largest = torch.topk(candidates, min(keep, candidates.shape[0]), dim=0).values
    return log_sum - math.log(k), largest


@torch.no_grad()
def log_weights_in_chunks(
    model: HelmholtzMachine,
    x: torch.Tensor,
    num_samples: int,
    generator: torch.Generator | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> torch.Tensor:
    """All ``[num_samples, B]`` log-weights of x ``[B, D_x]``, drawn ``max_rows`` decoder rows at a time."""
    return torch.cat(list(_log_weight_chunks(model, x, num_samples, generator, max_rows)))


@torch.no_grad()
def bound_curve(
    model: HelmholtzMachine,
    images: torch.Tensor,
    ks: tuple[int, ...],
    generator: torch.Generator | None = None,
    batch_size: int = 100,
    progress: str | None = None,
) -> dict[int, torch.Tensor]:
    """Per-image L_k ``[N]`` for every k in ``ks``, from one set of max(ks) samples per image.

    Every k must divide max(ks) (e.g. 1, 2, 5, 10, ..., 1000): the cost is that of L_max(ks) alone.
    ``progress``: the title of a progress bar with an ETA (None: none).
    """
    return _curve(model, images, ks, generator, batch_size, progress, k_hat=False)[0]


@torch.no_grad()
def evaluate_bound_curve_and_k_hat(
    model: HelmholtzMachine,
    images: torch.Tensor,
    ks: tuple[int, ...],
    generator: torch.Generator | None = None,
    batch_size: int = 100,
    progress: str | None = None,
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """:func:`bound_curve` and each image's Pareto k-hat ``[N]`` (float64) of its max(ks) weights.

    Its L_max(ks) is :func:`evaluate_bound_and_k_hat`'s with k = max(ks) on the same generator: the
    same draws, the same k-hat, and the same bound up to the rounding of one log-sum-exp against a
    running one (none where a foldable decoder takes all of an image's samples in one block). So an
    evaluation of L_1000 gives the whole curve at no further cost. Memory: max(ks) log-weights per
    image of a batch (400 KB for 1000 samples of 100 images).
    """
    return _curve(model, images, ks, generator, batch_size, progress, k_hat=True)


def _curve(model, images, ks, generator, batch_size, progress, k_hat) -> tuple[dict[int, torch.Tensor], torch.Tensor | None]:
    total = max(ks)
    parameter = next(model.parameters())
    curves: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    k_hats = []
    for batch in image_batches(images, batch_size, progress):
        log_weights = log_weights_in_chunks(model, batch.to(parameter.device), total, generator)
        for k in ks:
            curves[k].append(block_bound(log_weights, k).cpu())
        if k_hat:
            largest = torch.topk(log_weights, min(tail_length(total) + 1, total), dim=0).values
            k_hats.append(k_hat_of_largest(largest, total).cpu())
    return {k: torch.cat(values) for k, values in curves.items()}, torch.cat(k_hats) if k_hat else None


@torch.no_grad()
def evaluate_bound(
    model: HelmholtzMachine,
    images: torch.Tensor,
    k: int,
    generator: torch.Generator | None = None,
    batch_size: int = 100,
    progress: str | None = None,
) -> torch.Tensor:
    """L_k for every row of ``images`` ``[N, D_x]``, in batches; returns ``[N]`` nats.
    ``progress``: the title of a progress bar with an ETA (None: none)."""
    parameter = next(model.parameters())
    bounds = [
        importance_weighted_bound(model, batch.to(parameter.device), k, generator).cpu()
        for batch in image_batches(images, batch_size, progress)
    ]
    return torch.cat(bounds)


@torch.no_grad()
def evaluate_bound_and_k_hat(
    model: HelmholtzMachine,
    images: torch.Tensor,
    k: int,
    generator: torch.Generator | None = None,
    batch_size: int = 100,
    progress: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`evaluate_bound` ``[N]`` (the same draws and numbers) with each image's Pareto k-hat ``[N]``
    (float64). ``progress``: the title of a progress bar with an ETA (None: none)."""
    parameter = next(model.parameters())
    pairs = [bound_and_k_hat(model, batch.to(parameter.device), k, generator) for batch in image_batches(images, batch_size, progress)]
    return torch.cat([bound.cpu() for bound, _ in pairs]), torch.cat([k_hat.cpu() for _, k_hat in pairs])


def mean_and_standard_error(values: torch.Tensor) -> tuple[float, float]:
    """Mean of per-example values ``[N]`` and its standard error std / sqrt(N)."""
    values = values.double()
    if values.numel() < 2:
        return values.mean().item(), float("nan")
    return values.mean().item(), (values.std() / math.sqrt(values.numel())).item()


def plus_minus(mean: float, stderr: float, digits: int = 3, unit: str = "nats") -> str:
    """'-95.123 ± 0.456 nats' from :func:`mean_and_standard_error`'s pair; where there is no standard
    error (one image: nan), '-95.123 nats (one image: no standard error)' instead of '± nan'."""
    unit = f" {unit}" if unit else ""
    if math.isnan(stderr):
        return f"{mean:.{digits}f}{unit} (one image: no standard error)"
    return f"{mean:.{digits}f} ± {stderr:.{digits}f}{unit}"
