"""Per-target compression: one typed config class per recipe step (in spec.py), one handler per step here,
behind one entry point (`build_target`) and a registry (`STEP_HANDLERS`).

A recipe works in two phases: torch steps (prune) change the float model, then it is exported to ONNX and ONNX
steps (int8, fp16) transform the graph. Pruning and quantization of the DP weights are post-processing and
spend no privacy; calibration reads only synthetic or declared public data, and the artifact records which.
"""

from __future__ import annotations

import copy
import json
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from edgeops.data import file_sha256
from edgeops.errors import CompressionError
from edgeops.spec import Declaration, DistillStep, Fp16Step, Int8Step, PruneStep, TargetSpec

DEFAULT_PARITY = {"fp32": 1e-4, "fp16": 2e-2, "int8": 0.15}  # max |logit diff| / max |float logit|


@dataclass
class WorkingModel:
    """What the recipe carries from step to step."""

    torch_model: object
    onnx_path: Path | None = None
    half: bool = False  # the torch runtime's fp16: weights stored and computed in half precision
    notes: list[dict] = field(default_factory=list)  # one per step: what it did, what data it read, privacy cost


StepHandler = Callable[[object, WorkingModel, "CompressionContext"], WorkingModel]
STEP_HANDLERS: dict[type, StepHandler] = {}


def step_handler(step_type: type):
    def register(function: StepHandler) -> StepHandler:
        STEP_HANDLERS[step_type] = function
        return function
    return register


@dataclass
class CompressionContext:
    declaration: Declaration
    target: TargetSpec
    workdir: Path
    n_features: int
    feature_low: np.ndarray
    feature_high: np.ndarray
    seed: int
    ledger: object = None          # PrivacyLedger, for steps that read private data
    training_data: object = None   # TrainingData, only for DP fine-tuning and distillation
    run_id: str = ""
    teacher_sha256: str = ""       # weights hash of the DP model (keys a distillation charge)


