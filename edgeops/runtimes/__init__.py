"""Runtime formats beyond ONNX: ExecuTorch (.pte, XNNPACK delegate) and LiteRT (.tflite, XNNPACK delegate).

Why a tool environment per runtime: neither converter can be installed beside edgeops' own packages. ExecuTorch
pulls hydra-core, which pins antlr4 4.9 (dagster's asset-selection parser needs the 4.13 runtime); litert-torch
pulls litert-converter -> xdsl, which caps typing-extensions below 4.13 (pydantic 2.14 and cattrs need 4.14). So
`make runtimes` builds `.runtimes/<name>` from the pinned `deploy/runtimes/<name>.txt`, and edgeops talks to it
through `edgeops.runtimes.worker` in a child process. Only files cross: the model as its architecture (JSON) and
weights (safetensors), inputs and outputs as .npy, results as JSON. No pickle, no module objects.

The same harness (edgeops.hil.harness) measures every runtime, so latency, memory and accuracy mean the same thing.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from edgeops.errors import CompressionError

if TYPE_CHECKING:
    import torch

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # .../edgeops
REPO_ROOT = PACKAGE_DIR.parent
EXPORT_MAX_BATCH = 256  # ExecuTorch plans memory for the largest batch it will see; larger batches are refused


@dataclass(frozen=True)
class ToolRuntime:
    name: str
    suffix: str
    title: str
    requirements: str  # relative to the repository root

    @property
    def requirements_path(self) -> Path:
        return REPO_ROOT / self.requirements


TOOL_RUNTIMES = {
    "executorch": ToolRuntime(
        "executorch", ".pte", "ExecuTorch 1.5 (XNNPACK delegate)", "deploy/runtimes/executorch.txt"
    ),
    "litert": ToolRuntime("litert", ".tflite", "LiteRT 2.3 (XNNPACK delegate)", "deploy/runtimes/litert.txt"),
}
ARTIFACT_SUFFIX = {
    "onnxruntime": ".onnx",
    "torch": ".safetensors",
    **{name: rt.suffix for name, rt in TOOL_RUNTIMES.items()},
}


class RuntimeNotInstalled(CompressionError):
    """A target's runtime has no tool environment here: the message says how to install it."""


class RuntimeToolError(CompressionError):
    """The runtime's tool environment ran but failed (conversion refused, the runtime rejected the artifact)."""


def runtimes_dir() -> Path:
    return Path(os.environ.get("EDGEOPS_RUNTIMES_DIR") or REPO_ROOT / ".runtimes")


def requirements_digest(runtime: ToolRuntime) -> str:
    return hashlib.sha256(runtime.requirements_path.read_bytes()).hexdigest()


def tool_python(name: str) -> Path:
    """The tool environment's interpreter, or a RuntimeNotInstalled that says what to run."""
    runtime = TOOL_RUNTIMES[name]
    home = runtimes_dir() / name
    python, ready = home / "bin" / "python", home / ".ready"
    hint = (
        f"run `make runtimes` (builds {home} from {runtime.requirements}; its converter cannot share edgeops' own "
        f"environment, see edgeops/runtimes/__init__.py)"
    )
    if not python.exists() or not ready.exists():
        raise RuntimeNotInstalled(f"runtime {name!r} ({runtime.title}) is not installed: {hint}")
    if ready.read_text().strip() != requirements_digest(runtime):
        raise RuntimeNotInstalled(f"runtime {name!r}: {home} was built from an older {runtime.requirements}: {hint}")
    return python


def available(name: str) -> tuple[bool, str]:
    try:
        tool_python(name)
        return True, ""
    except RuntimeNotInstalled as err:
        return False, str(err)


def save_child_inputs(folder: Path, inputs: np.ndarray, labels: np.ndarray | None = None) -> tuple[Path, Path | None]:
    """Hand a child process (a benchmark or a runtime worker) its inputs as float32 and its labels as int64 .npy files
    in its folder, never pickled; returns their paths, the labels' None when there are none."""
    inputs_path = folder / "inputs.npy"
    np.save(inputs_path, np.ascontiguousarray(inputs, dtype=np.float32), allow_pickle=False)
    if labels is None:
        return inputs_path, None
    labels_path = folder / "labels.npy"
    np.save(labels_path, np.asarray(labels, dtype=np.int64), allow_pickle=False)
    return inputs_path, labels_path


