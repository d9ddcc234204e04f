"""The default digits DP model on each runtime format: ONNX Runtime (.onnx), ExecuTorch (.pte, XNNPACK) and LiteRT
(.tflite, XNNPACK). Size, parity with the float ONNX graph, test accuracy on the runtime, and latency measured by the
same harness in a fresh process per measurement, pinned to core 0, interleaved over rounds (A B C A B C ...).

Usage: python benchmarks/runtimes.py [--rounds 5]   (needs `make runtimes`)
Writes benchmarks/results/runtimes.md. No goal in the issues; the table says what each format costs here.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _common import digits_training_data, train_and_build_targets, write_table

FORMATS = (
    ("float_baseline", "onnxruntime"),
    ("executorch_float", "executorch"),
    ("litert_float", "litert"),
    ("executorch_pruned", "executorch"),
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()

    from edgeops import runtimes
    from edgeops.hil.runner import run_isolated
    from edgeops.spec import TargetSpec

    for name in runtimes.TOOL_RUNTIMES:
        ready, why = runtimes.available(name)
        if not ready:
            raise SystemExit(why)
    declaration, data, ref = digits_training_data()
    extra = (
        TargetSpec.model_validate({"name": "executorch_float", "device": "local_cpu", "runtime": "executorch"}),
        TargetSpec.model_validate({"name": "litert_float", "device": "local_cpu", "runtime": "litert"}),
        TargetSpec.model_validate(
            {
                "name": "executorch_pruned",
                "device": "local_cpu",
                "runtime": "executorch",
                "recipe": [{"step": "prune", "ratio": 0.25}],
            }
        ),
    )
    work = Path(tempfile.mkdtemp(prefix="edgeops-bench-runtimes-"))
    records = train_and_build_targets(declaration, data, ref, work, local_only=True, extra_targets=extra)
    x, y = data.x_test, data.y_test

    def measure(target: str, runtime: str, batch_sizes: list[int]) -> dict:
        record = records[target]
        if runtime == "onnxruntime":
            return run_isolated(
                record.artifact_path,
                x,
                y,
                batch_sizes=batch_sizes,
                cores=[0],
                macs=record.macs,
                max_seconds=args.seconds,
                min_runs=1000,
            )
        return runtimes.benchmark(
            runtime,
            Path(record.artifact_path),
            x,
            y,
            batch_sizes=batch_sizes,
            cores=[0],
            macs=record.macs,
            max_seconds=args.seconds,
            min_runs=1000,
        )

    samples: dict[str, list[dict]] = {target: [] for target, _ in FORMATS}
    for round_index in range(args.rounds):
        order = FORMATS if round_index % 2 == 0 else FORMATS[::-1]  # alternate the order so no format always runs first
        for target, runtime in order:
            samples[target].append(measure(target, runtime, [1, 32]))

    def median(target: str, batch: str, key: str) -> float | None:
        values = [s["latency"][batch][key] for s in samples[target] if key in s["latency"].get(batch, {})]
        return statistics.median(values) if values else None

    reference_b1, reference_b32 = median("float_baseline", "1", "p50_ms"), median("float_baseline", "32", "p50_ms")
    rows = []
    for target, runtime in FORMATS:
        record, runs = records[target], samples[target]
        p50_b1, p50_b32 = median(target, "1", "p50_ms"), median(target, "32", "p50_ms")
        rows.append(
            {
                "target": target,
                "runtime": runtime,
                "recipe": "+".join(s["step"] for s in record.recipe) or "float",
                "file_kb": round(record.size_bytes / 1024, 1),
                "parameters": record.parameters,
                "accuracy_pct": round(100 * record.accuracy, 2),
                "parity_relative": record.parity_relative,
                "p50_us_b1": round(1000 * p50_b1, 1),
                "p99_us_b1": round(1000 * median(target, "1", "p99_ms"), 1),
                "p50_vs_onnxruntime_b1": round(p50_b1 / reference_b1, 2),
                "p50_us_b32": round(1000 * p50_b32, 1)
                if p50_b32
                else runs[0]["latency"]["32"].get("reason", "not measured"),
                "p50_vs_onnxruntime_b32": round(p50_b32 / reference_b32, 2) if p50_b32 else "-",
                "load_ms": round(statistics.median(s["load_ms"] for s in runs), 1),
                "peak_memory_kb": int(statistics.median(s["peak_rss_beyond_baseline_kb"] for s in runs)),
                "accuracy_on_device_pct": round(100 * runs[0]["accuracy_on_device"], 2),
                "p50_b1_spread_pct": round(
                    100
                    * (max(s["latency"]["1"]["p50_ms"] for s in runs) - min(s["latency"]["1"]["p50_ms"] for s in runs))
                    / p50_b1,
                    1,
                ),
            }
        )
    versions = {s["device"]["runtime"]: s["device"]["runtime_version"] for runs in samples.values() for s in runs}
    write_table(
        "runtimes",
        rows,
        [
            "Default digits declaration, DP model (seed 0); each row's artifact built by `build_target`, as the "
            "pipeline does. "
            f"{args.rounds} interleaved rounds (order reversed every other round), a fresh process per measurement "
            "pinned to core 0, "
            f"1 thread, up to {args.seconds:g} s per batch size (harness stops at a stable p99). Medians over rounds.",
            f"Runtime versions: {versions}.",
            "parity_relative: max |logit difference| against the float ONNX graph (the pruned float graph for the "
            "pruned row), as a share of the largest float logit, on the 360 test rows.",
            "The LiteRT artifact has a static batch of 1: litert-torch 0.10 could not lower the CNN's reshape with a "
            "dynamic batch (tried; a jax reshape of size -2^63), so batch 32 is not measured for it.",
            "peak_memory_kb: resident memory beyond the process's baseline after imports, during load and runs (VmHWM "
            "reset).",
        ],
    )


if __name__ == "__main__":
    main()
