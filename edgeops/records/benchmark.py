"""One target's artifact measured on its device, and the MLflow metric names the benchmark logs and others read."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator

from edgeops.records.base import Record

ACCURACY_ON_DEVICE = "accuracy_on_device"
PEAK_RSS_BEYOND_BASELINE_KB = "peak_rss_beyond_baseline_kb"


def latency_metric(batch: int | str, statistic: str) -> str:
    """MLflow name of one latency statistic (p50_ms, p95_ms, runs, ...) at one batch size."""
    return f"latency_b{batch}_{statistic}"


LATENCY_B1_P50_MS = latency_metric(1, "p50_ms")
LATENCY_B1_P95_MS = latency_metric(1, "p95_ms")


def _missing(record: BaseModel, names: tuple[str, ...]) -> list[str]:
    return [name for name in names if getattr(record, name) is None]


class BatchLatency(Record):
    """Latency at one batch size (edgeops.hil.harness.run_benchmark): the statistics of the timed runs, or, for a batch
    the artifact cannot take (a static-shape artifact), ``measured: false`` and the reason. A measured batch stores no
    ``measured`` key: the statistics say it."""

    measured: bool = Field(True, description="False for a batch size that was not measured (then only the reason).")
    reason: str | None = Field(None, description="Why the batch size was not measured.")
    p50_ms: float | None = Field(None, description="Median latency of one call, milliseconds.")
    p90_ms: float | None = Field(None, description="90th percentile latency, milliseconds.")
    p95_ms: float | None = Field(None, description="95th percentile latency, milliseconds (the budgeted one).")
    p99_ms: float | None = Field(None, description="99th percentile latency, milliseconds.")
    mean_ms: float | None = Field(None, description="Mean latency, milliseconds.")
    std_ms: float | None = Field(None, description="Sample standard deviation of the latency, milliseconds.")
    runs: int | None = Field(None, description="Timed calls (warm-up excluded).")
    energy_mj_per_inference: float | None = Field(
        None, description="Energy per inference (one row), millijoules; absent where no energy counter was read."
    )
    throughput_per_s: float | None = Field(None, description="Rows per second at the mean latency.")
    achieved_gflops: float | None = Field(None, description="GFLOP/s at the median latency; absent without MACs.")

    @model_validator(mode="after")
    def _measured_or_why(self) -> BatchLatency:
        needed = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "std_ms", "runs", "throughput_per_s")
        if self.measured and _missing(self, needed):
            raise ValueError(f"a measured batch needs {', '.join(_missing(self, needed))}")
        if not self.measured and (self.reason is None or self.p95_ms is not None):
            raise ValueError("a batch not measured has a reason and no statistics")
        return self


class BenchmarkEnergy(Record):
    measured: bool = Field(description="Whether energy was read (a declared power meter, else RAPL).")
    source: str | None = Field(None, description="What was read, when measured.")
    reason: str | None = Field(None, description="Why energy was not measured.")


class Roofline(Record):
    """One roofline point: the model's work against the device's measured ceiling."""

    device_peak_gflops: float = Field(description="The device's measured matmul peak, GFLOP/s.")
    macs: int | None = Field(description="Multiply-accumulates of one row; None when unknown.")
    peak_probe: str = Field(description="How the peak was measured (CPU matmul, or the GPU's in the artifact's dtype).")
    achieved_gflops_batch1: float | None = Field(None, description="GFLOP/s at batch 1 (with MACs and batch 1).")
    fraction_of_peak_batch1: float | None = Field(None, description="achieved_gflops_batch1 over the peak.")


class AgentRun(Record):
    """What the device agent adds to its result (edgeops.hil.agent), inside the signed receipt."""

    version: str = Field(description="The agent's version.")
    verified_sha256: str = Field(description="sha256 of the artifact the agent received and measured.")
    benchmark_wall_s: float = Field(description="Wall time of the agent's benchmark, seconds.")


class ReceiptCheck(Record):
    """What the pipeline checked of an agent's signed receipt (edgeops.hil.bench.receipt_numbers)."""

    key: str = Field(description="The declared device key that signed it (ed25519:<base64>).")
    nonce: str | None = Field(description="This request's nonce, signed into the receipt.")
    time: float = Field(description="When the device signed it, seconds since the epoch.")


# what a measured benchmark always has (the harness's record); a record not measured has none of them, and a reason
MEASURED_FIELDS = (
    "load_ms",
    "latency",
    "n_eval",
    "peak_rss_beyond_baseline_kb",
    "baseline_rss_kb",
    "memory_method",
    "energy",
    "device",
    "roofline",
)


