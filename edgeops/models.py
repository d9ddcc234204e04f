"""Model families, DP-compatible by construction (GroupNorm or no normalisation, never BatchNorm).

Every model takes raw features (N, n_features) and scales them with the declared public bounds inside the
graph, so an exported artifact needs no preprocessing code on the device and no data-derived statistics.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from edgeops.errors import TrainingError

if TYPE_CHECKING:  # at run time only attributes are read: a runtime's tool environment rebuilds models without pydantic
    from edgeops.spec import ModelSpec

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


class BoundsScaler(nn.Module):
    """(x - low) / (high - low) with the declared public bounds: a constant, not learned from the data."""

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

    def __init__(self, spec: ModelSpec, image_shape: tuple[int, int, int], n_classes: int, low: np.ndarray, high: np.ndarray):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.scaler = BoundsScaler(low, high)
        layers: list[nn.Module] = []
        channels, height, width = image_shape
        for out_channels in spec.channels:
            layers += [nn.Conv2d(channels, out_channels, 3, padding=1), _norm(spec.norm, out_channels), ACTIVATIONS[spec.activation]()]
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
        return self.head[:-1](z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.scaler(x).reshape(-1, *self.image_shape)))


class MLP(nn.Module):
    def __init__(self, spec: ModelSpec, n_features: int, n_classes: int, low: np.ndarray, high: np.ndarray):
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
        return self.body(self.scaler(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.scaler(x)))


def _norm_1d(kind: str, width: int) -> nn.Module:
    return nn.LayerNorm(width) if kind == "group" else _norm(kind, width)


def build_model(spec: ModelSpec, n_features: int, n_classes: int, image_shape, low: np.ndarray, high: np.ndarray) -> nn.Module:
    if spec.family == "cnn":
        return SmallCNN(spec, tuple(image_shape), n_classes, low, high)
    return MLP(spec, n_features, n_classes, low, high)


def describe_architecture(model: nn.Module) -> dict:
    """The exact architecture of a built (possibly pruned or distilled) model, read off its layers: with
    `build_from_architecture` it rebuilds a module whose state_dict loads strictly. JSON, so it can cross into a
    runtime's tool environment without pickling a module."""
    activation = next(name for name, kind in ACTIVATIONS.items() if any(isinstance(m, kind) for m in model.modules()))
    norms = {type(m) for m in model.modules()} & {nn.GroupNorm, nn.LayerNorm}
    low = model.scaler.low.numpy()
    if isinstance(model, SmallCNN):
        convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
        linears = [m for m in model.head if isinstance(m, nn.Linear)]
        description = {"family": "cnn", "channels": [c.out_channels for c in convs], "image_shape": list(model.image_shape),
                       "hidden": [m.out_features for m in linears[:-1]], "n_classes": linears[-1].out_features}
    elif isinstance(model, MLP):
        linears = [m for m in model.body if isinstance(m, nn.Linear)]
        description = {"family": "mlp", "channels": [], "image_shape": None, "hidden": [m.out_features for m in linears],
                       "n_classes": model.head[0].out_features}
    else:
        raise TrainingError(f"cannot describe a {type(model).__name__}: only the SmallCNN and MLP families are rebuilt elsewhere")
    return {**description, "activation": activation, "norm": "group" if norms else "none", "n_features": int(low.shape[0])}


def build_from_architecture(architecture: dict) -> nn.Module:
    """The inverse of `describe_architecture` (weights still to load; the scaler's bounds are buffers and load too)."""
    spec = SimpleNamespace(**{k: architecture[k] for k in ("family", "channels", "hidden", "activation", "norm")})
    placeholder = np.zeros(architecture["n_features"], dtype=np.float32)
    return build_model(spec, architecture["n_features"], architecture["n_classes"], architecture["image_shape"], placeholder, placeholder + 1)


