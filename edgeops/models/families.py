"""Model families, DP-compatible by construction (GroupNorm or no normalisation, never BatchNorm).

Families: `cnn` (conv-pool blocks), `mlp`, and `mobilenet` (MobileNetV2-style depthwise-separable inverted residual
blocks with a width multiplier and an input resolution; see `MobileNet`).

Every model takes raw features (N, n_features) and scales them with the declared public bounds inside the
graph, so an exported artifact needs no preprocessing code on the device and no data-derived statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import nn

from edgeops.errors import TrainingError


class ArchitectureSpec(Protocol):
    """What the model families read of a spec.ModelSpec. Only attributes are read: a runtime's tool environment
    rebuilds models from an `Architecture` without pydantic."""

    @property
    def family(self) -> str: ...
    @property
    def channels(self) -> Sequence[int]: ...
    @property
    def hidden(self) -> Sequence[int]: ...
    @property
    def activation(self) -> str: ...
    @property
    def norm(self) -> str: ...


@dataclass(frozen=True)
class Architecture:
    """A model's architecture as `describe_architecture` records it (an ArchitectureSpec without pydantic)."""

    family: str
    channels: list[int]
    hidden: list[int]
    activation: str
    norm: str
    width_multiplier: float = 1.0
    resolution: int | None = None


ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
ImageShape = tuple[int, int, int]  # channels, height, width
Bounds = np.ndarray  # a declared public bound per input feature


