"""The torch runtime: eager PyTorch on a CPU or a CUDA device, for GPU targets.

The artifact is one safetensors file: the weights (fp16 when the recipe says so) and, in the file's metadata, the
model's architecture as JSON, so a device rebuilds the network from edgeops.models without pickle or code in
the file. Inputs and outputs stay float32 (the callers' buffers); an fp16 artifact computes in fp16 inside.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:
    import torch

# One metadata entry holding JSON: safetensors writes its metadata map in hash order, which differs between
# processes, so two entries made the same artifact's bytes (and sha256) differ from run to run.
METADATA_KEY = "edgeops"


def save_artifact(model: torch.nn.Module, path: Path, precision: str = "fp32") -> None:
    from safetensors.torch import save_file

    from edgeops.models import describe_architecture

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if precision == "fp16":
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        state,
        str(path),
        metadata={
            METADATA_KEY: json.dumps(
                {"architecture": describe_architecture(model), "precision": precision}, sort_keys=True
            )
        },
    )


def load_artifact(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, torch.dtype]:
    """The network, on `device`, in the artifact's precision. Strict loading: a rebuilt shape that differs is an
    error."""
    import torch
    from safetensors.torch import load_file

    from edgeops.models import build_from_architecture

    metadata = read_metadata(path)
    model = build_from_architecture(metadata["architecture"])
    precision = metadata["precision"]
    if precision == "fp16":
        model = model.half()
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.to(device).eval(), (torch.float16 if precision == "fp16" else torch.float32)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The artifact's architecture and precision, or a ValueError naming the file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if METADATA_KEY not in metadata:
        raise ValueError(
            f"{path}: not an edgeops torch artifact (no {METADATA_KEY!r} entry in its safetensors metadata)"
        )
    return cast("dict[str, Any]", json.loads(metadata[METADATA_KEY]))


class TorchSession:
    """The harness's view of a torch artifact: `run(x)` takes and returns float32 numpy. On CUDA, copying the
    result back to the host synchronises the stream, so the harness's wall clock covers the kernels."""

    runtime = "torch"

    @staticmethod
    def preload() -> None:
        import torch  # noqa: F401 - before the harness's memory baseline, as the ONNX Runtime import is

    def __init__(self, path: str, threads: int, device: str = "cpu"):
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("no CUDA device: torch.cuda.is_available() is False")
        torch.set_num_threads(threads)
        self._torch = torch
        self.device, self.on_gpu = device, device.startswith("cuda")
        self.model, self.dtype = load_artifact(path, device)
        self.version = torch.__version__
        self.provider = f"CUDA ({torch.cuda.get_device_name(device)})" if self.on_gpu else "CPU (eager)"
        self.max_batch = None

    def run(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            inputs = torch.from_numpy(x).to(self.device, non_blocking=False)
            return cast(np.ndarray, self.model(inputs.to(self.dtype)).float().cpu().numpy())

    # The harness asks a session for these where they exist: on a GPU, host RSS and a CPU matmul say nothing.
    def device_facts(self) -> dict[str, Any]:
        return cuda_facts(self.device) if self.on_gpu else {}

    def reset_device_memory(self) -> None:
        if self.on_gpu:
            self._torch.cuda.synchronize(self.device)
            self._torch.cuda.reset_peak_memory_stats(self.device)
            self._memory_baseline = self._torch.cuda.memory_allocated(self.device)

    def device_memory_peak_kb(self) -> int | None:
        if not self.on_gpu:
            return None
        self._torch.cuda.synchronize(self.device)
        return max(0, self._torch.cuda.max_memory_allocated(self.device) - self._memory_baseline) // 1024

    def peak_gflops(self, seconds: float = 0.5, size: int = 4096) -> float | None:
        """The roofline ceiling on the GPU: a dense matmul in the artifact's precision, timed with CUDA events."""
        if not self.on_gpu:
            return None
        torch = self._torch
        a = torch.randn(size, size, device=self.device, dtype=self.dtype)
        torch.matmul(a, a)
        torch.cuda.synchronize(self.device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        runs, elapsed_ms = 0, 0.0
        while elapsed_ms < seconds * 1000:
            start.record()
            for _ in range(10):
                torch.matmul(a, a)
            end.record()
            end.synchronize()
            elapsed_ms += start.elapsed_time(end)
            runs += 10
        return 2 * size**3 * runs / (elapsed_ms / 1000) / 1e9


def predict(path: str | Path, x: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Logits on `device` (float64, like compression.measurement.onnx_logits)."""
    session = TorchSession(str(path), threads=1, device=device)
    return np.concatenate(
        [session.run(np.ascontiguousarray(x[i : i + 256], dtype=np.float32)) for i in range(0, len(x), 256)]
    ).astype(np.float64)


def cuda_facts(device: str = "cuda") -> dict[str, Any]:
    """What the harness records about a CUDA device (its name, capability, memory; torch's CUDA version)."""
    import torch

    props = torch.cuda.get_device_properties(device)
    return {
        "gpu": props.name,
        "gpu_capability": f"{props.major}.{props.minor}",
        "gpu_memory_mb": props.total_memory // 2**20,
        "gpu_multiprocessors": props.multi_processor_count,
        "cuda_version": torch.version.cuda,
    }
