"""Dense layers through the fastest CPU matrix-multiply backend available.

On x86 CPUs PyTorch sends fp32 ``nn.Linear`` to MKL's sgemm; oneDNN's kernels (reached through
``torch.ops.mkldnn._linear_pointwise``, the op Inductor uses) run the decoder's matmuls faster
there, with the activation fused (benchmarks/ measures both). That op has no autograd formula,
so it serves only gradient-free CPU calls, i.e. evaluation; everything else, and every machine
where the op is missing, takes ``F.linear``.

:func:`matmul_precision` lets dense layers multiply in bfloat16 (about 2x the fp32 rate on CPUs
with AVX512-BF16; GPUs have bf16 units too), with fp32 inputs, outputs and parameters: an option
of evaluation (``vaelab evaluate --precision bf16``) and of training (``vaelab train --precision
bf16``, where gradients flow back through the casts to the fp32 parameters that Adam updates).
Training in fp32 gains little from oneDNN on the benchmark's CPU (a batch-100 AEVB step with
every product through oneDNN ran within 5% of one through MKL), so the autograd path keeps ``F.linear``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

# Activations that oneDNN fuses into the matmul; the others are applied after it.
_FUSED_ACTIVATIONS = {"relu", "tanh", "sigmoid"}
ACTIVATION_FUNCTIONS = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "elu": F.elu, "softplus": F.softplus, "none": lambda x: x}


def _onednn_linear_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether oneDNN's linear op exists in this PyTorch and runs in ``dtype`` on this CPU."""
    try:
        torch.ops.mkldnn._linear_pointwise(*(torch.ones(shape, dtype=dtype) for shape in ((1, 1), (1, 1), (1,))), "none", [], "")
    except (AttributeError, RuntimeError):
        return False
    return True


ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and _onednn_linear_available()
# oneDNN has no bf16 linear on CPUs without AVX-512 (e.g. AVX2-only ones): "could not create a
# primitive descriptor"; bf16 products there take F.linear.
ONEDNN_LINEAR_BF16 = ONEDNN_LINEAR and _onednn_linear_available(torch.bfloat16)
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
_matmul_dtype = torch.float32  # set by matmul_precision


@contextlib.contextmanager
def matmul_precision(name: str) -> Iterator[None]:
    """Within the block, dense layers multiply in ``PRECISIONS[name]`` (fp32 in, fp32 out).

    Process-wide, like ``torch.set_num_threads``. Each layer's output (its activation included)
    carries bf16 rounding (8 bits of mantissa), the same rounding the next layer's matmul applies
    to it anyway; parameters, log-likelihoods and everything outside the dense layers stay fp32.
    """
    global _matmul_dtype
    previous, _matmul_dtype = _matmul_dtype, PRECISIONS[name]
    try:
        yield
    finally:
        _matmul_dtype = previous


def linear(inputs: torch.Tensor, layer: nn.Linear, activation: str = "none", *, use_onednn: bool | None = None) -> torch.Tensor:
    """activation(inputs @ W^T + b) for inputs ``[..., in]``; returns ``[..., out]``.

    ``use_onednn=None`` picks oneDNN when it applies (CPU, fp32 or bf16, no gradient needed).
    """
    weight, bias = layer.weight, layer.bias
    reduced = _matmul_dtype != torch.float32 and inputs.dtype == torch.float32
    if reduced:
        inputs, weight, bias = inputs.to(_matmul_dtype), weight.to(_matmul_dtype), bias.to(_matmul_dtype)
    if use_onednn is None:
        use_onednn = (
            ONEDNN_LINEAR
            and not torch.is_grad_enabled()
            and inputs.device.type == "cpu"
            and (inputs.dtype == torch.float32 or (inputs.dtype == torch.bfloat16 and ONEDNN_LINEAR_BF16))
            and weight.dtype == inputs.dtype
        )
    if not use_onednn:
        outputs = ACTIVATION_FUNCTIONS[activation](F.linear(inputs, weight, bias))
    else:
        fused = activation if activation in _FUSED_ACTIVATIONS else "none"
        flat = inputs.reshape(-1, inputs.shape[-1])
        outputs = torch.ops.mkldnn._linear_pointwise(flat, weight, bias, fused, [], "")
        outputs = outputs.reshape(*inputs.shape[:-1], outputs.shape[-1])
        outputs = outputs if fused == activation else ACTIVATION_FUNCTIONS[activation](outputs)
    return outputs.float() if reduced else outputs


class MLP(nn.Module):
    """``Linear -> activation`` for each hidden width; maps ``[..., in_features]`` to ``[..., out_features]``."""

    def __init__(self, in_features: int, hidden: tuple[int, ...], activation: str):
        super().__init__()
        widths = (in_features, *hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.activation = activation
        self.out_features = widths[-1]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            inputs = linear(inputs, layer, self.activation)
        return inputs
