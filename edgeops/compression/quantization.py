"""Precision steps: int8 (ONNX Runtime's static QDQ quantization, or the target runtime's own PT2E quantizer) on
calibration inputs that are never private, and fp16."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from edgeops.compression.recipe import CompressionContext, WorkingModel, ensure_onnx, step_handler
from edgeops.errors import CompressionError
from edgeops.spec import Fp16Step, Int8Step

if TYPE_CHECKING:
    from edgeops.training.data import TrainingData


# ---------------------------------------------------------------- calibration data (never private)
def calibration_inputs(step: Int8Step, ctx: CompressionContext) -> tuple[np.ndarray, str]:
    samples = step.calibration.samples
    if step.calibration.source == "public":
        import pandas as pd

        path = ctx.declaration.resolve(cast(str, step.calibration.path))  # source: public requires a path
        try:
            frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
            features = ctx.declaration.spec.dataset.features or [
                c for c in frame.columns if c != ctx.declaration.spec.dataset.label
            ]
            data = frame[features].to_numpy(dtype=np.float32)[:samples]
        except Exception as err:
            raise CompressionError(
                f"target {ctx.target.name!r}: calibration.path {path} is not usable public data: {err}"
            ) from None
        return data, f"declared public data {path.name} ({len(data)} rows)"
    if step.calibration.source == "synthetic_digits":
        from edgeops.training.nonprivate import public_synthetic_digits

        spec = ctx.declaration.spec
        training_data = cast("TrainingData", ctx.training_data)
        x, _ = public_synthetic_digits(spec, training_data.features, training_data.classes, samples, ctx.seed)
        return x, f"synthetic_digits: {samples} pen-stroke digits from edgeops.synthetic (public, no private data)"
    rng = np.random.default_rng(ctx.seed)
    statistics = ctx.feature_statistics or {}
    if statistics.get("centre"):
        # Synthetic from the DP feature statistics: each feature normal around its DP centre with its DP spread,
        # within the scaling bounds: where the data lies, not spread over a wide public range. Post-processing of
        # DP outputs: no private data is read, no privacy is spent.
        names = cast("TrainingData", ctx.training_data).features
        centre = np.array(
            [
                statistics["centre"].get(c, (lo + hi) / 2)
                for c, lo, hi in zip(names, ctx.feature_low, ctx.feature_high, strict=False)
            ]
        )
        spread = np.array([statistics["spread"].get(c, 0.0) for c in names])
        draws = rng.normal(centre, spread, size=(samples, ctx.n_features))
        return (
            np.clip(draws, ctx.feature_low, ctx.feature_high).astype(np.float32),
            f"synthetic: {samples} inputs drawn from the DP feature statistics "
            "(normal at each DP centre and spread; no private data)",
        )
    # Synthetic: uniform within the declared public bounds, plus sparse "stroke" images for image data, so the
    # activation ranges cover both dark and bright inputs. No private data is read.
    uniform = rng.uniform(ctx.feature_low, ctx.feature_high, size=(samples // 2, ctx.n_features))
    mask = rng.random((samples - samples // 2, ctx.n_features)) < 0.35
    span = ctx.feature_high - ctx.feature_low
    sparse = np.where(mask, ctx.feature_low + rng.uniform(0.5, 1.0, mask.shape) * span, ctx.feature_low)
    return np.clip(np.vstack([uniform, sparse]), ctx.feature_low, ctx.feature_high).astype(
        np.float32
    ), f"synthetic: {samples} inputs drawn within the declared public bounds (no private data)"


def host_int8_dot_product() -> str | None:
    """The int8 dot-product instruction set this CPU reports (/proc/cpuinfo flags), or None."""
    from edgeops.hil.harness import device_facts

    flags = set(device_facts()["isa_flags"])
    for flag in ("amx_int8", "avx512_vnni", "avx_vnni"):
        if flag in flags:
            return flag
    return None


# How each runtime quantizes in its own way (the int8 step of an ExecuTorch or LiteRT target): the worker runs it in
# the runtime's tool environment (edgeops.runtimes.worker.export) on the float model and these calibration inputs.
TOOL_INT8_METHOD = {
    "executorch": "PT2E static quantization with ExecuTorch's XNNPACKQuantizer (symmetric int8, per-channel weights; "
    "outputs over twice their calibration range), lowered to the XNNPACK delegate",
    "litert": "PT2E static quantization with litert-torch's PT2EQuantizer (symmetric int8, per-channel weights; "
    "outputs over twice their calibration range), converted to int8 TFLite kernels (XNNPACK delegate)",
}


@step_handler(Int8Step)
def _int8(step: Int8Step, model: WorkingModel, ctx: CompressionContext) -> WorkingModel:
    """int8 in the target runtime's own way. ONNX Runtime: static quantization in QDQ form (per-channel weights), the
    fast path for CNNs. ExecuTorch and LiteRT: their PT2E quantizers, run at export in their tool environments."""
    inputs, description = calibration_inputs(step, ctx)
    if ctx.target.runtime in TOOL_INT8_METHOD:
        if not step.per_channel:
            raise CompressionError(
                f"target {ctx.target.name!r}: {ctx.target.runtime} int8 is per-channel (its quantizer's "
                "recommended configuration); per_channel: false is an ONNX Runtime option"
            )
        model.int8_calibration = inputs
        model.notes.append(
            {
                "step": "int8",
                "format": TOOL_INT8_METHOD[ctx.target.runtime],
                "per_channel": True,
                "calibration": description,
                "data": step.calibration.source,
                "privacy": "no private data read, no cost",
            }
        )
        return model
    return _int8_onnxruntime(step, model, ctx, inputs, description)


def _input_scaling_nodes(path: Path) -> list[str]:
    """The nodes before the first Conv/Gemm/MatMul: the model's own input scaling ((x - centre) / spread, or the bounds
    map). They stay float: their input is the raw features, which may span orders of magnitude, and one uint8 scale per
    tensor would flatten every small-valued feature (measured on the wide-table example: a 59-point int8 drop).
    Unnamed nodes are named in place so the quantizer can exclude them."""
    import onnx

    graph_model = onnx.load(str(path))
    names, renamed = [], False
    for index, node in enumerate(graph_model.graph.node):
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            break
        if not node.name:
            node.name, renamed = f"edgeops_input_{index}", True
        names.append(node.name)
    if renamed:
        onnx.save(graph_model, str(path))
    return names


def _int8_onnxruntime(
    step: Int8Step, model: WorkingModel, ctx: CompressionContext, inputs: np.ndarray, description: str
) -> WorkingModel:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgeops.models import strip_for_device

    source = ensure_onnx(model, ctx)

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no type information
        def __init__(self) -> None:
            self._rows = iter(inputs[i : i + 32] for i in range(0, len(inputs), 32))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._rows, None)
            return None if batch is None else {"features": batch}

    prepared = ctx.workdir / "prepared.onnx"
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    output = ctx.workdir / "int8.onnx"
    # Every op the quantizer knows (Conv, Relu, Add, MaxPool, Resize, ...), so activations stay int8 between
    # convolutions: with Conv and Gemm only, each ReLU and residual Add sat between a DequantizeLinear and a
    # QuantizeLinear, and on the MobileNet-class model those conversions took 37% of the int8 time, which then ran at
    # 1.2-1.5x float (ORT profiler, 2026-12-07). Float logits out: quantizing the final logits to 8 bits flipped
    # near-ties (measured: same size, one more wrong test image in 360). Biases stay float: an int32 bias needs its own
    # per-channel scale and DequantizeLinear node, and ONNX Runtime still fuses each Conv into QLinearConv, quantizing
    # the bias itself when the session loads (checked in its optimized graph).
    # uint8 activations x int8 weights (U8S8): ONNX Runtime's x86 int8 GEMM and convolution kernels (MLAS) take u8 x s8,
    # the operand order of VNNI's vpdpbusd and of AVX2's vpmaddubsw; int8 activations (S8S8) are shifted to u8 at run
    # time (measured on the MobileNet-class model: S8S8 1.48x float at batch 1, U8S8 1.08x, same graph otherwise).
    # Without an int8 dot-product instruction, vpmaddubsw's 16-bit sums can saturate: weights then use 7 bits
    # (reduce_range), as ONNX Runtime's documentation advises for AVX2 without VNNI.
    dot_product = host_int8_dot_product()
    quantize_static(
        str(prepared),
        str(output),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=step.per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        reduce_range=dot_product is None,
        nodes_to_exclude=_input_scaling_nodes(prepared),
        extra_options={
            "ActivationSymmetric": False,
            "WeightSymmetric": True,
            "OpTypesToExcludeOutputQuantization": ["Gemm"],
            "QuantizeBias": False,
        },
    )
    strip_for_device(str(output))
    model.onnx_path = output
    model.notes.append(
        {
            "step": "int8",
            "format": "QDQ (uint8 activations, int8 weights)",
            "per_channel": step.per_channel,
            "calibration": description,
            "data": step.calibration.source,
            "privacy": "no private data read, no cost",
            "int8_dot_product": dot_product or "none on the build host (AVX2 vpmaddubsw path: 7-bit weights)",
        }
    )
    return model


class _HalfPrecision(torch.nn.Module):
    """fp16 weights and compute behind fp32 inputs and outputs (the device's callers keep float32 buffers)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.model(x.half()).float())


@step_handler(Fp16Step)
def _fp16(step: Fp16Step, model: WorkingModel, ctx: CompressionContext) -> WorkingModel:
    from edgeops.models import export_onnx

    if model.onnx_path is not None:
        raise CompressionError(
            f"target {ctx.target.name!r}: fp16 must be applied to the float model, before other ONNX steps"
        )
    if ctx.target.runtime == "torch":  # the artifact is saved in half precision at export (torch_runtime.save_artifact)
        model.half = True
        model.notes.append(
            {"step": "fp16", "format": "torch half", "data": "none", "privacy": "post-processing, no cost"}
        )
        return model
    output = ctx.workdir / "fp16.onnx"
    export_onnx(_HalfPrecision(copy.deepcopy(model.torch_model)), ctx.n_features, output)
    model.onnx_path = output
    model.notes.append({"step": "fp16", "data": "none", "privacy": "post-processing, no cost"})
    return model