# ---------------------------------------------------------------- calibration data (never private)
def calibration_inputs(step: Int8Step, ctx: CompressionContext) -> tuple[np.ndarray, str]:
    samples = step.calibration.samples
    if step.calibration.source == "public":
        import pandas as pd

        path = ctx.declaration.resolve(step.calibration.path)
        try:
            frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
            features = ctx.declaration.spec.dataset.features or [c for c in frame.columns if c != ctx.declaration.spec.dataset.label]
            data = frame[features].to_numpy(dtype=np.float32)[:samples]
        except Exception as err:
            raise CompressionError(f"target {ctx.target.name!r}: calibration.path {path} is not usable public data: {err}") from None
        return data, f"declared public data {path.name} ({len(data)} rows)"
    if step.calibration.source == "synthetic_digits":
        from edgeops.training import public_synthetic_digits

        spec = ctx.declaration.spec
        x, _ = public_synthetic_digits(spec, ctx.training_data.features, ctx.training_data.classes, samples, ctx.seed)
        return x, f"synthetic_digits: {samples} pen-stroke digits from edgeops.synthetic (public, no private data)"
    # Synthetic: uniform within the declared public bounds, plus sparse "stroke" images for image data, so the
    # activation ranges cover both dark and bright inputs. No private data is read.
    rng = np.random.default_rng(ctx.seed)
    uniform = rng.uniform(ctx.feature_low, ctx.feature_high, size=(samples // 2, ctx.n_features))
    mask = rng.random((samples - samples // 2, ctx.n_features)) < 0.35
    span = ctx.feature_high - ctx.feature_low
    sparse = np.where(mask, ctx.feature_low + rng.uniform(0.5, 1.0, mask.shape) * span, ctx.feature_low)
    return np.clip(np.vstack([uniform, sparse]), ctx.feature_low, ctx.feature_high).astype(np.float32), \
        f"synthetic: {samples} inputs drawn within the declared public bounds (no private data)"


# ---------------------------------------------------------------- step handlers
@step_handler(PruneStep)
def _prune(step: PruneStep, model: WorkingModel, ctx: CompressionContext) -> WorkingModel:
    """Structured pruning with torch-pruning: channels are removed (parameters and MACs fall), not masked.
    L1-magnitude importance on the DP weights only: post-processing, no data, no privacy cost."""
    import torch
    import torch_pruning as tp

    if model.onnx_path is not None:
        raise CompressionError(f"target {ctx.target.name!r}: prune must come before ONNX steps")
    net = model.torch_model
    example = torch.zeros(1, ctx.n_features)
    classifier = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1:]
    before = sum(p.numel() for p in net.parameters())
    pruner = tp.pruner.MetaPruner(net, example, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=step.ratio,
                                  ignored_layers=classifier, round_to=None)
    pruner.step()
    after = sum(p.numel() for p in net.parameters())
    note = {"step": "prune", "ratio": step.ratio, "parameters_before": before, "parameters_after": after,
            "data": "none (L1 magnitude of the DP weights)", "privacy": "post-processing, no cost"}
    if step.finetune is not None:
        note.update(_dp_finetune(step, net, ctx))
    model.notes.append(note)
    return model


def _dp_finetune(step: PruneStep, net, ctx: CompressionContext) -> dict:
    """DP-SGD fine-tuning of the pruned model on the private training split, charged to the ledger first."""
    from edgeops.training import plan_dp_training, train_dp

    spec = ctx.declaration.spec
    plan = plan_dp_training(spec, ctx.training_data, epsilon=step.finetune.epsilon, epochs=step.finetune.epochs,
                            purpose=f"fine-tuning after pruning ({ctx.target.name}, ratio {step.ratio})")
    plan.model = {"pruned_from": spec.model.model_dump(mode="json"), "ratio": step.ratio}
    key = plan.charge_key()
    entry, _ = ctx.ledger.charge(key, f"dp-sgd fine-tuning after pruning (target {ctx.target.name})", plan.target_epsilon,
                                 plan.delta, plan.ledger_parameters(), run_id=ctx.run_id, note="compression step on private data")
    try:
        result = train_dp(spec, ctx.training_data, plan, ctx.workdir / "finetune", initial_model=net,
                          learning_rate=step.finetune.learning_rate)
    except Exception as err:
        ctx.ledger.update(entry.id, "failed", {"error": str(err)[:300]})
        raise
    ctx.ledger.update(entry.id, "completed", {"epsilon_accountant": result["epsilon"]}, epsilon=result["epsilon"])
    return {"data": "private training split (DP-SGD fine-tuning)", "privacy": f"charged epsilon {result['epsilon']:.3f}, "
            f"delta {plan.delta:g} (ledger entry {entry.id})", "finetune": {**plan.ledger_parameters(), "epsilon": result["epsilon"],
                                                                          "ledger_entry": entry.id}}


@step_handler(DistillStep)
def _distill(step: DistillStep, model: WorkingModel, ctx: CompressionContext) -> WorkingModel:
    """Knowledge distillation: a smaller student trained with DP-SGD on the private training split to match the DP
    model's temperature-softened outputs and the labels. The teacher's outputs on training rows depend on those rows,
    so they are part of each DP-SGD example; the run is charged to the ledger before it starts."""
    import torch

    from edgeops.models import build_model
    from edgeops.training import plan_dp_training, predict_logits, train_dp

    if model.onnx_path is not None:
        raise CompressionError(f"target {ctx.target.name!r}: distill must come before ONNX steps")
    spec = ctx.declaration.spec
    data = ctx.training_data
    teacher_parameters = sum(p.numel() for p in model.torch_model.parameters())
    student_spec = spec.model.model_copy(update=step.student.model_dump())
    torch.manual_seed(ctx.seed)
    student = build_model(student_spec, ctx.n_features, len(data.classes), spec.dataset.image_shape, ctx.feature_low, ctx.feature_high)
    student_parameters = sum(p.numel() for p in student.parameters())
    teacher_logits = predict_logits(model.torch_model, data.x_train)
    plan = plan_dp_training(spec, data, epsilon=step.epsilon, epochs=step.epochs, purpose=f"distillation ({ctx.target.name})")
    plan.model = {"student": step.student.model_dump(mode="json"), "teacher_weights": ctx.teacher_sha256,
                  "temperature": step.temperature, "weight": step.weight}
    entry, _ = ctx.ledger.charge(plan.charge_key(), f"dp-sgd distillation into a student (target {ctx.target.name})", plan.target_epsilon,
                                 plan.delta, plan.ledger_parameters(), run_id=ctx.run_id, note="compression step on private data")
    try:
        result = train_dp(spec, data, plan, ctx.workdir / "distill", initial_model=student, learning_rate=step.learning_rate,
                          teacher_logits=teacher_logits, temperature=step.temperature, distill_weight=step.weight)
    except Exception as err:
        ctx.ledger.update(entry.id, "failed", {"error": str(err)[:300]})
        raise
    ctx.ledger.update(entry.id, "completed", {"epsilon_accountant": result["epsilon"]}, epsilon=result["epsilon"])
    model.torch_model = result["model"].eval()
    model.notes.append({"step": "distill", "student": step.student.model_dump(mode="json"), "parameters_teacher": teacher_parameters,
                        "parameters_student": student_parameters, "temperature": step.temperature, "weight": step.weight,
                        "data": "private training split (DP-SGD distillation)",
                        "privacy": f"charged epsilon {result['epsilon']:.3f}, delta {plan.delta:g} (ledger entry {entry.id})",
                        "distill": {**plan.ledger_parameters(), "epsilon": result["epsilon"], "ledger_entry": entry.id}})
    return model


def _ensure_onnx(model: WorkingModel, ctx: CompressionContext) -> Path:
    from edgeops.models import export_onnx

    if model.onnx_path is None:
        model.onnx_path = ctx.workdir / "float.onnx"
        export_onnx(model.torch_model, ctx.n_features, model.onnx_path)
    return model.onnx_path


@step_handler(Int8Step)
def _int8(step: Int8Step, model: WorkingModel, ctx: CompressionContext) -> WorkingModel:
    """Static int8 quantization in QDQ form (per-channel weights), the fast path for CNNs in ONNX Runtime."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgeops.models import strip_for_device

    source = _ensure_onnx(model, ctx)
    inputs, description = calibration_inputs(step, ctx)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._rows = iter(inputs[i:i + 32] for i in range(0, len(inputs), 32))

        def get_next(self):
            batch = next(self._rows, None)
            return None if batch is None else {"features": batch}

    prepared = ctx.workdir / "prepared.onnx"
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    output = ctx.workdir / "int8.onnx"
    # Conv and Gemm only, and float logits out: quantizing the final logits to 8 bits flipped near-ties
    # (measured: same size, one more wrong test image in 360). Biases stay float: an int32 bias needs its own
    # per-channel scale and DequantizeLinear node (about 440 of 8,670 bytes on the 6k-parameter digits CNN, in a
    # development run), and ONNX Runtime still fuses each Conv into QLinearConv, quantizing the bias itself when the
    # session loads (checked in its optimized graph).
    quantize_static(str(prepared), str(output), Reader(), quant_format=QuantFormat.QDQ, per_channel=step.per_channel,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv", "Gemm", "MatMul"],
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True, "OpTypesToExcludeOutputQuantization": ["Gemm"],
                                   "QuantizeBias": False})
    strip_for_device(str(output))
    model.onnx_path = output
    model.notes.append({"step": "int8", "format": "QDQ", "per_channel": step.per_channel, "calibration": description,
                        "data": step.calibration.source, "privacy": "no private data read, no cost"})
    return model


class _HalfPrecision(torch.nn.Module):
    """fp16 weights and compute behind fp32 inputs and outputs (the device's callers keep float32 buffers)."""

    def __init__(self, model):
        super().__init__()
        self.model = model.half()

    def forward(self, x):
        return self.model(x.half()).float()


@step_handler(Fp16Step)
def _fp16(step: Fp16Step, model: WorkingModel, ctx: CompressionContext) -> WorkingModel:
    from edgeops.models import export_onnx

    if model.onnx_path is not None:
        raise CompressionError(f"target {ctx.target.name!r}: fp16 must be applied to the float model, before other ONNX steps")
    if ctx.target.runtime == "torch":  # the artifact is saved in half precision at export (torch_runtime.save_artifact)
        model.half = True
        model.notes.append({"step": "fp16", "format": "torch half", "data": "none", "privacy": "post-processing, no cost"})
        return model
    output = ctx.workdir / "fp16.onnx"
    export_onnx(_HalfPrecision(copy.deepcopy(model.torch_model)), ctx.n_features, output)
    model.onnx_path = output
    model.notes.append({"step": "fp16", "data": "none", "privacy": "post-processing, no cost"})
    return model


# ---------------------------------------------------------------- measurement
def onnx_logits(path: Path, x: np.ndarray, threads: int = 1) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"features": x[i:i + 256]})[0] for i in range(0, len(x), 256)]).astype(np.float64)


