"""Stochastic layers around any network: the user's own, or the built-in convolutional ones.

The Helmholtz machine and every objective see flat tensors (x ``[..., D]`` with D = prod(data_shape),
z ``[..., latent_dim]``) with any number of leading sample dimensions (``[k, B, D]``). A network
written for images takes ``[B, *data_shape]``; :class:`NetworkLayer` flattens the leading
dimensions into one batch, reshapes each row to the network's input shape, calls it, checks the
output shape and restores the leading dimensions.

The contract of a network (issue 13):

- encoder: x ``[B, *data_shape]`` -> ``[B, 2 * latent_dim]``, first half the mean, second half the
  raw scale, mapped to sigma = softplus(raw) + MIN_SCALE as in :class:`~vaelab.models.layers.DiagonalGaussianLayer`;
- decoder: z ``[B, latent_dim]`` -> ``[B, *data_shape]`` Bernoulli logits, or ``[B, 2, *data_shape]``
  (mean and raw scale) for a Gaussian likelihood;
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
from torch.distributions import Bernoulli, Independent, Normal
from torch.nn import functional as F

from vaelab.errors import ConfigError, Interrupted, VaelabError, one_line
from vaelab.models.layers import MIN_SCALE, StochasticLayer


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
    """A distribution whose parameters a network computes from inputs of any shape.

    Args:
        network: module mapping ``[B, *input_shape]`` to ``[B, *output_shape]``.
        input_shape: shape of one input (its flat width is what the layer takes, ``[..., prod]``).
        output_shape: shape of the network's output for one input: the event's shape for
            'bernoulli' (logits); for 'gaussian' twice the event's numbers, the means first, then
            the raw scales (an encoder's ``(2 * latent_dim,)``, a decoder's ``(2, *data_shape)``).
        family: 'bernoulli' or 'gaussian'.
        name: how errors name the network (e.g. its factory's import path).
    """

    def __init__(self, network: nn.Module, input_shape: tuple[int, ...], output_shape: tuple[int, ...], family: str, name: str = "network"):
        super().__init__()
        if family not in ("bernoulli", "gaussian"):
            raise ValueError(f"unknown family {family!r}")
        self.network = network
        self.input_shape = tuple(input_shape)
        self.output_shape = tuple(output_shape)
        self.family = family
        self.name = name
        self.event_size = math.prod(self.output_shape) // (2 if family == "gaussian" else 1)

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
        if tuple(outputs.shape) != (batch.shape[0], *self.output_shape):
            raise ConfigError(
                f"{self.name}: returned shape {list(outputs.shape)} for input {list(batch.shape)}; expected {[batch.shape[0], *self.output_shape]}"
            )
        return outputs.reshape(*leading, -1, self.event_size)

    def forward(self, inputs: torch.Tensor) -> Independent:
        outputs = self.parameters_of(inputs)
        if self.family == "bernoulli":
            return Independent(Bernoulli(logits=outputs[..., 0, :], validate_args=False), 1, validate_args=False)
        scale = F.softplus(outputs[..., 1, :]) + MIN_SCALE
        return Independent(Normal(outputs[..., 0, :], scale, validate_args=False), 1, validate_args=False)

    def log_prob(self, inputs: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """log p(value | inputs) ``[...]``; for Bernoulli logits l, sum_d [v_d l_d - softplus(l_d)] (exact for grey v too)."""
        if self.family == "bernoulli":
            logits = self.parameters_of(inputs)[..., 0, :]
            return (logits * value).sum(-1) - F.softplus(logits).sum(-1)
        return self(inputs).log_prob(value)