def _call(name: str, command: str, request: dict[str, Any], folder: Path, timeout_s: float) -> dict[str, Any]:
    """Run one worker command in the runtime's environment. Only the edgeops package is put on its path (through a
    link), so none of edgeops' own environment leaks into the tool's."""
    python = tool_python(name)
    path_dir = folder / "pythonpath"
    path_dir.mkdir(exist_ok=True)
    (path_dir / "edgeops").symlink_to(PACKAGE_DIR, target_is_directory=True)
    (folder / "request.json").write_text(json.dumps(request))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PYTHONPATH=str(path_dir), PYTHONNOUSERSITE="1", TF_CPP_MIN_LOG_LEVEL="2")
    try:
        completed = subprocess.run(
            [str(python), "-m", "edgeops.runtimes.worker", command, str(folder / "request.json")],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            cwd=folder,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeToolError(f"runtime {name!r}: {command} exceeded {timeout_s:g} s and was stopped") from None
    result = folder / "result.json"
    if completed.returncode != 0 or not result.exists():
        error = folder / "error.txt"
        detail = error.read_text() if error.exists() else " | ".join((completed.stderr or "").strip().splitlines()[-3:])
        raise RuntimeToolError(f"runtime {name!r}: {command} failed (exit code {completed.returncode}): {detail[:800]}")
    return cast("dict[str, Any]", json.loads(result.read_text()))


def export(
    name: str, model: torch.nn.Module, out: Path, timeout_s: float = 600.0, calibration: np.ndarray | None = None
) -> dict[str, Any]:
    """Convert a float torch model (SmallCNN, MLP or MobileNet, pruned or distilled included) to the runtime's format;
    with `calibration` inputs, quantize it to int8 with the runtime's own quantizer (edgeops.runtimes.worker)."""
    from safetensors.torch import save_file

    from edgeops.models import describe_architecture

    with tempfile.TemporaryDirectory(prefix=f"edgeops-{name}-export-") as tmp:
        folder = Path(tmp)
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(folder / "weights.safetensors"))
        exported = folder / f"model{TOOL_RUNTIMES[name].suffix}"
        request = {
            "runtime": name,
            "architecture": describe_architecture(model),
            "weights": str(folder / "weights.safetensors"),
            "out": str(exported),
            "calibration": None,
        }
        if calibration is not None:
            np.save(folder / "calibration.npy", np.ascontiguousarray(calibration, dtype=np.float32), allow_pickle=False)
            request["calibration"] = str(folder / "calibration.npy")
        result = _call(name, "export", request, folder, timeout_s)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(exported, out)
    return result


def predict(name: str, artifact: Path, x: np.ndarray, timeout_s: float = 300.0) -> np.ndarray:
    """Logits of the artifact on its own runtime (float64, like compression.measurement.onnx_logits). torch runs here,
    on the CPU (it is edgeops' own dependency); the others in their tool environments."""
    if name == "torch":
        from edgeops.runtimes.torch_runtime import predict as torch_predict

        return torch_predict(artifact, x)
    with tempfile.TemporaryDirectory(prefix=f"edgeops-{name}-predict-") as tmp:
        folder = Path(tmp)
        inputs_path, _ = save_child_inputs(folder, x)
        _call(
            name,
            "predict",
            {
                "runtime": name,
                "artifact": str(artifact),
                "inputs": str(inputs_path),
                "out": str(folder / "outputs.npy"),
            },
            folder,
            timeout_s,
        )
        return cast(np.ndarray, np.load(folder / "outputs.npy", allow_pickle=False).astype(np.float64))


def benchmark(
    name: str,
    artifact: Path,
    inputs: np.ndarray,
    labels: np.ndarray | None,
    *,
    batch_sizes: list[int],
    threads: int = 1,
    cores: list[int] | None = None,
    macs: int | None = None,
    max_seconds: float = 10.0,
    min_runs: int = 200,
    power_meter: dict[str, Any] | None = None,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """The harness's record (edgeops.hil.harness.run_benchmark) for an artifact of this runtime, measured in a fresh
    process of the runtime's environment."""
    with tempfile.TemporaryDirectory(prefix=f"edgeops-{name}-bench-") as tmp:
        folder = Path(tmp)
        inputs_path, labels_path = save_child_inputs(folder, inputs, labels)
        request = {
            "runtime": name,
            "artifact": str(artifact),
            "inputs": str(inputs_path),
            "labels": str(labels_path) if labels_path else None,
            "batch_sizes": batch_sizes,
            "threads": threads,
            "cores": cores,
            "macs": macs,
            "max_seconds": max_seconds,
            "min_runs": min_runs,
            "power_meter": power_meter,
        }
        return _call(name, "bench", request, folder, timeout_s)