class BoundsScaler(nn.Module):
    """(x - low) / (high - low) with the declared public bounds: a constant, not learned from the data."""

    low: torch.Tensor
    scale: torch.Tensor

    def __init__(self, low: np.ndarray, high: np.ndarray):
        super().__init__()
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(1.0 / np.where(high > low, high - low, 1.0), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.low) * self.scale


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(min(4, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise TrainingError(f"model.norm: {kind!r} is not DP-compatible (per-sample gradients need GroupNorm or none)")


class SmallCNN(nn.Module):
    """conv-act-pool blocks, then an optional hidden layer and a linear classifier. Input: flat pixels."""

    def __init__(self, spec: ArchitectureSpec, image_shape: ImageShape, n_classes: int, low: Bounds, high: Bounds):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.scaler = BoundsScaler(low, high)
        layers: list[nn.Module] = []
        channels, height, width = image_shape
        for out_channels in spec.channels:
            layers += [
                nn.Conv2d(channels, out_channels, 3, padding=1),
                _norm(spec.norm, out_channels),
                ACTIVATIONS[spec.activation](),
            ]
            if height >= 2 and width >= 2:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            channels = out_channels
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        width_in = channels * height * width
        for hidden in spec.hidden:
            head += [nn.Linear(width_in, hidden), ACTIVATIONS[spec.activation]()]
            width_in = hidden
        head.append(nn.Linear(width_in, n_classes))
        self.head = nn.Sequential(*head)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate representation (used for drift on embeddings)."""
        z = self.features(self.scaler(x).reshape(-1, *self.image_shape))
        return cast(torch.Tensor, self.head[:-1](z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.head(self.features(self.scaler(x).reshape(-1, *self.image_shape))))


class MLP(nn.Module):
    def __init__(self, spec: ArchitectureSpec, n_features: int, n_classes: int, low: np.ndarray, high: np.ndarray):
        super().__init__()
        self.scaler = BoundsScaler(low, high)
        layers: list[nn.Module] = []
        width_in = n_features
        for hidden in spec.hidden or [64]:
            layers += [nn.Linear(width_in, hidden), _norm_1d(spec.norm, hidden), ACTIVATIONS[spec.activation]()]
            width_in = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(width_in, n_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.body(self.scaler(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.head(self.body(self.scaler(x))))


def _norm_1d(kind: str, width: int) -> nn.Module:
    return nn.LayerNorm(width) if kind == "group" else _norm(kind, width)


# ---------------------------------------------------------------- MobileNet family
# MobileNetV2's inverted-residual stages (expansion t, output channels c, repeats n, first stride s), cut for inputs of
# 32x32 to 96x96: the stem keeps full resolution and the network downsamples 8x in all (so a resolution must be a
# multiple of 8). Channels are scaled by the width multiplier and rounded to a multiple of 8 (SIMD-friendly).
MOBILENET_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 3, 2), (6, 96, 2, 1))
MOBILENET_STEM = 32
MOBILENET_LAST = 512
MOBILENET_STRIDE = 8  # product of the stage strides (the stem has stride 1)


def make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding: nearest multiple of `divisor`, at least `divisor`, never below 90% of `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def mobilenet_channels(width_multiplier: float) -> dict[str, Any]:
    """The channel plan of a width multiplier: stem, each stage's output, the last 1x1 convolution."""
    return {
        "stem": make_divisible(MOBILENET_STEM * width_multiplier),
        "stages": [make_divisible(c * width_multiplier) for _, c, _, _ in MOBILENET_STAGES],
        "last": make_divisible(MOBILENET_LAST * max(1.0, width_multiplier)),
    }


def _mobilenet_norm(kind: str, channels: int) -> nn.Module:
    # GroupNorm is kept only so the cost of normalisation can be measured (benchmarks/realistic_int8.py): it does not
    # fold into the convolution, so every block pays for it at inference, and int8 pays twice (quantize/dequantize
    # around it).
    return nn.GroupNorm(min(8, channels), channels) if kind == "group" else nn.Identity()


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    if conv.bias is None:
        raise TrainingError(f"{conv} has no bias to initialise")
    return conv.bias


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise convolution (one filter per channel: groups == in_channels == out_channels). Its own type only so
    that DP-SGD can give it an exact per-sample gradient rule (edgeops.training.grad_samplers): Opacus's generic
    convolution rule forms every channel pair and keeps the diagonal, C times the work a depthwise layer needs.
    Exports, loads and runs as an nn.Conv2d (same parameters, same state_dict keys)."""


def _conv(c_in: int, c_out: int, *, kernel: int, stride: int, groups: int, norm: str, act: bool) -> list[nn.Module]:
    depthwise = groups > 1 and groups == c_in == c_out
    conv = (DepthwiseConv2d if depthwise else nn.Conv2d)(
        c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=True
    )
    # He initialisation (variance-preserving through ReLU; gain 1 for the linear projections): without normalisation the
    # default init shrinks the signal at every layer, and a first version pre-trained to chance accuracy (10%)
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu" if act else "linear")
    nn.init.zeros_(_bias(conv))
    layers: list[nn.Module] = [conv, _mobilenet_norm(norm, c_out)]
    return [*layers, nn.ReLU()] if act else layers


class InvertedResidual(nn.Module):
    """1x1 expansion -> 3x3 depthwise -> 1x1 linear projection, with a skip connection when shapes match.

    Norm-free (norm: none): the projection of a residual block starts at zero, so every block is the identity at
    initialisation and the signal's scale does not grow with depth (SkipInit/Fixup, De & Smith 2020; Zhang et al.
    2019). Nothing has to be folded at export: the graph is convolutions, ReLUs and adds only."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int, norm: str):
        super().__init__()
        hidden = c_in * expansion
        layers = _conv(c_in, hidden, kernel=1, stride=1, groups=1, norm=norm, act=True) if expansion != 1 else []
        layers += _conv(hidden, hidden, kernel=3, stride=stride, groups=hidden, norm=norm, act=True) + _conv(
            hidden, c_out, kernel=1, stride=1, groups=1, norm=norm, act=False
        )
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out
        if self.residual and norm == "none":
            projection = [m for m in self.block if isinstance(m, nn.Conv2d)][-1]
            nn.init.zeros_(projection.weight)
            nn.init.zeros_(_bias(projection))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, x + self.block(x) if self.residual else self.block(x))


