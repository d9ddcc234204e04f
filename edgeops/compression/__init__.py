"""Per-target compression: one typed config class per recipe step (in spec.py), one handler per step (torch_steps,
quantization), behind one entry point (`build.build_target`) and a registry (`recipe.STEP_HANDLERS`).

A recipe works in two phases: torch steps (prune) change the float model, then it is exported to ONNX and ONNX
steps (int8, fp16) transform the graph. Pruning and quantization of the DP weights are post-processing and
spend no privacy; calibration reads only synthetic or declared public data, and the artifact records which.
"""

# Importing the step modules registers their handlers in STEP_HANDLERS. The names are what code outside the package
# imported from edgeops.compression when it was one module.
from edgeops.compression import torch_steps  # noqa: F401 - registers the prune and distill handlers
from edgeops.compression.build import DEFAULT_PARITY, budget_outcomes, build_target
from edgeops.compression.measurement import artifact_logits, onnx_kernel_profile
from edgeops.compression.quantization import calibration_inputs, host_int8_dot_product
from edgeops.compression.recipe import STEP_HANDLERS, CompressionContext

__all__ = [
    "DEFAULT_PARITY",
    "STEP_HANDLERS",
    "CompressionContext",
    "artifact_logits",
    "budget_outcomes",
    "build_target",
    "calibration_inputs",
    "host_int8_dot_product",
    "onnx_kernel_profile",
]
