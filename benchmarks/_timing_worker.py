"""One model in one process, timed on request: `python _timing_worker.py <runtime> <artifact> <max_batch|0>`.

Runs in edgeops' own environment (onnxruntime) or a runtime's tool environment (executorch, litert). The parent
(benchmarks/realistic_int8.py) pins every worker to the same core and sends one JSON command per line on stdin:
{"cmd": "time", "inputs": file.npy, "calls": n, "warmup": w} -> {"us": [...]}; {"cmd": "predict", ...} -> logits file;
{"cmd": "memory"} -> peak RSS beyond the baseline taken after imports. Only one worker runs at a time (the others wait
on stdin), so the variants are timed interleaved, in the order the parent chooses each round.
"""

from __future__ import annotations

import contextlib
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np


def open_session(runtime: str, artifact: str, max_batch: int | None):
    if runtime == "onnxruntime":
        from edgeops.hil.harness import OnnxSession

        return OnnxSession(artifact, 1)
    from edgeops.runtimes.worker import SESSIONS

    SESSIONS[runtime].preload()
    return SESSIONS[runtime](artifact, 1, max_batch)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def reset_peak() -> int:
    """Linux: writing 5 to clear_refs resets the peak (VmHWM) to the current RSS, so the model's and the runtime's
    own peak can be read beyond a baseline taken after the imports (ru_maxrss keeps the import's peak forever)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS")


def peak_rss_kb() -> int:
    return _status_kb("VmHWM")


def main() -> None:
    runtime, artifact, max_batch = sys.argv[1], sys.argv[2], int(sys.argv[3]) or None
    if runtime == "onnxruntime":
        import onnxruntime  # noqa: F401
    else:
        from edgeops.runtimes.worker import SESSIONS

        SESSIONS[runtime].preload()
    baseline = reset_peak()
    session = open_session(runtime, artifact, max_batch)
    print(json.dumps({"ready": True, "batch_limit": getattr(session, "max_batch", None)}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "time":
            x = np.load(command["inputs"], allow_pickle=False)
            for _ in range(command["warmup"]):
                session.run(x)
            times = []
            for _ in range(command["calls"]):
                start = time.perf_counter_ns()
                session.run(x)
                times.append((time.perf_counter_ns() - start) / 1e3)
            reply = {"us": times}
        elif command["cmd"] == "predict":
            x = np.load(command["inputs"], allow_pickle=False)
            step = getattr(session, "max_batch", None) or 256
            logits = np.concatenate(
                [session.run(np.ascontiguousarray(x[i : i + step])) for i in range(0, len(x), step)]
            )
            np.save(command["out"], logits.astype(np.float32), allow_pickle=False)
            reply = {"rows": len(x)}
        elif command["cmd"] == "memory":
            reply = {"peak_beyond_imports_kb": peak_rss_kb() - baseline, "peak_kb": peak_rss_kb()}
        else:
            break
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