class BenchmarkRecord(Record):
    """The benchmark stage's output (edgeops.hil.bench.benchmark_target): one target's artifact measured on its
    device, by ONNX Runtime or torch here (CPU or CUDA), a tool runtime's worker, or the device agent (then the numbers
    are those of its signed receipt), or ``measured: false`` with the reason and none of the measured fields."""

    target: str = Field(description="The target measured.")
    device_name: str = Field(
        description="The device it was measured on (the declared one, or `edgeops bench --device`)."
    )
    device_kind: str = Field(description="The device's kind: local, agent or cuda.")
    artifact_sha256: str = Field(description="sha256 of the artifact measured.")
    batch_sizes: list[int] = Field(description="The batch sizes asked for.")
    measured: bool = Field(description="Whether anything was measured.")
    reason: str | None = Field(None, description="Why nothing was measured (measured false only).")
    accelerator: str | None = Field(None, description="The CUDA device or provider found (cuda devices only).")
    load_ms: float | None = Field(None, description="Time to load the runtime session, milliseconds.")
    latency: dict[str, BatchLatency] | None = Field(
        None, description='Latency per batch size, keyed by the batch size as text (JSON keys: "1", "32").'
    )
    accuracy_on_device: float | None = Field(
        None, description="Accuracy on the test split computed on the device; None without labels."
    )
    n_eval: int | None = Field(None, description="Test rows evaluated on the device.")
    peak_rss_beyond_baseline_kb: int | None = Field(
        None, description="Peak resident memory beyond the process's baseline after the runtime's import, KiB."
    )
    baseline_rss_kb: int | None = Field(None, description="The process's resident memory at the baseline, KiB.")
    memory_method: str | None = Field(None, description="How the peak was read (VmHWM reset, or ru_maxrss).")
    energy: BenchmarkEnergy | None = Field(None, description="Whether energy was measured, from what, or why not.")
    device: dict[str, Any] | None = Field(
        None,
        description="Device facts seen by the harness, free-form: CPU, cores, ISA flags, runtime and version, "
        "provider, threads, pinning, load and CPU steal; CUDA facts on a GPU (edgeops.hil.harness owns the keys).",
    )
    roofline: Roofline | None = Field(None, description="The roofline point.")
    device_memory_peak_beyond_baseline_kb: int | None = Field(
        None, description="On a GPU: peak device memory allocated beyond the loaded model, KiB (the budgeted memory)."
    )
    agent: AgentRun | None = Field(None, description="The device agent's run (agent devices only).")
    device_facts: dict[str, Any] | None = Field(
        None, description="The facts the agent signed about its device, free-form (agent devices only)."
    )
    receipt: dict[str, Any] | None = Field(
        None,
        description="The agent's signed receipt exactly as received, free-form so it re-verifies byte for byte "
        "(edgeops.hil.receipts; agent devices only).",
    )
    receipt_verified: ReceiptCheck | None = Field(None, description="The receipt's check (agent devices only).")
    mlflow_run_id: str | None = Field(None, description="The benchmark stage's MLflow run; set when it is logged.")

    @model_validator(mode="after")
    def _measured_or_why(self) -> BenchmarkRecord:
        if self.measured and _missing(self, MEASURED_FIELDS):
            raise ValueError(f"a measured benchmark needs {', '.join(_missing(self, MEASURED_FIELDS))}")
        if not self.measured and (self.reason is None or self.latency is not None):
            raise ValueError("a benchmark not measured has a reason and no measurements")
        return self

    @property
    def batch1(self) -> BatchLatency | None:
        """Batch 1's latency, when it was asked for."""
        return (self.latency or {}).get("1")

    @property
    def on_gpu(self) -> bool:
        """On a GPU the model lives in device memory: its budget applies to that, not to the host process."""
        return self.device_memory_peak_beyond_baseline_kb is not None

    @property
    def memory_kb(self) -> int | None:
        """The budgeted memory: the GPU's allocation on a GPU, else the host's peak beyond baseline."""
        return self.device_memory_peak_beyond_baseline_kb if self.on_gpu else self.peak_rss_beyond_baseline_kb


def benchmark_metrics(record: BenchmarkRecord) -> dict[str, Any]:
    """The MLflow metrics of a measured benchmark record: every numeric latency statistic per batch size, the accuracy
    on the device (0 where not computed) and the peak memory beyond the runtime's baseline."""
    latency = {
        latency_metric(batch, statistic): value
        for batch, stats in (record.latency or {}).items()
        for statistic, value in stats.to_json().items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    return latency | {
        ACCURACY_ON_DEVICE: record.accuracy_on_device or 0.0,
        PEAK_RSS_BEYOND_BASELINE_KB: record.peak_rss_beyond_baseline_kb,
    }
