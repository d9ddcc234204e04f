"""ONNX export (never pickles): `export_onnx` writes a checked file with a dynamic batch dimension, and
`strip_for_device` removes from an ONNX file everything a runtime does not need (provenance, intermediate shapes, long
names, default attributes, redundant constants) without changing what it computes. onnx is imported where it is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    import onnx


def export_onnx(model: nn.Module, n_features: int, path: Path) -> None:
    """ONNX with a dynamic batch dimension, input 'features' (N, n_features) float32, output 'logits'."""
    import onnx

    model = model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, n_features, dtype=torch.float32)
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(
        model,
        (example,),
        str(tmp),
        input_names=["features"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=65536)}},
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    strip_for_device(str(tmp))
    onnx.checker.check_model(str(tmp), full_check=True)
    tmp.replace(path)


# Attribute values that equal the ONNX defaults (opset 13+ semantics); written out they only cost bytes.
_DEFAULT_ATTRIBUTES: dict[str, dict[str, int | float | bytes]] = {
    "Conv": {"group": 1, "auto_pad": b"NOTSET", "dilations": 1, "strides": 1, "pads": 0},
    "MaxPool": {"storage_order": 0, "ceil_mode": 0, "auto_pad": b"NOTSET", "dilations": 1, "strides": 1, "pads": 0},
    "Gemm": {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0},
    "Reshape": {"allowzero": 0},
}
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div"}


def _is_default(op_type: str, attribute: onnx.AttributeProto) -> bool:
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
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for tensor in graph.initializer:
        users = consumers.get(tensor.name, [])
        if (
            len(tensor.dims) == 1
            and tensor.dims[0] > 1
            and users
            and all(_scalar_is_equivalent(n, tensor, shapes) for n in users)
        ):
            values = numpy_helper.to_array(tensor)
            if np.all(values == values.flat[0]):
                tensor.CopyFrom(numpy_helper.from_array(values[:1].reshape(()), tensor.name))
    for node in graph.node:
        if (
            node.op_type == "DequantizeLinear"
            and len(node.input) == 3
            and node.input[2] in initializers
            and not numpy_helper.to_array(initializers[node.input[2]]).any()
        ):
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


def _known_shapes(model: onnx.ModelProto) -> dict[str, list[Any]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return shapes


def _scalar_is_equivalent(node: onnx.NodeProto, tensor: onnx.TensorProto, shapes: dict[str, list[Any]]) -> bool:
    """An elementwise op whose other operand already has the constant's full trailing shape: broadcasting one
    scalar gives the same result (and the same output shape)."""
    if node.op_type not in _ELEMENTWISE or len(node.input) != 2:
        return False
    other = node.input[1] if node.input[0] == tensor.name else node.input[0]
    shape = shapes.get(other)
    return shape is not None and len(shape) > 0 and shape[-1] == tensor.dims[0]
