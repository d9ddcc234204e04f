"""edgeops's per-sample gradient rule for depthwise convolutions gives the per-sample gradients autograd gives one row
at a time (the definition DP-SGD's clipping rests on), and a wrong rule is caught by the same comparison."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
from opacus import GradSampleModule
from torch import nn

from edgeops.errors import TrainingError
from edgeops.models import DepthwiseConv2d, MobileNet, mobilenet_channels
from edgeops.training.grad_samplers import depthwise_conv_grad_sample, register_grad_samplers

TOLERANCE = 1e-4


def depthwise_net(stride: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 6, 1),
        DepthwiseConv2d(6, 6, 3, stride, 1, groups=6),
        nn.ReLU(),
        DepthwiseConv2d(6, 6, 3, 1, 1, groups=6, bias=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    )


def per_row_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The definition: each row's gradient, by plain autograd on that row alone."""
    rows = []
    for row in range(len(x)):
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x[row : row + 1]), y[row : row + 1], reduction="sum").backward()
        rows.append({name: p.grad.detach().clone() for name, p in model.named_parameters()})
    return {name: torch.stack([r[name] for r in rows]) for name in rows[0]}


def hooks_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    wrapped = GradSampleModule(model, loss_reduction="sum")
    nn.functional.cross_entropy(wrapped(x), y, reduction="sum").backward()
    gradients = {name: p.grad_sample.detach().clone() for name, p in model.named_parameters()}
    wrapped._close()
    return gradients


def worst_relative_error(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> float:
    return max(float((got[name] - want[name]).norm() / want[name].norm()) for name in want)


@contextmanager
def depthwise_rule(rule: Callable[..., Any]) -> Iterator[None]:
    saved = GradSampleModule.GRAD_SAMPLERS.get(DepthwiseConv2d)
    GradSampleModule.GRAD_SAMPLERS[DepthwiseConv2d] = rule
    try:
        yield
    finally:
        if saved is None:
            GradSampleModule.GRAD_SAMPLERS.pop(DepthwiseConv2d)
        else:
            GradSampleModule.GRAD_SAMPLERS[DepthwiseConv2d] = saved


@pytest.mark.parametrize("stride, size", [(1, 7), (2, 8), (2, 9)])
def test_depthwise_rule_matches_per_row_autograd(stride: int, size: int) -> None:
    register_grad_samplers()
    model = depthwise_net(stride)
    x, y = torch.randn(5, 2, size, size), torch.tensor([0, 1, 2, 1, 0])
    assert worst_relative_error(hooks_gradients(model, x, y), per_row_gradients(model, x, y)) < TOLERANCE


def test_a_wrong_rule_is_caught() -> None:
    """A rule that forgets the stride (reads the input densely) gives gradients of the right shape and the wrong
    values: the comparison above must fail on it, or it could not catch a real error either."""

    def ignores_stride(layer: DepthwiseConv2d, activations: list[torch.Tensor], backprops: torch.Tensor) -> Any:
        dense = DepthwiseConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, 1, layer.padding)
        dense.weight, dense.bias = layer.weight, layer.bias
        upsampled = nn.functional.interpolate(backprops, size=activations[0].shape[2:])
        return depthwise_conv_grad_sample(dense, activations, upsampled)

    model = depthwise_net(stride=2)
    x, y = torch.randn(5, 2, 8, 8), torch.tensor([0, 1, 2, 1, 0])
    with depthwise_rule(ignores_stride):
        got = hooks_gradients(model, x, y)
    assert worst_relative_error(got, per_row_gradients(model, x, y)) > 100 * TOLERANCE


def test_mobilenet_depthwise_layers_get_the_rule() -> None:
    """Every depthwise convolution of the MobileNet family is a DepthwiseConv2d (so hooks uses the rule), and only
    those: a pointwise or full convolution keeps Opacus's own rule."""

    class Spec:
        family, channels, hidden, activation, norm = "mobilenet", [], [], "relu", "none"
        width_multiplier, resolution = 0.5, 16

    model = MobileNet(Spec(), (1, 8, 8), 10, np.zeros(64), np.full(64, 16.0))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    depthwise = [m for m in convs if isinstance(m, DepthwiseConv2d)]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels > 1 for m in depthwise)
    assert all(m.groups == 1 for m in convs if not isinstance(m, DepthwiseConv2d))
    assert model.features[0].out_channels == mobilenet_channels(0.5)["stem"]


def test_the_rule_refuses_a_layer_it_does_not_cover() -> None:
    layer = DepthwiseConv2d(4, 4, 3, 1, 2, dilation=2, groups=4)
    with pytest.raises(TrainingError, match="no dilation"):
        depthwise_conv_grad_sample(layer, [torch.randn(2, 4, 6, 6)], torch.randn(2, 4, 6, 6))
