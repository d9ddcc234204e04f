"""Runs inside a runtime's tool environment (.runtimes/<name>), never in edgeops' own: `python -m
edgeops.runtimes.worker {export|predict|bench} request.json`. It imports torch, numpy, safetensors, the runtime's
packages, and of edgeops only `models` and `hil.harness`. It writes result.json, or error.txt and exits 1.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import traceback
from pathlib import Path

import numpy as np


class ExecuTorchSession:
    """A .pte program's forward method. `run(x)` takes a float32 batch of up to the exported maximum rows."""

    runtime, provider = "executorch", "XNNPACK delegate"

    @staticmethod
    def preload() -> None:
        import torch  # noqa: F401 - the runtime's own imports, before the harness takes its memory baseline
        from executorch.runtime import Runtime  # noqa: F401

    def __init__(self, path: str, threads: int, max_batch: int | None = None):
        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's thread pool: the device's declared thread count
        self._torch = torch
        # The program points into these bytes without owning them: both must outlive the method (a temporary here
        # left the method reading freed memory: wrong input counts, then a segfault).
        self._bytes = Path(path).read_bytes()
        self._program = Runtime.get().load_program(self._bytes)
        self.method = self._program.load_method("forward")
        self.version = importlib.metadata.version("executorch")
        self.max_batch = max_batch

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.method.execute([self._torch.from_numpy(x)])[0].numpy()


class LiteRtSession:
    """A .tflite model in the LiteRT interpreter (XNNPACK delegate). Converted with a static batch (see export)."""

    runtime, provider = "litert", "XNNPACK delegate"

    @staticmethod
    def preload() -> None:
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401 - before the harness's memory baseline

    def __init__(self, path: str, threads: int, max_batch: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=path, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input, self.output = self.interpreter.get_input_details()[0], self.interpreter.get_output_details()[0]
        self.max_batch = int(self.input["shape"][0])
        self.version = importlib.metadata.version("ai-edge-litert")

    def run(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] != self.max_batch:
            raise ValueError(f"this LiteRT artifact takes batches of exactly {self.max_batch} rows, got {x.shape[0]}")
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"]).copy()


SESSIONS = {"executorch": ExecuTorchSession, "litert": LiteRtSession}


def _rebuild(request: dict):
    import torch
    from safetensors.torch import load_file

    from edgeops.models import build_from_architecture

    model = build_from_architecture(request["architecture"])
    model.load_state_dict(load_file(request["weights"]), strict=True)  # strict: a rebuilt shape that differs is an error
    return model.eval(), torch


def export(request: dict) -> dict:
    model, torch = _rebuild(request)
    n_features = request["architecture"]["n_features"]
    with torch.no_grad():
        if request["runtime"] == "executorch":
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower

            # The example is the largest batch: ExecuTorch plans buffers for it (in a development run, an example of 2 rows
            # capped the dynamic dimension at 15 rows, far below the declared maximum).
            batch = _artifact_max_batch(request)
            program = torch.export.export(model, (torch.zeros(batch, n_features),),
                                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=batch)},))
            Path(request["out"]).write_bytes(to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)
            max_batch = batch
        else:
            import litert_torch

            # litert-torch 0.10 could not lower this model's reshape with a dynamic batch (a jax reshape of size -2^63, in a
            # development run): the artifact is converted for single-row inference, the on-device case.
            litert_torch.convert(model, (torch.zeros(1, n_features),)).export(request["out"])
            max_batch = 1
    session = SESSIONS[request["runtime"]](request["out"], 1, max_batch)
    return {"runtime": request["runtime"], "runtime_version": session.version, "delegate": session.provider, "max_batch": session.max_batch,
            "converter": {"executorch": "executorch", "litert": "litert-torch"}[request["runtime"]],
            "converter_version": importlib.metadata.version({"executorch": "executorch", "litert": "litert-torch"}[request["runtime"]])}


def _chunks(session, x: np.ndarray):
    step = session.max_batch or len(x)
    for start in range(0, len(x), step):
        yield np.ascontiguousarray(x[start:start + step], dtype=np.float32)


def predict(request: dict) -> dict:
    x = np.load(request["inputs"], allow_pickle=False)
    session = SESSIONS[request["runtime"]](request["artifact"], 1, _artifact_max_batch(request))
    outputs = np.concatenate([session.run(chunk) for chunk in _chunks(session, x)])
    np.save(request["out"], outputs.astype(np.float32), allow_pickle=False)
    return {"rows": int(len(x)), "runtime_version": session.version}


def _artifact_max_batch(request: dict) -> int | None:
    """ExecuTorch programs are exported for 1..EXPORT_MAX_BATCH rows; LiteRT sessions read their static batch from the model."""
    from edgeops.runtimes import EXPORT_MAX_BATCH

    return EXPORT_MAX_BATCH if request["runtime"] == "executorch" else None


def bench(request: dict) -> dict:
    from edgeops.hil.harness import run_benchmark

    inputs = np.load(request["inputs"], allow_pickle=False)
    labels = np.load(request["labels"], allow_pickle=False) if request.get("labels") else None
    max_batch = _artifact_max_batch(request)
    SESSIONS[request["runtime"]].preload()  # load time and peak memory are the model's, not the runtime's import (as for ONNX Runtime)
    return run_benchmark(request["artifact"], inputs, labels, request["batch_sizes"], request["threads"], request["cores"],
                         macs=request["macs"], max_seconds=request["max_seconds"], min_runs=request["min_runs"],
                         power_meter=request.get("power_meter"),
                         open_session=lambda path, threads: SESSIONS[request["runtime"]](path, threads, max_batch))


def main(command: str, request_file: str) -> int:
    folder = Path(request_file).parent
    try:
        result = {"export": export, "predict": predict, "bench": bench}[command](json.loads(Path(request_file).read_text()))
    except Exception as err:  # reported to the host as the reason, with the runtime's own words
        (folder / "error.txt").write_text(f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)[-1500:]}")
        return 1
    (folder / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
