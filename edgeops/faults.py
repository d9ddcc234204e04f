"""Fault injection for tests and benchmarks (never used by the pipeline itself).

`fails_on_live_inputs` makes the failure a smoke test cannot see: the model answers normally for inputs whose
feature sum is above `threshold` (the bundle's synthetic smoke inputs, drawn uniformly within the feature bounds,
sum to about half the maximum) and returns NaN for darker inputs such as real digit scans. It is how a delivery
test provokes the on-device rollback after activation.
"""

from __future__ import annotations

from typing import cast


def fails_on_live_inputs(artifact: bytes, threshold: float) -> bytes:
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load_from_string(artifact)
    graph = model.graph
    features, logits = graph.input[0].name, graph.output[0].name
    renamed = logits + "_healthy"
    for node in graph.node:
        node.output[:] = [renamed if name == logits else name for name in node.output]
    graph.initializer.extend(
        [
            helper.make_tensor("fault_threshold", TensorProto.FLOAT, [], [threshold]),
            helper.make_tensor("fault_zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("fault_axes", TensorProto.INT64, [1], [1]),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("ReduceSum", [features, "fault_axes"], ["fault_sum"], keepdims=1),
            helper.make_node("Sub", ["fault_sum", "fault_threshold"], ["fault_margin"]),
            helper.make_node("Log", ["fault_margin"], ["fault_log"]),  # NaN below the threshold
            helper.make_node("Mul", ["fault_log", "fault_zero"], ["fault_nan_or_zero"]),
            helper.make_node("Add", [renamed, "fault_nan_or_zero"], [logits]),
        ]
    )
    onnx.checker.check_model(model)
    return cast(bytes, model.SerializeToString())