def artifact_logits(runtime: str, path: Path, x: np.ndarray) -> np.ndarray:
    """Logits of an artifact on its own runtime: ONNX Runtime here, the others in their tool environments."""
    if runtime == "onnxruntime":
        return onnx_logits(path, x)
    from edgeops.runtimes import predict

    return predict(runtime, path, x)


def model_size_facts(path: Path) -> dict:
    import onnx

    graph = onnx.load(str(path)).graph
    from onnx import numpy_helper

    parameters = sum(int(np.prod(numpy_helper.to_array(t).shape)) for t in graph.initializer)
    return {"file_bytes": path.stat().st_size, "onnx_initializer_elements": parameters}


def build_target(declaration: Declaration, target: TargetSpec, dp_model: dict, workdir: Path, ledger=None, run_id: str = "") -> dict:
    """The entry point: apply the target's recipe to the DP model, export, check, measure. Returns the record."""
    from dataclasses import replace

    from edgeops.training import TrainingData
    from edgeops.validation import feature_bounds, with_dp_bounds

    # With DP-estimated bounds, every step (model rebuild, calibration, fine-tuning) sees them as declared ones.
    declaration = replace(declaration, spec=with_dp_bounds(declaration.spec, dp_model["ref"]))
    data = TrainingData.from_ref(dp_model["ref"], declaration.spec)
    low, high = feature_bounds(declaration.spec, data.features)
    # Build in a staging folder and swap it in only when everything succeeded: a failed or killed attempt never
    # touches the artifact an earlier record points to.
    final_dir = workdir
    workdir = final_dir.with_name(f"{final_dir.name}.staging-{uuid.uuid4().hex[:8]}")
    workdir.mkdir(parents=True)
    try:
        record = _build_in(declaration, target, dp_model, workdir, final_dir, data, low, high, ledger, run_id)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    retired = final_dir.with_name(f"{final_dir.name}.retired-{uuid.uuid4().hex[:8]}")
    if final_dir.exists():
        final_dir.rename(retired)
    workdir.rename(final_dir)
    shutil.rmtree(retired, ignore_errors=True)
    return record


