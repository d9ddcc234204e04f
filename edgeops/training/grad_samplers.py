"""Per-sample gradient rules edgeops gives Opacus for its own layer types (used in grad_sample_mode `hooks`).

Why hand-written: Opacus 1.6's convolution rule (opacus/grad_sample/conv.py) computes, for a grouped convolution, the
product of every output channel with every input channel and keeps the diagonal blocks. For a depthwise layer with C
channels that is C times the work: on the MobileNet family, `hooks` with Opacus's rule took 6.7x the non-private step
time, with this rule 1.54x (`hooks_generic` and `hooks` in benchmarks/results/dp_grad_sample_modes.md). The rule below
computes only what a depthwise layer has: one filter per channel. tests/unit/test_grad_samplers.py compares it with
per-sample gradients from autograd, one row at a time.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeops.errors import TrainingError
from edgeops.models import DepthwiseConv2d


def depthwise_conv_grad_sample(
    layer: DepthwiseConv2d, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[torch.Tensor, torch.Tensor]:
    """Per-sample gradients of a depthwise convolution's weight (N, C, 1, kh, kw) and bias (N, C).

    The weight gradient of row n, channel c is the correlation of that channel's (padded) input with its output
    gradient, sampled at the layer's stride: a convolution whose kernel is the output gradient, dilated by the stride.
    Run as one grouped convolution with a group per (row, channel), so it costs about what the layer's forward pass
    costs, and it needs no unfolded copy of the input."""
    if layer.dilation != (1, 1) or layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        raise TrainingError(f"{layer}: the depthwise rule takes zero padding given in pixels and no dilation")
    inputs = activations[0].to(backprops.dtype)
    rows, channels = inputs.shape[0], inputs.shape[1]
    kernel_h, kernel_w = layer.kernel_size
    correlation = nn.functional.conv2d(
        inputs.reshape(1, rows * channels, *inputs.shape[2:]),
        backprops.reshape(rows * channels, 1, *backprops.shape[2:]),
        padding=layer.padding,
        dilation=layer.stride,
        groups=rows * channels,
    )
    # The correlation can run past the kernel's extent where the padded input is longer than the strided window.
    weight = correlation.reshape(rows, channels, 1, *correlation.shape[2:])[..., :kernel_h, :kernel_w]
    grads: dict[torch.Tensor, torch.Tensor] = {layer.weight: weight.contiguous()} if layer.weight.requires_grad else {}
    if layer.bias is not None and layer.bias.requires_grad:
        grads[layer.bias] = backprops.sum(dim=(2, 3))
    return grads


def register_grad_samplers() -> None:
    """Give Opacus the rules above (idempotent; Opacus keys its rules by the layer's exact type)."""
    from opacus.grad_sample import register_grad_sampler

    register_grad_sampler(DepthwiseConv2d)(depthwise_conv_grad_sample)
