"""Runs one benchmark in a child process: JSON request in, JSON result out, inputs as .npy (no pickle).

A model that crashes the runtime kills only the child; a benchmark past its timeout is killed. Either way the
caller gets a clear error instead of dying with it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

import numpy as np

from edgeops.errors import EdgeopsError
from edgeops.runtimes import save_child_inputs


class BenchmarkError(EdgeopsError):
    pass


def run_isolated(
    model_path: str | Path,
    inputs: np.ndarray,
    labels: np.ndarray | None,
    *,
    batch_sizes: list[int],
    threads: int = 1,
    cores: list[int] | None = None,
    macs: int | None = None,
    timeout_s: float = 300.0,
    max_seconds: float = 10.0,
    min_runs: int = 200,
    power_meter: dict[str, Any] | None = None,
    runtime: str = "onnxruntime",
    accelerator: str = "cpu",
) -> dict[str, Any]:
    """`runtime`: onnxruntime (.onnx) or torch (.safetensors, edgeops.runtimes.torch_runtime); `accelerator`: cpu or
    cuda (ONNX Runtime's CUDAExecutionProvider, or torch on the GPU)."""
    with tempfile.TemporaryDirectory(prefix="edgeops-bench-") as tmp:
        folder = Path(tmp)
        save_child_inputs(folder, inputs, labels)  # the child (_child, below) reads them back from the folder
        request = {
            "model_path": str(model_path),
            "batch_sizes": batch_sizes,
            "threads": threads,
            "cores": cores,
            "macs": macs,
            "max_seconds": max_seconds,
            "min_runs": min_runs,
            "folder": str(folder),
            "power_meter": power_meter,
            "runtime": runtime,
            "accelerator": accelerator,
        }
        (folder / "request.json").write_text(json.dumps(request))
        try:
            completed = subprocess.run(
                [sys.executable, "-m", "edgeops.hil.runner", str(folder / "request.json")],
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise BenchmarkError(
                f"benchmark of {Path(model_path).name} exceeded its timeout of {timeout_s:g} s and was stopped"
            ) from None
        result_file = folder / "result.json"
        if completed.returncode != 0 or not result_file.exists():
            tail = (completed.stderr or "").strip().splitlines()[-3:]
            raise BenchmarkError(
                f"the runtime failed on {Path(model_path).name} (exit code {completed.returncode}): "
                f"{' | '.join(tail)[:600]}"
            )
        return cast("dict[str, Any]", json.loads(result_file.read_text()))


def _child(request_file: str) -> None:
    from edgeops.hil.harness import run_benchmark, settings_from_request

    request = json.loads(Path(request_file).read_text())
    folder = Path(request["folder"])
    inputs = np.load(folder / "inputs.npy", allow_pickle=False)
    labels = np.load(folder / "labels.npy", allow_pickle=False) if (folder / "labels.npy").exists() else None
    open_session = None
    if request["runtime"] == "torch":
        from edgeops.runtimes.torch_runtime import TorchSession

        TorchSession.preload()
        open_session = lambda path, threads: TorchSession(path, threads, request["accelerator"])  # noqa: E731
    provider = "CUDAExecutionProvider" if request["accelerator"] == "cuda" else "CPUExecutionProvider"
    result = run_benchmark(
        request["model_path"],
        inputs,
        labels,
        **settings_from_request(request),
        provider=provider,
        open_session=open_session,
    )
    (folder / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    _child(sys.argv[1])
