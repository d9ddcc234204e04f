"""The benchmark stage: send a target's artifact to its declared device and collect the measurements."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgeops.data import read_split
from edgeops.hil.runner import BenchmarkError, run_isolated
from edgeops.records import BenchmarkRecord
from edgeops.spec import DeviceSpec, PipelineSpec, TargetSpec

if TYPE_CHECKING:
    from edgeops.records import DatasetRef


class MeasuredArtifact(Protocol):
    """What a benchmark reads of the artifact it measures: the compression stage's TargetArtifact, or a registered
    version's file downloaded by a release (edgeops.registry.DownloadedArtifact)."""

    @property
    def artifact_path(self) -> str: ...

    @property
    def sha256(self) -> str: ...

    @property
    def macs(self) -> int | None: ...


def cuda_available(runtime: str) -> tuple[bool, str]:
    """Whether this host can run `runtime` on a CUDA device, and what was found (or why not)."""
    if runtime == "onnxruntime":
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            return True, "onnxruntime CUDAExecutionProvider"
        return False, (
            f"no CUDA device for ONNX Runtime: onnxruntime {ort.__version__} here has no CUDAExecutionProvider "
            f"(providers: {', '.join(ort.get_available_providers())})"
        )
    import torch

    if torch.cuda.is_available():
        return True, f"torch CUDA ({torch.cuda.get_device_name(0)})"
    return False, (
        f"no CUDA device: torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none, a CPU wheel'}) "
        "reports torch.cuda.is_available() False"
    )


def benchmark_target(
    spec: PipelineSpec,
    target: TargetSpec,
    compressed: MeasuredArtifact,
    ref: DatasetRef,
    max_seconds: float = 5.0,
    root: Path | None = None,
) -> BenchmarkRecord:
    """`root`: the project root that an agent device's ca_cert is relative to. The harness's result crosses a process
    (or the network) as JSON, so it is validated into the record here, where it arrives."""
    return BenchmarkRecord.model_validate(_measure(spec, target, compressed, ref, max_seconds, root))


def _measure(
    spec: PipelineSpec,
    target: TargetSpec,
    compressed: MeasuredArtifact,
    ref: DatasetRef,
    max_seconds: float,
    root: Path | None,
) -> dict[str, Any]:
    device = spec.device(target.device)
    test = read_split(ref, "test")
    index = {c: i for i, c in enumerate(spec.dataset.classes)}
    x = test[ref.features].to_numpy(dtype=np.float32)
    y = np.array([index[int(v)] for v in test[ref.label]], dtype=np.int64)
    base = {
        "target": target.name,
        "device_name": device.name,
        "device_kind": device.kind,
        "artifact_sha256": compressed.sha256,
        "batch_sizes": target.batch_sizes,
    }
    # What every measurement is asked, on whichever device and runtime: the declared batch sizes and pinning. A power
    # meter is read on this host only (an agent reads its own).
    measurement: dict[str, Any] = {
        "batch_sizes": target.batch_sizes,
        "threads": device.threads,
        "cores": device.cores,
        "macs": compressed.macs,
        "max_seconds": max_seconds,
    }
    power_meter = device.power_meter.model_dump() if device.power_meter else None
    if device.kind == "cuda":
        present, why = cuda_available(target.runtime)
        if not present:
            return {**base, "measured": False, "reason": why}
        on_gpu = {**measurement, "threads": 1, "cores": None}  # the GPU does the work, not pinned host cores
        result = run_isolated(
            compressed.artifact_path,
            x,
            y,
            **on_gpu,
            power_meter=power_meter,
            runtime=target.runtime,
            accelerator="cuda",
        )
        return {**base, "measured": True, "accelerator": why, **result}
    if target.runtime == "torch":
        if device.kind != "local":
            return {
                **base,
                "measured": False,
                "reason": "the device agent runs ONNX Runtime only; torch artifacts are benchmarked "
                "on local and cuda devices",
            }
        result = run_isolated(compressed.artifact_path, x, y, **measurement, power_meter=power_meter, runtime="torch")
    elif target.runtime != "onnxruntime":
        from edgeops import runtimes

        if device.kind != "local":
            return {
                **base,
                "measured": False,
                "reason": f"the device agent runs ONNX Runtime only; {target.runtime} artifacts are "
                "benchmarked on local devices, in the runtime's tool environment",
            }
        result = runtimes.benchmark(
            target.runtime, Path(compressed.artifact_path), x, y, **measurement, power_meter=power_meter
        )
    elif device.kind == "local":
        result = run_isolated(compressed.artifact_path, x, y, **measurement, power_meter=power_meter)
    else:
        from edgeops.hil.client import client_for

        token = os.environ.get(device.token_env or "", "")
        if not token:
            raise BenchmarkError(f"device {device.name!r}: env var {device.token_env} holding its token is not set")
        import secrets

        nonce = secrets.token_hex(16)  # public: it only makes this request's receipt unique
        answer = client_for(device, token, root).benchmark(
            Path(compressed.artifact_path).read_bytes(),
            compressed.sha256,
            x,
            y,
            **measurement,
            nonce=nonce,
        )
        return {**base, "measured": True, **receipt_numbers(answer, device, nonce, compressed.sha256)}
    return {**base, "measured": True, **result}


def receipt_numbers(answer: dict[str, Any], device: DeviceSpec, nonce: str, artifact_sha256: str) -> dict[str, Any]:
    """An agent's answer reduced to what its signed receipt says (ReceiptError, with the reason, when it does not
    verify against the device's declared key): the numbers a card shows come from the signed body only."""
    from edgeops.hil.receipts import verify_receipt

    receipt = answer.get("receipt")
    body = verify_receipt(
        receipt,
        device.receipt_public_key,
        nonce=nonce,
        artifact_sha256=artifact_sha256,
        where=f"device {device.name!r} benchmark receipt",
    )
    return {
        **body["result"],
        "device_facts": body["device"],
        "receipt": receipt,
        "receipt_verified": {"key": body["key"], "nonce": body["nonce"], "time": body["time"]},
    }


def latency_memory_outcomes(record: BenchmarkRecord, target: TargetSpec) -> dict[str, tuple[bool | None, str]]:
    budgets = target.budgets
    if not record.measured or record.latency is None or record.memory_kb is None:
        reason = record.reason or "not measured"
        return {"latency": (None, reason), "memory": (None, reason)}
    batch1 = record.batch1
    p95 = (
        batch1.p95_ms
        if batch1 is not None and batch1.p95_ms is not None
        else min(v.p95_ms for v in record.latency.values() if v.p95_ms is not None)
    )
    memory = record.memory_kb
    where = "GPU memory allocated" if record.on_gpu else "peak memory"
    outcomes: dict[str, tuple[bool | None, str]] = {
        "latency": (
            budgets.max_latency_p95_ms is None or p95 <= budgets.max_latency_p95_ms,
            f"p95 {p95:.4f} ms at batch 1"
            + (f" (budget {budgets.max_latency_p95_ms:g} ms)" if budgets.max_latency_p95_ms else ", no budget"),
        ),
        "memory": (
            budgets.max_peak_memory_kb is None or memory <= budgets.max_peak_memory_kb,
            f"{where} {memory} KB beyond baseline"
            + (f" (budget {budgets.max_peak_memory_kb:g} KB)" if budgets.max_peak_memory_kb else ", no budget"),
        ),
    }
    return outcomes