def _build_in(declaration: Declaration, target: TargetSpec, dp_model: dict, workdir: Path, final_dir: Path, data, low, high,
              ledger, run_id: str) -> dict:
    import onnx
    import torch_pruning as tp

    from edgeops.models import load_weights
    from edgeops.training import evaluate_logits, new_model

    spec = declaration.spec
    ref = dp_model["ref"]
    from edgeops.runtimes import TOOL_RUNTIMES, tool_python

    if target.runtime in TOOL_RUNTIMES:
        tool_python(target.runtime)  # before any step that reads private data or charges the ledger
    ctx = CompressionContext(declaration, target, workdir, len(data.features), low, high, spec.training.seed, ledger, data, run_id,
                             dp_model["weights_sha256"])
    torch.set_num_threads(1)
    working = WorkingModel(load_weights(new_model(spec, data), Path(dp_model["weights_path"])).eval())
    float_bytes = Path(dp_model["onnx_path"]).stat().st_size
    shrinks = any(isinstance(s, (PruneStep, Int8Step, Fp16Step, DistillStep)) for s in target.recipe)
    if target.budgets.max_size_kb is not None and float_bytes / 1024 > target.budgets.max_size_kb and not shrinks:
        raise CompressionError(f"target {target.name!r}: budgets.max_size_kb = {target.budgets.max_size_kb:g} but the float model "
                               f"is already {float_bytes / 1024:.1f} KB and the recipe has no step that shrinks it")
    for step in target.recipe:
        handler = STEP_HANDLERS.get(type(step))
        if handler is None:
            raise CompressionError(f"target {target.name!r}: no handler for recipe step {step.step!r}")
        working = handler(step, working, ctx)
    macs, torch_params = tp.utils.count_ops_and_params(working.torch_model, torch.zeros(1, ctx.n_features))
    # Parity compares the artifact with the float graph it was quantized or converted from (after pruning and
    # fine-tuning, that is the pruned model); the accuracy drop compares it with the DP model.
    if any(isinstance(s, (PruneStep, DistillStep)) for s in target.recipe):
        from edgeops.models import export_onnx

        parity_reference = workdir / "pruned_float.onnx"  # the pruned or distilled float model the later steps started from
        export_onnx(working.torch_model, ctx.n_features, parity_reference)
    else:
        parity_reference = Path(dp_model["onnx_path"])
    if target.runtime == "onnxruntime":
        artifact = _ensure_onnx(working, ctx)
        onnx.checker.check_model(str(artifact), full_check=True)
        final = workdir / f"{target.name}.onnx"
        shutil.copyfile(artifact, final)
        notes = {"runtime_cpu": "CPUExecutionProvider"}
    elif target.runtime == "torch":
        from edgeops.runtimes.torch_runtime import save_artifact

        final = workdir / f"{target.name}.safetensors"
        save_artifact(working.torch_model, final, "fp16" if working.half else "fp32")
        notes = {"runtime_cpu": f"torch {torch.__version__} eager, CPU (accuracy and parity measured here; CUDA where the device has it)"}
    else:
        from edgeops import runtimes

        final = workdir / f"{target.name}{runtimes.ARTIFACT_SUFFIX[target.runtime]}"
        notes = {"runtime_cpu": runtimes.TOOL_RUNTIMES[target.runtime].title,
                 **runtimes.export(target.runtime, working.torch_model, final)}

    float_logits = onnx_logits(Path(dp_model["onnx_path"]), data.x_test)
    reference_logits = float_logits if parity_reference == Path(dp_model["onnx_path"]) else onnx_logits(parity_reference, data.x_test)
    try:
        logits = artifact_logits(target.runtime, final, data.x_test)
    except Exception as err:  # e.g. an fp16 kernel missing from the CPU provider: say so, do not fake it
        logits = None
        notes["evaluation"] = f"not measured on this host: {type(err).__name__}: {str(err)[:200]}"
    precision = target.precision
    tolerance = target.parity_tolerance or DEFAULT_PARITY[precision]
    float_metrics = evaluate_logits(float_logits, data.y_test, len(data.classes))
    record = {
        "target": target.name, "runtime": target.runtime, "precision": precision, "device": target.device,
        "recipe": [s.model_dump(mode="json") for s in target.recipe], "steps": working.notes,
        "artifact_path": str(final_dir / final.name), "sha256": file_sha256(final), "size_bytes": final.stat().st_size,
        "float_size_bytes": float_bytes, "parameters": int(torch_params), "macs": int(macs),
        "float_accuracy": float_metrics["accuracy"], "float_per_class_accuracy": float_metrics["per_class_accuracy"],
        "privacy": "post-processing of DP weights; " + "; ".join(f"{n['step']}: {n['privacy']}" for n in working.notes) if working.notes else
                   "the DP model itself (no transformation)",
        "dataset_digest": ref["digest"], "parent_weights_sha256": dp_model["weights_sha256"], "notes": notes,
        "parity_tolerance": tolerance,
    }
    if logits is not None:
        metrics = evaluate_logits(logits, data.y_test, len(data.classes))
        scale = float(np.abs(reference_logits).max()) or 1.0
        record.update({
            "accuracy": metrics["accuracy"], "per_class_accuracy": metrics["per_class_accuracy"], "ece": metrics["ece"],
            "accuracy_drop_points": round(100 * (float_metrics["accuracy"] - metrics["accuracy"]), 4),
            "parity_reference": parity_reference.name,
            "parity_max_abs_diff": float(np.abs(logits - reference_logits).max()),
            "parity_relative": float(np.abs(logits - reference_logits).max() / scale),
            "top1_agreement": float((logits.argmax(1) == reference_logits.argmax(1)).mean()),
        })
    (workdir / "record.json").write_text(json.dumps(record, indent=1))
    return record