class MobileNet(nn.Module):
    """MobileNetV2-class network for small images, DP-compatible (no BatchNorm). Input: flat pixels, scaled by the
    public bounds, resized in the graph to `resolution` x `resolution` when that differs from the image's size."""

    def __init__(self, spec: ArchitectureSpec, image_shape: ImageShape, n_classes: int, low: Bounds, high: Bounds):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.width_multiplier = float(getattr(spec, "width_multiplier", 1.0) or 1.0)
        self.resolution = int(getattr(spec, "resolution", None) or image_shape[1])
        norm = spec.norm
        self.scaler = BoundsScaler(low, high)
        plan = mobilenet_channels(self.width_multiplier)
        layers: list[nn.Module] = _conv(image_shape[0], plan["stem"], kernel=3, stride=1, groups=1, norm=norm, act=True)
        c_in = plan["stem"]
        for (expansion, _, repeats, stride), c_out in zip(MOBILENET_STAGES, plan["stages"], strict=False):
            for index in range(repeats):
                layers.append(InvertedResidual(c_in, c_out, stride if index == 0 else 1, expansion, norm))
                c_in = c_out
        layers += _conv(c_in, plan["last"], kernel=1, stride=1, groups=1, norm=norm, act=True)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(plan["last"], n_classes))

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        images = self.scaler(x).reshape(-1, *self.image_shape)
        if self.resolution != self.image_shape[1] or self.resolution != self.image_shape[2]:
            images = nn.functional.interpolate(
                images, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False
            )
        return cast(torch.Tensor, images)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.head[0](self.pool(self.features(self._images(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.head(self.pool(self.features(self._images(x)))))


def build_model(
    spec: ArchitectureSpec, n_features: int, n_classes: int, image_shape: Any, low: np.ndarray, high: np.ndarray
) -> nn.Module:
    if spec.family == "mobilenet":
        return MobileNet(spec, tuple(image_shape), n_classes, low, high)
    if spec.family == "cnn":
        return SmallCNN(spec, tuple(image_shape), n_classes, low, high)
    return MLP(spec, n_features, n_classes, low, high)


def describe_architecture(model: nn.Module) -> dict[str, Any]:
    """The exact architecture of a built (possibly pruned or distilled) model, read off its layers: with
    `build_from_architecture` it rebuilds a module whose state_dict loads strictly. JSON, so it can cross into a
    runtime's tool environment without pickling a module."""
    activation = next(name for name, kind in ACTIVATIONS.items() if any(isinstance(m, kind) for m in model.modules()))
    norms = {type(m) for m in model.modules()} & {nn.GroupNorm, nn.LayerNorm}
    description: dict[str, Any]
    if isinstance(model, MobileNet):
        if model.features[0].out_channels != mobilenet_channels(model.width_multiplier)["stem"]:
            raise TrainingError(
                "cannot describe a pruned MobileNet: its channels no longer follow the width multiplier"
            )
        description = {
            "family": "mobilenet",
            "channels": [],
            "image_shape": list(model.image_shape),
            "hidden": [],
            "n_classes": model.head[-1].out_features,
            "width_multiplier": model.width_multiplier,
            "resolution": model.resolution,
        }
    elif isinstance(model, SmallCNN):
        convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
        linears = [m for m in model.head if isinstance(m, nn.Linear)]
        description = {
            "family": "cnn",
            "channels": [c.out_channels for c in convs],
            "image_shape": list(model.image_shape),
            "hidden": [m.out_features for m in linears[:-1]],
            "n_classes": linears[-1].out_features,
        }
    elif isinstance(model, MLP):
        linears = [m for m in model.body if isinstance(m, nn.Linear)]
        description = {
            "family": "mlp",
            "channels": [],
            "image_shape": None,
            "hidden": [m.out_features for m in linears],
            "n_classes": model.head[0].out_features,
        }
    else:
        raise TrainingError(
            f"cannot describe a {type(model).__name__}: "
            "only the SmallCNN, MLP and MobileNet families are rebuilt elsewhere"
        )
    n_features = int(model.scaler.low.shape[0])
    return {**description, "activation": activation, "norm": "group" if norms else "none", "n_features": n_features}


def build_from_architecture(architecture: dict[str, Any]) -> nn.Module:
    """The inverse of `describe_architecture` (weights still to load; the scaler's bounds are buffers and load too)."""
    spec = Architecture(
        **{k: architecture[k] for k in ("family", "channels", "hidden", "activation", "norm")},
        width_multiplier=architecture.get("width_multiplier", 1.0),
        resolution=architecture.get("resolution"),
    )
    placeholder = np.zeros(architecture["n_features"], dtype=np.float32)
    return build_model(
        spec,
        architecture["n_features"],
        architecture["n_classes"],
        architecture["image_shape"],
        placeholder,
        placeholder + 1,
    )


def multiply_accumulates(model: nn.Module, n_features: int) -> int:
    """Multiply-accumulates of one row through the model's convolutions and linear layers: torch's FlopCounterMode
    (FLOPs / 2) reads them from the aten ops, so a layer's Python type does not matter (torch_pruning's counter keys on
    the exact type and left out the DepthwiseConv2d layers)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, n_features))
    model.train(was_training)
    return int(counter.get_total_flops() // 2)


def assert_dp_compatible(model: nn.Module) -> None:
    """Refuse BatchNorm (and anything else Opacus cannot give per-sample gradients for), naming the layer."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise TrainingError("model is not DP-compatible: " + "; ".join(str(e) for e in errors[:5]))
