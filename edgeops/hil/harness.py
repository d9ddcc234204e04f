"""The measurement harness: runs on the device (locally, or inside the device agent), in a separate process.

What it measures, and how:
- load time of the runtime session;
- latency at each batch size: warm-up, then timed runs until the p99 is stable (at least `min_runs`, at most
  `max_seconds`), reported as p50/p90/p99/mean/std and throughput;
- peak resident memory beyond the process's baseline after imports (so the runtime's own import is excluded);
- energy from a declared power-meter file (sampled during the runs) or RAPL (/sys/class/powercap) where readable,
  else "not measured" with the reason;
- accuracy of the artifact on the test split, computed on the device;
- device facts (CPU, cores, ISA flags, runtime version, provider, threads, load and CPU steal during the run);
- a roofline point: the model's MACs against the device's measured matmul peak.
Nothing here is estimated: what cannot be read is reported as not measured.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "neon", "asimd", "sve")


def _cpu_times() -> dict[str, Any]:
    import psutil

    return cast("dict[str, Any]", psutil.cpu_times()._asdict())


def device_facts() -> dict[str, Any]:
    import onnxruntime as ort

    cpu_model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model", "Hardware")) and cpu_model in (
                "",
                platform.machine(),
                platform.processor(),
            ):
                cpu_model = line.split(":", 1)[1].strip()
            if line.startswith(("flags", "Features")):
                flags |= set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "cpu_model": cpu_model,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "isa_flags": sorted(f for f in ISA_FLAGS if f in flags),
        "os": platform.platform(),
        "python": platform.python_version(),
        "runtime": "onnxruntime",
        "runtime_version": ort.__version__,
        "available_providers": ort.get_available_providers(),
    }


class OnnxSession:
    """The harness's view of a loaded model: `run(x) -> logits` on a float32 batch. ONNX Runtime here; the
    ExecuTorch and LiteRT tool environments bring their own (edgeops.runtimes.worker)."""

    runtime = "onnxruntime"

    def __init__(self, model_path: str, threads: int, provider: str = "CPUExecutionProvider") -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model_path, options, providers=[provider])
        self.input_name = self.session.get_inputs()[0].name
        self.provider, self.version, self.max_batch = provider, ort.__version__, None

    def run(self, x: np.ndarray) -> np.ndarray:
        return cast("np.ndarray", self.session.run(None, {self.input_name: x})[0])


class RaplMeter:
    """Package energy from Linux powercap (intel-rapl); reports why when it cannot be read."""

    def __init__(self, root: str = "/sys/class/powercap") -> None:
        self.files = sorted(Path(root).glob("intel-rapl:*/energy_uj")) if Path(root).exists() else []
        self.reason = ""
        if not Path(root).exists():
            self.reason = (
                f"{root} does not exist on this host (no RAPL interface exposed, e.g. a VM or non-Intel/AMD-RAPL CPU)"
            )
        elif not self.files:
            self.reason = f"no intel-rapl:*/energy_uj under {root}"
        else:
            try:
                self.read()
            except OSError as err:
                self.reason = f"energy_uj not readable: {err.strerror} (needs root or a udev rule)"
                self.files = []

    def read(self) -> float:
        return sum(int(f.read_text()) for f in self.files) / 1e6  # joules

    @property
    def available(self) -> bool:
        return bool(self.files)


POWER_UNITS = {"W": 1.0, "mW": 1e-3, "uW": 1e-6}


class PowerFileMeter:
    """A declared power-meter hook: a file the device keeps updated with its instantaneous power draw (a Jetson's
    INA3221 rail, a USB meter daemon's output). Sampled in a background thread while the runs execute; energy is the
    mean power times the elapsed time. The path comes from the declaration or the agent's own command line, never
    from a request."""

    def __init__(self, path: str, unit: str = "mW", interval_s: float = 0.01) -> None:
        self.path, self.scale, self.interval_s = Path(path), POWER_UNITS[unit], interval_s
        self.reason = ""
        try:
            self._read_watts()
        except (OSError, ValueError) as err:
            self.reason = f"power meter {path} not readable: {getattr(err, 'strerror', None) or err}"

    @property
    def available(self) -> bool:
        return not self.reason

    def _read_watts(self) -> float:
        return float(self.path.read_text().split()[0]) * self.scale

    def measure(self, work: Callable[..., Any]) -> tuple[Any, float | None, int]:
        """Run `work()` while sampling; returns (work's result, joules, samples taken)."""
        import threading

        readings: list[float] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                with contextlib.suppress(OSError, ValueError):
                    readings.append(self._read_watts())
                done.wait(self.interval_s)

        sampler = threading.Thread(target=sample, daemon=True)
        started = time.perf_counter()
        sampler.start()
        try:
            result = work()
        finally:
            done.set()
            sampler.join()
        elapsed = time.perf_counter() - started
        return result, (float(np.mean(readings)) * elapsed if readings else None), len(readings)


def matmul_peak_gflops(seconds: float = 0.5, size: int = 256, threads: int = 1) -> float:
    """A short fp32 matmul probe through the same runtime, so the roofline ceiling is measured, not quoted."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "probe",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [size, size]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    session.run(None, {"a": a, "b": a})
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"a": a, "b": a})
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - start) / 1e9


def _optional(session: Any, method: str, default: Any = None) -> Any:
    """A session's accelerator-specific measurement (edgeops.runtimes.torch_runtime on CUDA), where it has one."""
    function = getattr(session, method, None)
    return function() if function is not None else default


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets VmHWM, so the peak can be measured from a baseline."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes(reset_ok: bool) -> int:
    if reset_ok:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB; peak since start


def _percentiles(samples_ms: np.ndarray) -> dict[str, Any]:
    return {
        "p50_ms": float(np.percentile(samples_ms, 50)),
        "p90_ms": float(np.percentile(samples_ms, 90)),
        "p95_ms": float(np.percentile(samples_ms, 95)),
        "p99_ms": float(np.percentile(samples_ms, 99)),
        "mean_ms": float(samples_ms.mean()),
        "std_ms": float(samples_ms.std(ddof=1)) if len(samples_ms) > 1 else 0.0,
        "runs": len(samples_ms),
    }


def time_session(session: Any, batch: np.ndarray, warmup: int, min_runs: int, max_seconds: float) -> np.ndarray:
    """Warm up, then time single calls until the p99 is stable (two successive estimates within 5%) or time runs out."""
    for _ in range(warmup):
        session.run(batch)
    samples: list[float] = []
    deadline = time.perf_counter() + max_seconds
    previous_p99 = None
    while True:
        for _ in range(max(min_runs // 4, 25)):
            start = time.perf_counter_ns()
            session.run(batch)
            samples.append((time.perf_counter_ns() - start) / 1e6)
        if len(samples) >= min_runs:
            p99 = float(np.percentile(samples, 99))
            if previous_p99 is not None and abs(p99 - previous_p99) <= 0.05 * previous_p99:
                break
            previous_p99 = p99
        if time.perf_counter() > deadline:
            break
    return np.asarray(samples)


# run_benchmark's settings that a parent process (edgeops.hil.runner, edgeops.runtimes) writes into its benchmark
# child's request file, passed on as they are; the power meter may be absent (no declared meter).
REQUEST_SETTINGS = ("batch_sizes", "threads", "cores", "macs", "max_seconds", "min_runs")


def settings_from_request(request: dict[str, Any]) -> dict[str, Any]:
    """run_benchmark's keyword settings from a benchmark child's request."""
    return {**{name: request[name] for name in REQUEST_SETTINGS}, "power_meter": request.get("power_meter")}


def run_benchmark(
    model_path: str,
    inputs: np.ndarray,
    labels: np.ndarray | None,
    *,
    batch_sizes: list[int],
    threads: int = 1,
    cores: list[int] | None = None,
    warmup: int = 20,
    min_runs: int = 200,
    max_seconds: float = 10.0,
    macs: int | None = None,
    provider: str = "CPUExecutionProvider",
    power_meter: dict[str, Any] | None = None,
    open_session: Callable[[str, int], Any] | None = None,
) -> dict[str, Any]:
    """Measure one artifact. Call it in a fresh process (see hil.runner): memory figures assume so.
    `open_session(model_path, threads)` loads it (ONNX Runtime by default); batch sizes over the session's
    `max_batch` (a static-shape artifact) are reported as not measured, with the reason."""
    import psutil

    if cores:
        os.sched_setaffinity(0, set(cores))
    open_session = open_session or (lambda path, n: OnnxSession(path, n, provider))
    facts = device_facts()  # before the baseline: its imports are not the model's memory
    batches = {b: np.ascontiguousarray(np.resize(inputs, (b, inputs.shape[1])).astype(np.float32)) for b in batch_sizes}
    process = psutil.Process()
    baseline_rss = process.memory_info().rss
    reset_ok = _reset_peak_rss()
    start = time.perf_counter()
    session = open_session(model_path, threads)
    load_ms = (time.perf_counter() - start) * 1000
    facts.update(runtime=session.runtime, runtime_version=session.version, **_optional(session, "device_facts", {}))
    _optional(session, "reset_device_memory")
    meter = RaplMeter()
    hook = PowerFileMeter(**power_meter) if power_meter else None
    load_before = os.getloadavg()
    cpu_before = _cpu_times()
    results: dict[str, dict[str, Any]] = {}  # JSON: measured batch statistics, or why a batch was not measured
    energy = {"measured": False, "reason": hook.reason if hook else meter.reason}
    for batch_size in batch_sizes:
        batch = batches[batch_size]
        if session.max_batch is not None and batch_size > session.max_batch:
            results[str(batch_size)] = {
                "measured": False,
                "reason": f"the {session.runtime} artifact takes at most {session.max_batch} "
                f"rows per call (static shape)",
            }
            continue
        if hook is not None and hook.available:  # a declared meter wins over RAPL: it is what the owner chose to trust
            samples, joules, readings = hook.measure(
                lambda batch=batch: time_session(session, batch, warmup, min_runs, max_seconds)
            )
            if joules is not None and readings >= 3:
                stats = _percentiles(samples)
                stats["energy_mj_per_inference"] = joules * 1000 / ((len(samples) + warmup) * batch_size)
                energy = {
                    "measured": True,
                    "source": f"declared power meter {hook.path} ({readings} readings, mean power x elapsed, "
                    "warm-up runs included)",
                }
            else:
                stats = _percentiles(samples)
                energy = {
                    "measured": False,
                    "reason": f"power meter {hook.path} gave {readings} readings during the runs (need 3)",
                }
        else:
            joules_before = meter.read() if meter.available else None
            samples = time_session(session, batch, warmup, min_runs, max_seconds)
            stats = _percentiles(samples)
            if joules_before is not None:
                stats["energy_mj_per_inference"] = (meter.read() - joules_before) * 1000 / (len(samples) * batch_size)
                energy = {"measured": True, "source": "RAPL package energy (includes other processes on the package)"}
        stats["throughput_per_s"] = batch_size * 1000 / stats["mean_ms"]
        if macs:
            stats["achieved_gflops"] = 2 * macs * batch_size / (stats["p50_ms"] / 1000) / 1e9
        results[str(batch_size)] = stats
    cpu_after = _cpu_times()
    steal = cpu_after.get("steal", 0.0) - cpu_before.get("steal", 0.0)
    total = sum(cpu_after.values()) - sum(cpu_before.values())
    peak_rss = _peak_rss_bytes(reset_ok)
    accuracy = None
    if labels is not None:
        chunk = min(256, session.max_batch or 256)
        predictions = np.concatenate(
            [
                session.run(np.ascontiguousarray(inputs[i : i + chunk], dtype=np.float32)).argmax(1)
                for i in range(0, len(inputs), chunk)
            ]
        )
        accuracy = float((predictions == labels).mean())
    device_memory_kb = _optional(session, "device_memory_peak_kb")
    peak_gflops = _optional(session, "peak_gflops") or matmul_peak_gflops(threads=threads)
    record = {
        "load_ms": load_ms,
        "latency": results,
        "accuracy_on_device": accuracy,
        "n_eval": len(inputs),
        "peak_rss_beyond_baseline_kb": max(0, peak_rss - baseline_rss) // 1024,
        "baseline_rss_kb": baseline_rss // 1024,
        "memory_method": "VmHWM reset at baseline (/proc/self/clear_refs)"
        if reset_ok
        else "ru_maxrss (peak since process start)",
        "energy": energy,
        "device": {
            **facts,
            "threads": threads,
            "cores_pinned": cores or "not pinned",
            "provider": session.provider,
            "load_avg_before": load_before,
            "load_avg_after": os.getloadavg(),
            "cpu_steal_share": (steal / total) if total > 0 else 0.0,
        },
        "roofline": {
            "device_peak_gflops": peak_gflops,
            "macs": macs,
            "peak_probe": "fp32 256x256 matmul, ONNX Runtime CPU",
        },
    }
    if device_memory_kb is not None:  # an accelerator's own memory (CUDA: peak allocated beyond the loaded model)
        record["device_memory_peak_beyond_baseline_kb"] = device_memory_kb
        record["roofline"]["peak_probe"] = (
            f"4096x4096 matmul in the artifact's precision, {session.runtime} on {session.provider}"
        )
    if macs and "1" in results:
        record["roofline"]["achieved_gflops_batch1"] = results["1"]["achieved_gflops"]
        record["roofline"]["fraction_of_peak_batch1"] = results["1"]["achieved_gflops"] / peak_gflops
    return record
