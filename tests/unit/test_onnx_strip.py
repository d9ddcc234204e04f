"""strip_for_device: the file loses only what no runtime reads, and the computation is unchanged (outputs bit-equal)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeops.models import strip_for_device


def run(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def scaled_gemm(path, input_width: int, constant: np.ndarray) -> None:
    """y = (x * c) @ W with c a per-feature constant, written the way exporters write it (metadata, defaults)."""
    weight = np.arange(64 * 3, dtype=np.float32).reshape(64, 3) / 100
    nodes = [
        helper.make_node("Mul", ["x", "c"], ["scaled"], name="a_long_exporter_name", doc_string="stack trace ..."),
        helper.make_node("Gemm", ["scaled", "w"], ["y"], alpha=1.0, beta=1.0, transA=0),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", input_width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(constant, "c"), numpy_helper.from_array(weight, "w")],
    )
    graph.metadata_props.add(key="pkg.torch.export.graph_signature", value="x" * 300)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)], ir_version=8
    )
    model.metadata_props.add(key="exporter", value="x" * 100)
    onnx.save(model, str(path))


def test_provenance_defaults_and_unused_opsets_go_and_outputs_stay_bit_equal(tmp_path):
    path = tmp_path / "m.onnx"
    scaled_gemm(path, 64, np.full(64, 0.0625, dtype=np.float32))
    x = np.random.default_rng(0).uniform(0, 16, (5, 64)).astype(np.float32)
    before, size_before = run(path, x), path.stat().st_size
    strip_for_device(str(path))
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert np.array_equal(run(path, x), before)
    assert path.stat().st_size < size_before - 400
    assert [o.domain for o in model.opset_import] == [""]
    assert not model.metadata_props and not model.graph.metadata_props
    assert all(not n.attribute for n in model.graph.node)  # alpha, beta, transA were all defaults
    constant = next(t for t in model.graph.initializer if t.data_type == TensorProto.FLOAT and not t.dims)
    assert numpy_helper.to_array(constant) == np.float32(0.0625)  # 64 equal values became one scalar


def test_a_constant_is_not_made_scalar_where_it_is_what_broadcasts_the_shape(tmp_path):
    """x is (n, 1): x * c has c's width 64, so a scalar c would change the output shape. It must stay."""
    path = tmp_path / "m.onnx"
    scaled_gemm(path, 1, np.full(64, 0.5, dtype=np.float32))
    x = np.ones((2, 1), dtype=np.float32)
    before = run(path, x)
    strip_for_device(str(path))
    assert np.array_equal(run(path, x), before)
    assert any(list(t.dims) == [64] for t in onnx.load(str(path)).graph.initializer)


def test_unequal_constants_and_nonzero_zero_points_are_kept(tmp_path):
    path = tmp_path / "m.onnx"
    scaled_gemm(path, 64, np.linspace(0.1, 1.0, 64, dtype=np.float32))
    strip_for_device(str(path))
    assert any(list(t.dims) == [64] for t in onnx.load(str(path)).graph.initializer)

    quantized = tmp_path / "q.onnx"
    nodes = [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("q", TensorProto.INT8, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(np.float32(0.5), "s"), numpy_helper.from_array(np.int8(3), "z")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(quantized))
    strip_for_device(str(quantized))
    assert len(onnx.load(str(quantized)).graph.node[0].input) == 3  # zero point 3 matters
