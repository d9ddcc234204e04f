"""The benchmark stage: send a target's artifact to its declared device and collect the measurements."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgeops.data import read_split
from edgeops.hil.runner import BenchmarkError, run_isolated
from edgeops.spec import PipelineSpec, TargetSpec


def cuda_available() -> tuple[bool, str]:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return True, "onnxruntime CUDAExecutionProvider"
    try:
        import torch

        if torch.cuda.is_available():
            return True, f"torch CUDA ({torch.cuda.get_device_name(0)})"
    except Exception:
        pass
    return False, "no CUDA device: onnxruntime has no CUDAExecutionProvider and torch.cuda.is_available() is False"


def benchmark_target(spec: PipelineSpec, target: TargetSpec, compressed: dict, ref: dict, max_seconds: float = 5.0) -> dict:
    device = spec.device(target.device)
    test = read_split(ref, "test")
    index = {c: i for i, c in enumerate(spec.dataset.classes)}
    x = test[ref["features"]].to_numpy(dtype=np.float32)
    y = np.array([index[int(v)] for v in test[ref["label"]]], dtype=np.int64)
    base = {"target": target.name, "device_name": device.name, "device_kind": device.kind, "artifact_sha256": compressed["sha256"],
            "batch_sizes": target.batch_sizes}
    if device.kind == "cuda":
        present, why = cuda_available()
        if not present:
            return {**base, "measured": False, "reason": why}
        # A CUDA target with a CUDA provider: not reachable on this project's machines; kept explicit rather than faked.
        return {**base, "measured": False, "reason": f"{why} found, but the CUDA benchmark path is not implemented yet"}
    if target.runtime != "onnxruntime":
        from edgeops import runtimes

        if device.kind != "local":
            return {**base, "measured": False, "reason": f"the device agent runs ONNX Runtime only; {target.runtime} artifacts are "
                                                          "benchmarked on local devices, in the runtime's tool environment"}
        result = runtimes.benchmark(target.runtime, Path(compressed["artifact_path"]), x, y, target.batch_sizes, device.threads,
                                    device.cores, compressed.get("macs"), max_seconds=max_seconds,
                                    power_meter=device.power_meter.model_dump() if device.power_meter else None)
    elif device.kind == "local":
        result = run_isolated(compressed["artifact_path"], x, y, target.batch_sizes, device.threads, device.cores,
                              compressed.get("macs"), max_seconds=max_seconds,
                              power_meter=device.power_meter.model_dump() if device.power_meter else None)
    else:
        from edgeops.hil.client import AgentClient

        token = os.environ.get(device.token_env or "", "")
        if not token:
            raise BenchmarkError(f"device {device.name!r}: env var {device.token_env} holding its token is not set")
        result = AgentClient(device.name, device.url, token).benchmark(
            Path(compressed["artifact_path"]).read_bytes(), compressed["sha256"], x, y, batch_sizes=target.batch_sizes,
            threads=device.threads, cores=device.cores, macs=compressed.get("macs"), max_seconds=max_seconds)
    return {**base, "measured": True, **result}


def latency_memory_outcomes(record: dict, target: TargetSpec) -> dict[str, tuple[bool | None, str]]:
    budgets = target.budgets
    if not record.get("measured"):
        return {"latency": (None, record["reason"]), "memory": (None, record["reason"])}
    p95 = record["latency"]["1"]["p95_ms"] if "1" in record["latency"] else min(v["p95_ms"] for v in record["latency"].values() if "p95_ms" in v)
    memory = record["peak_rss_beyond_baseline_kb"]
    outcomes = {
        "latency": (budgets.max_latency_p95_ms is None or p95 <= budgets.max_latency_p95_ms,
                    f"p95 {p95:.4f} ms at batch 1" + (f" (budget {budgets.max_latency_p95_ms:g} ms)" if budgets.max_latency_p95_ms else ", no budget")),
        "memory": (budgets.max_peak_memory_kb is None or memory <= budgets.max_peak_memory_kb,
                   f"peak memory {memory} KB beyond baseline" + (f" (budget {budgets.max_peak_memory_kb:g} KB)" if budgets.max_peak_memory_kb else ", no budget")),
    }
    return outcomes
