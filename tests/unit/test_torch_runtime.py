"""The torch runtime (GPU targets): a safetensors artifact that rebuilds without pickle, fp16 that keeps parity,
benchmarks on the CPU here, and CUDA reported as absent rather than faked. The CUDA measurement itself runs only
where torch sees a GPU (skipped elsewhere, CI included)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_digits, trained_tiny_digits
from safetensors import safe_open

from edgeops.compression import budget_outcomes, build_target
from edgeops.errors import SpecError
from edgeops.hil.bench import benchmark_target, cuda_available, latency_memory_outcomes
from edgeops.hil.runner import run_isolated
from edgeops.records import BenchmarkRecord
from edgeops.runtimes.torch_runtime import TorchSession, load_artifact, read_metadata, save_artifact
from edgeops.spec import TargetSpec, load_declaration

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: torch.cuda.is_available() is False"
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    for declaration, dp_model, _, root in trained_tiny_digits(
        tmp_path_factory, "torch-runtime", ({"name": "gpu", "kind": "cuda"},)
    ):
        yield declaration, dp_model, root


def build(trained, name: str, recipe: list[dict], device: str = "local_cpu") -> dict:
    declaration, dp_model, root = trained
    target = TargetSpec.model_validate({"name": name, "runtime": "torch", "device": device, "recipe": recipe})
    return build_target(declaration, target, dp_model, root / name)


def test_fp16_artifact_is_half_precision_safetensors_that_rebuilds_and_keeps_parity(trained):
    record = build(trained, "half", [{"step": "fp16"}], device="gpu")
    assert record.artifact_path.endswith(".safetensors") and record.precision == "fp16"
    with safe_open(record.artifact_path, framework="pt") as handle:
        dtypes = {handle.get_tensor(k).dtype for k in handle.keys()}  # noqa: SIM118 - safetensors' handle is not iterable
    metadata = read_metadata(record.artifact_path)
    assert metadata["precision"] == "fp16" and metadata["architecture"]["n_features"] == 64
    assert dtypes == {torch.float16}
    assert record.size_bytes < 0.6 * record.float_size_bytes
    outcomes = budget_outcomes(
        record, TargetSpec.model_validate({"name": "half", "device": "gpu", "recipe": [{"step": "fp16"}]})
    )
    assert outcomes["parity"][0] is True, outcomes["parity"][1]
    assert record.top1_agreement >= 0.99


def test_pruned_float_torch_target_reloads_its_pruned_shape(trained):
    record = build(trained, "pruned", [{"step": "prune", "ratio": 0.5}])
    model, dtype = load_artifact(record.artifact_path)
    assert dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == record.parameters < trained[1].parameters
    assert record.parity_relative < 1e-4


def test_the_same_model_gives_the_same_bytes_in_another_process(trained, tmp_path):
    """safetensors orders its metadata map by hash, per process: the artifact keeps one entry so its sha256 is stable
    (the scale-out test compares artifact hashes across workers)."""
    import subprocess
    import sys

    record = build(trained, "stable", [{"step": "fp16"}], device="gpu")
    model, _ = load_artifact(record.artifact_path)
    save_artifact(model.float(), tmp_path / "here.safetensors", "fp16")
    code = (
        "import sys; from edgeops.runtimes.torch_runtime import load_artifact, save_artifact; "
        "m, _ = load_artifact(sys.argv[1]); save_artifact(m.float(), __import__('pathlib').Path(sys.argv[2]), 'fp16')"
    )
    for index in range(2):
        subprocess.run(
            [sys.executable, "-c", code, record.artifact_path, str(tmp_path / f"there{index}.safetensors")],
            check=True,
        )
        assert (tmp_path / f"there{index}.safetensors").read_bytes() == (tmp_path / "here.safetensors").read_bytes()


def test_an_artifact_without_architecture_metadata_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(ValueError, match="not an edgeops torch artifact"):
        load_artifact(tmp_path / "bare.safetensors")


def test_cpu_benchmark_in_a_child_process_measures_latency_and_accuracy(trained):
    _declaration, _dp_model, _ = trained
    record = build(trained, "cpu_float", [])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 16, size=(64, 64)).astype(np.float32)
    labels = TorchSession(record.artifact_path, 1).run(x).argmax(1)
    result = run_isolated(
        record.artifact_path, x, labels, batch_sizes=[1, 8], max_seconds=0.5, min_runs=50, runtime="torch"
    )
    assert result["device"]["runtime"] == "torch" and result["device"]["provider"] == "CPU (eager)"
    assert result["latency"]["1"]["p50_ms"] > 0 and result["latency"]["8"]["runs"] >= 50
    assert result["accuracy_on_device"] == 1.0  # the same artifact, in another process, agrees with itself
    assert "device_memory_peak_beyond_baseline_kb" not in result  # no accelerator memory to report on a CPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has CUDA: the absent-GPU report is not reachable")
def test_a_cuda_target_without_a_gpu_is_reported_not_measured_with_the_reason(trained):
    declaration, dp_model, _ = trained
    record = build(trained, "gpu_half", [{"step": "fp16"}], device="gpu")
    spec = declaration.spec
    target = TargetSpec.model_validate(
        {"name": "gpu_half", "runtime": "torch", "device": "gpu", "recipe": [{"step": "fp16"}]}
    )
    bench = benchmark_target(spec, target, record, dp_model.ref)
    assert (
        bench.measured is False
        and bench.reason is not None
        and bench.reason.startswith("no CUDA device")
        and "torch.cuda.is_available() False" in bench.reason
        and bench.latency is None
    )
    assert latency_memory_outcomes(bench, target)["latency"] == (None, bench.reason)
    onnx_present, onnx_reason = cuda_available("onnxruntime")
    assert not onnx_present and "no CUDAExecutionProvider" in onnx_reason


@pytest.mark.gpu
@needs_cuda
def test_cuda_benchmark_measures_on_the_gpu(trained):
    declaration, dp_model, _ = trained
    record = build(trained, "gpu_half_real", [{"step": "fp16"}], device="gpu")
    target = TargetSpec.model_validate(
        {"name": "gpu_half_real", "runtime": "torch", "device": "gpu", "recipe": [{"step": "fp16"}]}
    )
    bench = benchmark_target(declaration.spec, target, record, dp_model.ref, max_seconds=1.0)
    assert bench.measured and bench.device and bench.device["provider"].startswith("CUDA") and bench.device["gpu"]
    assert bench.accelerator and bench.accelerator.startswith("torch CUDA")
    assert bench.batch1 and bench.batch1.p50_ms and bench.batch1.p50_ms > 0
    assert bench.on_gpu and bench.memory_kb == bench.device_memory_peak_beyond_baseline_kb >= 0
    assert bench.accuracy_on_device is not None
    assert abs(bench.accuracy_on_device - record.accuracy) <= 0.01  # same weights, GPU kernels
    assert bench.roofline and bench.roofline.device_peak_gflops > 100  # any CUDA GPU's fp16 matmul is far above this
    assert BenchmarkRecord.model_validate(bench.to_json()) == bench  # the GPU's shape round-trips through JSON


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"runtime": "torch", "recipe": [{"step": "int8"}]},
            r"targets\.0\.recipe: int8 needs runtime onnxruntime, executorch or litert",
        ),
        (
            {"runtime": "executorch", "device": "gpu"},
            r"targets\.0\.runtime: executorch runs on CPUs here.*use runtime torch",
        ),
    ],
)
def test_declaration_refuses_int8_on_torch_and_tool_runtimes_on_a_gpu(project, change, message):
    spec = tiny_digits()
    spec["devices"].append({"name": "gpu", "kind": "cuda"})
    spec["targets"] = [{"name": "t", "device": "local_cpu", **change}]
    with pytest.raises(SpecError, match=message):
        load_declaration(project.declare(spec, suite_from_declaration=False))


def test_declaration_accepts_fp16_torch_on_a_gpu(project):
    spec = tiny_digits()
    spec["devices"].append({"name": "gpu", "kind": "cuda"})
    spec["targets"] = [{"name": "t", "runtime": "torch", "device": "gpu", "recipe": [{"step": "fp16"}]}]
    assert load_declaration(project.declare(spec, suite_from_declaration=False)).spec.target("t").precision == "fp16"