def assert_dp_compatible(model: nn.Module) -> None:
    """Refuse BatchNorm (and anything else Opacus cannot give per-sample gradients for), naming the layer."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise TrainingError("model is not DP-compatible: " + "; ".join(str(e) for e in errors[:5]))


# ---------------------------------------------------------------- files (safetensors and ONNX, never pickles)
def save_weights(model: nn.Module, path: Path, metadata: dict | None = None) -> str:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # one entry: safetensors writes its metadata map in a per-process hash order, so several entries would make the
    # same weights' file bytes differ from run to run
    save_file(state, str(tmp), metadata={"edgeops": json.dumps({k: str(v) for k, v in (metadata or {}).items()}, sort_keys=True)})
    tmp.replace(path)
    return weights_sha256(model)


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)))
    return model


def weights_sha256(model: nn.Module) -> str:
    """A hash of the weights themselves (names, shapes, bytes), independent of file format."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        array = tensor.detach().cpu().numpy()
        digest.update(json.dumps([name, list(array.shape), str(array.dtype)]).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def export_onnx(model: nn.Module, n_features: int, path: Path) -> None:
    """ONNX with a dynamic batch dimension, input 'features' (N, n_features) float32, output 'logits'."""
    import onnx

    model = model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, n_features, dtype=torch.float32)
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(model, (example,), str(tmp), input_names=["features"], output_names=["logits"],
                      dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=65536)}}, dynamo=True,
                      external_data=False, verbose=False)
    strip_for_device(str(tmp))
    onnx.checker.check_model(str(tmp), full_check=True)
    tmp.replace(path)


# Attribute values that equal the ONNX defaults (opset 13+ semantics); written out they only cost bytes.
_DEFAULT_ATTRIBUTES = {
    "Conv": {"group": 1, "auto_pad": b"NOTSET", "dilations": 1, "strides": 1, "pads": 0},
    "MaxPool": {"storage_order": 0, "ceil_mode": 0, "auto_pad": b"NOTSET", "dilations": 1, "strides": 1, "pads": 0},
    "Gemm": {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0},
    "Reshape": {"allowzero": 0},
}
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div"}


def _is_default(op_type: str, attribute) -> bool:
    import onnx

    default = _DEFAULT_ATTRIBUTES.get(op_type, {}).get(attribute.name)
    if default is None:
        return False
    value = onnx.helper.get_attribute_value(attribute)
    return all(v == default for v in value) if isinstance(value, list) else value == default


def strip_for_device(path: str) -> None:
    """Make the file carry only what a runtime needs; inputs, outputs and computation are unchanged. Removed:
    exporter provenance (doc strings, stack traces, node, graph and value metadata), intermediate shapes, long tensor
    names, opset imports no node uses, attributes written out at their default values, all-zero zero points of
    DequantizeLinear (optional; 0 is the default); per-feature constants whose values are all equal (the declared
    bounds) become one scalar where that broadcasts the same. With float int8 biases, this took the earlier
    6k-parameter digits CNN's int8 file from 11,079 to 8,219 bytes (benchmarks/results/compression.md before and at
    commit f911c52)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    renamed: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return renamed.setdefault(name, f"t{len(renamed)}")

    shapes = _known_shapes(model)
    initializers = {t.name: t for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for tensor in graph.initializer:
        users = consumers.get(tensor.name, [])
        if len(tensor.dims) == 1 and tensor.dims[0] > 1 and users and all(_scalar_is_equivalent(n, tensor, shapes) for n in users):
            values = numpy_helper.to_array(tensor)
            if np.all(values == values.flat[0]):
                tensor.CopyFrom(numpy_helper.from_array(values[:1].reshape(()), tensor.name))
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and len(node.input) == 3 and node.input[2] in initializers \
                and not numpy_helper.to_array(initializers[node.input[2]]).any():
            del node.input[2]
        kept = [a for a in node.attribute if not _is_default(node.op_type, a)]
        del node.attribute[:]
        node.attribute.extend(kept)
    used = {name for node in graph.node for name in node.input}
    kept_initializers = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_initializers)
    for tensor in graph.initializer:
        tensor.name = short(tensor.name)
        tensor.doc_string = ""
    for index, node in enumerate(graph.node):
        node.name = f"n{index}"
        node.doc_string = ""
        del node.metadata_props[:]
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    for value in list(graph.input) + list(graph.output):
        del value.metadata_props[:]
        value.doc_string = ""
    domains = {node.domain or "" for node in graph.node}
    opsets = [o for o in model.opset_import if (o.domain or "") in domains]
    del model.opset_import[:]
    model.opset_import.extend(opsets)
    del graph.value_info[:]
    del graph.metadata_props[:]
    del model.metadata_props[:]
    graph.doc_string = ""
    model.doc_string = ""
    onnx.save(model, path)


def _known_shapes(model) -> dict[str, list]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return shapes


def _scalar_is_equivalent(node, tensor, shapes: dict[str, list]) -> bool:
    """An elementwise op whose other operand already has the constant's full trailing shape: broadcasting one
    scalar gives the same result (and the same output shape)."""
    if node.op_type not in _ELEMENTWISE or len(node.input) != 2:
        return False
    other = node.input[1] if node.input[0] == tensor.name else node.input[0]
    shape = shapes.get(other)
    return bool(shape) and shape[-1] == tensor.dims[0]
