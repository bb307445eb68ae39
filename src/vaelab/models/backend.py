"""Dense layers through the fastest CPU matrix-multiply backend available.

On x86 CPUs PyTorch sends fp32 ``nn.Linear`` to MKL's sgemm; oneDNN's kernels (reached through
``torch.ops.mkldnn._linear_pointwise``, the op Inductor uses) run the decoder's matmuls faster
there, with the activation fused (benchmarks/ measures both). That op has no autograd formula,
so it serves only gradient-free fp32 CPU calls, i.e. evaluation; everything else, and every
machine where the op is missing, takes ``F.linear``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# Activations that oneDNN fuses into the matmul; the others are applied after it.
_FUSED_ACTIVATIONS = {"relu", "tanh", "sigmoid"}
_ACTIVATION_FUNCTIONS = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "elu": F.elu, "softplus": F.softplus, "none": lambda x: x}


def _onednn_linear_available() -> bool:
    try:
        torch.ops.mkldnn._linear_pointwise(torch.ones(1, 1), torch.ones(1, 1), torch.ones(1), "none", [], "")
    except (AttributeError, RuntimeError):
        return False
    return True


ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and _onednn_linear_available()


def linear(inputs: torch.Tensor, layer: nn.Linear, activation: str = "none", *, use_onednn: bool | None = None) -> torch.Tensor:
    """activation(inputs @ W^T + b) for inputs ``[..., in]``; returns ``[..., out]``.

    ``use_onednn=None`` picks oneDNN when it applies (CPU, fp32, no gradient needed).
    """
    if use_onednn is None:
        use_onednn = (
            ONEDNN_LINEAR
            and not torch.is_grad_enabled()
            and inputs.device.type == "cpu"
            and inputs.dtype == torch.float32
            and layer.weight.dtype == torch.float32
        )
    if not use_onednn:
        return _ACTIVATION_FUNCTIONS[activation](F.linear(inputs, layer.weight, layer.bias))
    fused = activation if activation in _FUSED_ACTIVATIONS else "none"
    flat = inputs.reshape(-1, inputs.shape[-1])
    outputs = torch.ops.mkldnn._linear_pointwise(flat, layer.weight, layer.bias, fused, [], "")
    outputs = outputs.reshape(*inputs.shape[:-1], outputs.shape[-1])
    return outputs if fused == activation else _ACTIVATION_FUNCTIONS[activation](outputs)


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
