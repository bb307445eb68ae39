"""Stochastic layers around any network: the user's own, or the built-in convolutional ones.

The Helmholtz machine and every objective see flat tensors (x ``[..., D]`` with D = prod(data_shape),
z ``[..., latent_dim]``) with any number of leading sample dimensions (``[k, B, D]``). A network
written for images takes ``[B, *data_shape]``; :class:`NetworkLayer` flattens the leading
dimensions into one batch, reshapes each row to the network's input shape, calls it, checks the
output shape and restores the leading dimensions.

The contract of a network (issue 13):

- encoder: x ``[B, *data_shape]`` -> ``[B, 2 * latent_dim]``, first half the mean, second half the
  raw scale, mapped to sigma = softplus(raw) + MIN_SCALE as in :class:`~vaelab.models.layers.DiagonalGaussianLayer`;
- decoder: z ``[B, latent_dim]`` -> ``[B, heads, *data_shape]``, the likelihood family's ``heads``
  numbers per sub-pixel (:mod:`vaelab.likelihoods`; ``[B, *data_shape]`` is accepted where heads is 1):

  | ``--likelihood`` | heads | per sub-pixel |
  |---|---|---|
  | bernoulli | 1 | the logit |
  | gaussian | 2 | raw mean (sigmoid or linear), raw scale (sigma = softplus(raw) + MIN_SCALE) |
  | categorical | levels | one logit per level (a softmax) |
  | discretized-logistic, discretized-gaussian | 2 | mean (centred units: [-1, 1] is the data's range), log-scale |
  | discretized-logistic-mixture | 3K (4K for C = 3) | mixture logits, means, log-scales (and RGB coupling coefficients): :mod:`vaelab.likelihoods.mixture` |

  A decoder factory that takes a ``heads`` argument is called with it
  (``FACTORY(data_shape=..., latent_dim=..., heads=...)``); one that does not must return the
  shape of the family it is used with;
- either is called at any batch size B (training, evaluation and sampling batches differ), takes
  float32 and returns float32 (the input's dtype), and is switched to eval mode (``module.eval()``)
  for every evaluation and back to train mode for training (BatchNorm, dropout).

Whatever the user's code raises (``SystemExit`` included) becomes one line naming it
(:func:`call_user_code`), at construction as at every call.
"""

from __future__ import annotations

import contextlib
import math
import signal
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution

from vaelab.errors import ConfigError, Interrupted, VaelabError, one_line
from vaelab.likelihoods.family import LikelihoodFamily
from vaelab.models.layers import StochasticLayer


def call_user_code(name: str, what: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)``, with anything the user's code raises turned into a one-line
    ConfigError "``name``: ``what`` (Type: first line)": exceptions, ``SystemExit`` (a
    ``sys.exit(0)`` must not end vaelab silently) and a ``KeyboardInterrupt`` that no Ctrl-C can
    have caused (one that is not vaelab's :class:`~vaelab.errors.Interrupted` while SIGINT has a
    handler other than Python's default, as during training)."""
    try:
        return function(*args, **kwargs)
    except VaelabError:
        raise
    except KeyboardInterrupt as error:
        if isinstance(error, Interrupted) or signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            raise  # may be the user's Ctrl-C: it stays an interrupt
        raise ConfigError(f"{name}: {what} ({one_line(error, typed=True)})") from None
    except (Exception, SystemExit) as error:
        raise ConfigError(f"{name}: {what} ({one_line(error, typed=True)})") from None


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` and every submodule in eval mode while the block runs, then each back in its own
    previous mode: an evaluation neither drops units nor updates BatchNorm's running statistics
    with the images it scores, and training goes on as it was."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.train(training)


class NetworkLayer(StochasticLayer):
    """A distribution of a ``family`` whose parameters a network computes from inputs of any shape.

    Args:
        network: module mapping ``[B, *input_shape]`` to ``[B, *output_shape]``.
        input_shape: shape of one input (its flat width is what the layer takes, ``[..., prod]``).
        output_shape: shape of the network's output for one input, ``family.heads`` times the
            event's numbers, heads first: a decoder's ``(heads, *data_shape)`` (with one head,
            ``data_shape`` alone is accepted too), an encoder's ``(2 * latent_dim,)``.
        family: the :class:`~vaelab.likelihoods.family.LikelihoodFamily` of the distribution
            (an encoder's: a Gaussian with linear means over ``(latent_dim,)``).
        name: how errors name the network (e.g. its factory's import path).
    """

    def __init__(self, network: nn.Module, input_shape: tuple[int, ...], output_shape: tuple[int, ...], family: LikelihoodFamily, name: str = "network"):
        super().__init__()
        self.network = network
        self.input_shape = tuple(input_shape)
        self.output_shape = tuple(output_shape)
        self.family = family
        self.name = name
        self.event_size = math.prod(self.output_shape) // family.heads
        # one head: the head dimension may be left out, [B, *data_shape] (the decoders of before issue 31)
        self.squeezed_shape = self.output_shape[1:] if family.heads == 1 and len(self.output_shape) > 1 else None

    @property
    def output_numbers(self) -> int:
        return math.prod(self.output_shape)

    def parameters_of(self, inputs: torch.Tensor) -> torch.Tensor:
        """The network's output for inputs ``[..., prod(input_shape)]``, as ``[..., heads, event_size]``."""
        leading = inputs.shape[:-1]
        batch = inputs.reshape(-1, *self.input_shape)  # [k, B, D] -> [k * B, *input_shape]
        outputs = call_user_code(self.name, f"failed on a batch of {batch.shape[0]}", self.network, batch)
        # checked at every call, not once: a network may be right for one batch size and not another
        if not isinstance(outputs, torch.Tensor):
            raise ConfigError(f"{self.name}: returned a {type(outputs).__name__} for input {list(batch.shape)}, not a tensor")
        if outputs.dtype != batch.dtype:
            raise ConfigError(f"{self.name}: returned {outputs.dtype} for {batch.dtype} input {list(batch.shape)}; expected {batch.dtype}")
        if tuple(outputs.shape[1:]) not in (self.output_shape, self.squeezed_shape) or outputs.shape[0] != batch.shape[0]:
            expected = [batch.shape[0], *(self.squeezed_shape or self.output_shape)]
            raise ConfigError(f"{self.name}: returned shape {list(outputs.shape)} for input {list(batch.shape)}; expected {expected}")
        return outputs.reshape(*leading, self.family.heads, self.event_size)

    def forward(self, inputs: torch.Tensor) -> Distribution:
        return self.family.distribution(self.parameters_of(inputs))

    def log_prob(self, inputs: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """log p(value | inputs) ``[...]`` from the family (for Bernoulli logits l, sum_d [v_d l_d - softplus(l_d)], exact for grey v too)."""
        return self.family.log_prob(self.parameters_of(inputs), value)
