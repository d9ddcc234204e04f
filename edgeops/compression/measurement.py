"""Measurement of artifacts: logits on their own runtime, which kernels ONNX Runtime ran, model size."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

INT8_ONNX_KERNELS = (
    "QLinearConv",
    "QLinearMatMul",
    "QLinearAdd",
    "QLinearMul",
    "QLinearAveragePool",
    "QLinearGlobalAveragePool",
    "QLinearConcat",
    "QLinearLeakyRelu",
    "QLinearSigmoid",
    "QLinearSoftmax",
    "QGemm",
    "ConvInteger",
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
    "QAttention",
    "NhwcMaxPool",
    "QLinearWhere",
)


def onnx_kernel_profile(path: Path, x: np.ndarray, calls: int = 20, threads: int = 1) -> dict[str, Any]:
    """Which kernels ONNX Runtime ran for this model on these inputs, from its own profiler (the `op_name` of each
    node's kernel_time event, in the session's optimized graph): the share of kernel time per op, and the share
    spent in int8 kernels (QLinear*, QGemm, ...). A quantized graph whose int8 share is 0 ran in float."""
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgeops-ort-profile-") as folder:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "trace")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(calls):
            session.run(None, {"features": x})
        trace = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = {}
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            totals[op] = totals.get(op, 0.0) + event["dur"]
    total = sum(totals.values()) or 1.0
    shares = {op: round(t / total, 4) for op, t in sorted(totals.items(), key=lambda kv: -kv[1])}
    return {
        "op_time_share": shares,
        "int8_kernel_share": round(sum(v for k, v in shares.items() if k in INT8_ONNX_KERNELS), 4),
        "int8_kernels": sorted(k for k in shares if k in INT8_ONNX_KERNELS),
        "source": "onnxruntime profiler (kernel_time events)",
    }


def onnx_logits(path: Path, x: np.ndarray, threads: int = 1) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"features": x[i : i + 256]})[0] for i in range(0, len(x), 256)]).astype(
        np.float64
    )


def artifact_logits(runtime: str, path: Path, x: np.ndarray) -> np.ndarray:
    """Logits of an artifact on its own runtime: ONNX Runtime here, the others in their tool environments."""
    if runtime == "onnxruntime":
        return onnx_logits(path, x)
    from edgeops.runtimes import predict

    return predict(runtime, path, x)


def model_size_facts(path: Path) -> dict[str, Any]:
    import onnx

    graph = onnx.load(str(path)).graph
    from onnx import numpy_helper

    parameters = sum(int(np.prod(numpy_helper.to_array(t).shape)) for t in graph.initializer)
    return {"file_bytes": path.stat().st_size, "onnx_initializer_elements": parameters}
