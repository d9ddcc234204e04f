"""Helpers shared by the benchmark scripts: load the default pipeline's validated data, write result tables."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PRETRAINED_CACHE = ROOT / ".edgeops" / "benchmarks" / "pretrained"  # under the ignored state folder


def machine_facts() -> dict:
    import psutil

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "load_avg_1m": os.getloadavg()[0],
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def digits_training_data(split_seed: int | None = None):
    """The default declaration's data, split exactly as the pipeline does (no Dagster, no MLflow)."""
    import tempfile

    from edgeops.data import load_source, split_frame, store_splits
    from edgeops.spec import load_declaration
    from edgeops.training import TrainingData

    declaration = load_declaration(ROOT / "pipelines" / "digits.yaml")
    data = load_source(declaration)
    splits, notes = split_frame(data, declaration.spec.dataset)
    ref = store_splits(data, splits, notes, Path(tempfile.mkdtemp()))
    return declaration, TrainingData.from_ref(ref, declaration.spec), ref


def train_and_build_targets(
    declaration, data, ref, work: Path, seed: int | None = None, local_only: bool = False, extra_targets: tuple = ()
) -> dict:
    """Train the DP model as the pipeline does (no Dagster, no MLflow) and build each target's artifact from it.
    Returns {target name: compression record}; `local_only` skips targets whose device is not this host's CPU;
    `extra_targets` (TargetSpecs) are built beside the declared ones."""
    from dataclasses import replace

    from edgeops.compression import build_target
    from edgeops.ledger import Budget, PrivacyLedger

    spec = declaration.spec
    if seed is not None:
        spec = spec.model_copy(update={"training": spec.training.model_copy(update={"seed": seed})})
    dp_model, _ = declared_dp_record(replace(declaration, spec=spec), data, ref, work)
    ledger = PrivacyLedger(
        work / "ledger.sqlite", Budget(100, spec.privacy.delta)
    )  # benchmark-only ledger: real budgets live in the pipeline's
    targets = [t for t in spec.targets if not local_only or spec.device(t.device).kind == "local"] + list(extra_targets)
    return {t.name: build_target(declaration, t, dp_model, work / t.name, ledger) for t in targets}


def _declared_dp_training(declaration, data, work: Path) -> dict:
    from edgeops.training import cached_pretraining, plan_dp_training, train_dp

    spec = declaration.spec
    initial = cached_pretraining(spec, data, PRETRAINED_CACHE)[0] if spec.training.pretrain else None
    plan = plan_dp_training(spec, data)
    return {**train_dp(spec, data, plan, work, initial_model=initial), "plan": plan}


def declared_dp_model(declaration, data, work: Path):
    """The declared model trained as the pipeline trains it: public pre-training when the declaration has it (cached
    between scripts), then DP-SGD. Benchmarks use this, never a model trained without the declared pre-training."""
    return _declared_dp_training(declaration, data, work)["model"].eval()


def benchmark_dp_model(ref, weights_path: Path, onnx_path: Path, weights_sha256: str, noise: str | None):
    """What edgeops.compression.build_target reads of a DP model a benchmark trained outside the pipeline: a partial
    DpModel, built without validation because the fields the training stage adds (its MLflow run, metrics, the full
    privacy statement) do not exist here. Never stored, never released."""
    from edgeops.records import CentralPrivacy, DpModel

    return DpModel.model_construct(
        ref=ref,
        weights_path=str(weights_path),
        onnx_path=str(onnx_path),
        weights_sha256=weights_sha256,
        mlflow_run_id="",
        privacy=CentralPrivacy.model_construct(noise=noise),
    )


def declared_dp_record(declaration, data, ref, work: Path):
    """declared_dp_model, saved and described as the training stage describes it to the compression stage: weights,
    ONNX, and the privacy section (whose noise statement each artifact carries on). Returns (record, model)."""
    from edgeops.models import export_onnx, save_weights, weights_sha256
    from edgeops.training import noise_statement

    record = _declared_dp_training(declaration, data, work / "train")
    model = record["model"].eval()
    export_onnx(model, len(data.features), work / "float.onnx")
    save_weights(model, work / "model.safetensors")
    noise = noise_statement(record.get("noise"))
    return benchmark_dp_model(ref, work / "model.safetensors", work / "float.onnx", weights_sha256(model), noise), model


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial rate."""
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * ((p * (1 - p) / trials + z * z / (4 * trials * trials)) ** 0.5) / (1 + z * z / trials)
    return (max(0.0, centre - half), min(1.0, centre + half))


def write_table(name: str, rows: list[dict], notes: list[str]) -> Path:
    """benchmarks/results/<name>.md (a Markdown table) and <name>.json (rows + machine facts)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = [
        f"# {name}",
        "",
        *[f"- {n}" for n in notes],
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |")
    facts = machine_facts()
    lines += ["", f"Machine: {facts}"]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps({"rows": rows, "notes": notes, "machine": facts}, indent=1))
    print("\n".join(lines))
    return RESULTS / f"{name}.md"


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