def budget_outcomes(record: dict, target: TargetSpec) -> dict[str, tuple[bool | None, str]]:
    """Per budget: (passed, description with the measured number). None: not measurable here."""
    budgets = target.budgets
    outcomes: dict[str, tuple[bool | None, str]] = {}
    size_kb = record["size_bytes"] / 1024
    if budgets.max_size_kb is not None:
        outcomes["size"] = (size_kb <= budgets.max_size_kb, f"{size_kb:.1f} KB (budget {budgets.max_size_kb:g} KB)")
    else:
        outcomes["size"] = (True, f"{size_kb:.1f} KB (no size budget)")
    if "accuracy" not in record:
        outcomes["accuracy_drop"] = (None, record["notes"].get("evaluation", "not measured"))
        outcomes["parity"] = (None, record["notes"].get("evaluation", "not measured"))
        return outcomes
    drop = record["accuracy_drop_points"]
    limit = budgets.max_accuracy_drop_points
    outcomes["accuracy_drop"] = (limit is None or drop <= limit,
                                 f"{drop:.2f} points ({100 * record['accuracy']:.2f}% vs float {100 * record['float_accuracy']:.2f}%)"
                                 + (f", budget {limit:g}" if limit is not None else ", no budget"))
    outcomes["parity"] = (record["parity_relative"] <= record["parity_tolerance"],
                          f"max |logit diff| {record['parity_max_abs_diff']:.4g} = {record['parity_relative']:.3g} of the float range "
                          f"(tolerance {record['parity_tolerance']:g} for {record['precision']}); top-1 agreement {record['top1_agreement']:.2%}")
    return outcomes
