"""The device agent's resident memory under upload floods (issue 20, "Bad input" and the memory goal).

Usage: nice -n 10 python benchmarks/agent_memory.py [--uploads 64] [--mb 60] [--repeats 3] [--old-source DIR]
Writes benchmarks/results/agent_memory.md (and .json).

It starts `edgeops agent serve` on loopback as its own process and samples that process's RSS every 20 ms:
- baseline: after a warm-up (one benchmark, one refused request), the median RSS over 2 s;
- flood: `--uploads` concurrent unauthenticated uploads of `--mb` MB each (Content-Length declared, the whole body
  sent, from one shared 1 MB buffer so the client's own memory stays small). Goal: every one 401, answered before its
  body was sent, RSS growth <= 32 MB, and back to the baseline (within 8 MB) 3 s after the flood. A benchmark
  request sent during the flood must complete;
- uploads beyond the cap: `--cap` authenticated 60 MB multipart uploads hold every slot (1 MB sent, then paused), then
  16 more authenticated 60 MB uploads: every one 429 with Retry-After, answered before its body, nothing buffered
  (RSS). The held uploads then finish and are streamed to temporary files: each answered 400 (sha256 mismatch, the
  whole 60 MB read and hashed by the endpoint), with the RSS peak while they stream.
The flood is also run once under uvicorn's h11 parser (what plain `pip install uvicorn` gives a board).
With --old-source (a folder holding an older `edgeops` package, e.g. from `git archive <commit> edgeops`), the flood is
also run once against that agent with 8 uploads, the issue's own measurement, for comparison.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_table

TOKEN = "m" * 32
MB = 1024 * 1024
CHUNK = b"\0" * MB  # shared by every upload thread
GROWTH_GOAL_MB, RETURN_TOLERANCE_MB = 32.0, 8.0


class Agent:
    def __init__(self, cap: int, source: Path | None = None, http: str | None = None):
        """`edgeops agent serve`; or, with `http` ("h11"), the same app under uvicorn's pure-Python HTTP parser, which
        is what a board gets from `pip install ".[agent]"` (plain uvicorn, no httptools)."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        env = {**os.environ, "EDGEOPS_AGENT_TOKEN": TOKEN}
        command = [sys.executable, "-m", "edgeops.cli", "agent", "serve", "--port", str(self.port)]
        if source is not None:
            env["PYTHONPATH"] = f"{source}{os.pathsep}{env.get('PYTHONPATH', '')}"
        elif http is not None:
            command = [
                sys.executable,
                "-c",
                "import uvicorn; from edgeops.hil.agent import create_app; "
                f"uvicorn.run(create_app({TOKEN!r}, max_inflight_uploads={cap}), host='127.0.0.1', port={self.port}, "
                f"http={http!r}, log_level='warning')",
            ]
        else:
            command += ["--max-inflight-uploads", str(cap)]
        self.log = tempfile.NamedTemporaryFile(prefix="agent-memory-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            command, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir()
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"the agent did not start; see {self.log.name}")
        import psutil

        self.ps = psutil.Process(self.process.pid)
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.perf_counter(), self.ps.memory_info().rss / MB))
            except Exception:
                return
            time.sleep(0.02)

    def rss_between(self, start: float, end: float) -> list[float]:
        return [rss for t, rss in self.samples if start <= t <= end]

    def settle(self, seconds: float = 2.0) -> float:
        start = time.perf_counter()
        time.sleep(seconds)
        return statistics.median(self.rss_between(start, time.perf_counter()))

    def stop(self) -> None:
        self._stop.set()
        self.process.kill()
        self.process.wait(timeout=10)


def upload(
    port: int,
    token: str | None,
    megabytes: int,
    *,
    prefix: bytes = b"",
    content_type: str = "application/octet-stream",
    hold: threading.Event | None = None,
    stop_on_answer: bool = False,
) -> dict:
    """One POST /v1/benchmark of `megabytes` MB (after `prefix`), sent 1 MB at a time; whether (and when) the agent
    answered before the body was complete."""
    total = len(prefix) + megabytes * MB
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    started = time.perf_counter()
    sock.sendall(
        f"POST /v1/benchmark HTTP/1.1\r\nHost: agent\r\n{auth}Content-Type: {content_type}\r\n"
        f"Content-Length: {total}\r\n\r\n".encode()
        + prefix
    )
    answer, answered_at, body_sent_at = b"", None, None
    try:
        for index in range(megabytes):
            sock.sendall(CHUNK)
            if index == 0 and hold is not None:
                hold.wait()
            if answered_at is None and select.select([sock], [], [], 0)[0]:
                answer, answered_at = sock.recv(65536), time.perf_counter() - started
                if stop_on_answer:
                    break
        body_sent_at = time.perf_counter() - started
    except OSError:
        pass  # the agent closed the connection while we were still sending
    if answered_at is None:
        sock.settimeout(120)
        try:
            while b"\r\n\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except OSError:
            pass
    wall = time.perf_counter() - started
    if b"\r\n\r\n" in answer and b"content-length" in answer.lower():
        sock.settimeout(10)
        try:
            while len(answer.split(b"\r\n\r\n", 1)[1]) < int(
                answer.lower().split(b"content-length:")[1].split(b"\r\n")[0]
            ):
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except (OSError, ValueError):
            pass
    sock.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    # "before the body": the answer was on the socket while the client still had body bytes to send
    return {
        "status": status,
        "answered_before_body": answered_at is not None and (body_sent_at is None or answered_at < body_sent_at),
        "retry_after": b"retry-after:" in head,
        "seconds": answered_at if answered_at is not None else wall,
        "body": answer.split(b"\r\n\r\n", 1)[1][:200] if b"\r\n\r\n" in answer else b"",
    }


def tiny_benchmark(port: int) -> dict:
    import httpx
    from onnx import TensorProto, helper, numpy_helper

    from edgeops.hil.client import AgentClient

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["logits"])],
        "mm",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 64])],
        [weight],
    )
    artifact = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
    x = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
    started = time.perf_counter()
    try:
        result = AgentClient("agent-memory", f"http://127.0.0.1:{port}", TOKEN, retries=0, timeout_s=300).benchmark(
            artifact, hashlib.sha256(artifact).hexdigest(), x, None, batch_sizes=[1], max_seconds=1.0, min_runs=50
        )
        return {"ok": result["latency"]["1"]["runs"] >= 50, "seconds": time.perf_counter() - started}
    except (httpx.HTTPError, Exception) as err:
        return {"ok": False, "seconds": time.perf_counter() - started, "error": f"{type(err).__name__}: {err}"[:200]}


def parallel(jobs) -> list:
    results: list = [None] * len(jobs)

    def run(index, job):
        results[index] = job()

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def flood(agent: Agent, uploads: int, megabytes: int, with_benchmark: bool) -> dict:
    tiny_benchmark(agent.port)  # warm-up: imports, the benchmark child's first spawn
    upload(agent.port, None, 1)
    baseline = agent.settle()
    bench: dict = {}
    started = time.perf_counter()
    bench_thread = threading.Thread(target=lambda: bench.update(tiny_benchmark(agent.port))) if with_benchmark else None
    jobs = [
        lambda i=i: upload(agent.port, None if i % 2 else "wrong-token-wrong-token", megabytes) for i in range(uploads)
    ]
    if bench_thread:
        threading.Timer(0.5, bench_thread.start).start()  # sent while the flood is under way
    answers = parallel(jobs)
    if bench_thread:
        while not bench_thread.is_alive() and not bench:
            time.sleep(0.05)
        bench_thread.join()
    ended = time.perf_counter()
    during = agent.rss_between(started, ended)
    time.sleep(3.0)
    after = agent.settle()
    statuses = sorted({a["status"] for a in answers}, key=str)
    return {
        "baseline_mb": baseline,
        "peak_mb": max(during),
        "growth_mb": max(during) - baseline,
        "after_mb": after,
        "after_minus_baseline_mb": after - baseline,
        "flood_s": ended - started,
        "statuses": statuses,
        "all_401": all(a["status"] == 401 for a in answers),
        "answered_before_body": sum(a["answered_before_body"] for a in answers),
        "median_answer_s": statistics.median(a["seconds"] for a in answers),
        "benchmark": bench,
    }


def multipart_prefix(megabytes: int) -> tuple[bytes, bytes, str]:
    """The head of a /v1/benchmark multipart body whose artifact part is `megabytes` MB of zeros (sent separately),
    and the tail after it. The declared sha256 is wrong on purpose: the endpoint must read all of it to find that."""
    boundary = "edgeopsmemoryboundary"
    buffer = io.BytesIO()
    np.save(buffer, np.eye(4, dtype=np.float32), allow_pickle=False)
    request = json.dumps({"sha256": "0" * 64, "batch_sizes": [1]})
    head = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="request"\r\n\r\n{request}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="inputs"; filename="x.npy"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + buffer.getvalue()
        + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="artifact"; filename="a.onnx"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
    )
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head, tail, f"multipart/form-data; boundary={boundary}"


def beyond_the_cap(agent: Agent, cap: int, extra: int, megabytes: int) -> dict:
    head, tail, content_type = multipart_prefix(megabytes)
    baseline = agent.settle()
    release = threading.Event()
    holders: list = [None] * cap

    def hold(index):
        holders[index] = upload_with_tail(agent.port, head, tail, content_type, megabytes, release)

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(cap)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # every slot taken (each holder has sent its first MB and waits)
    started = time.perf_counter()
    refused = parallel([lambda: upload(agent.port, TOKEN, megabytes) for _ in range(extra)])
    refused_end = time.perf_counter()
    release.set()
    for thread in threads:
        thread.join()
    held_end = time.perf_counter()
    time.sleep(3.0)
    after = agent.settle()
    return {
        "baseline_mb": baseline,
        "refused_statuses": sorted({r["status"] for r in refused}, key=str),
        "all_429": all(r["status"] == 429 for r in refused),
        "all_retry_after": all(r["retry_after"] for r in refused),
        "refused_before_body": sum(r["answered_before_body"] for r in refused),
        "median_refusal_s": statistics.median(r["seconds"] for r in refused),
        "peak_while_refusing_mb": max(agent.rss_between(started, refused_end)) - baseline,
        "peak_while_held_stream_mb": max(agent.rss_between(refused_end, held_end)) - baseline,
        "held_statuses": sorted({h["status"] for h in holders}, key=str),
        "held_detail": holders[0]["body"].decode(errors="replace")[:120],
        "after_minus_baseline_mb": after - baseline,
    }


def upload_with_tail(port, head, tail, content_type, megabytes, release) -> dict:
    total = len(head) + megabytes * MB + len(tail)
    sock = socket.create_connection(("127.0.0.1", port), timeout=300)
    sock.sendall(
        f"POST /v1/benchmark HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: "
        f"{content_type}\r\nContent-Length: {total}\r\n\r\n".encode()
        + head
    )
    for index in range(megabytes):
        sock.sendall(CHUNK)
        if index == 0:
            release.wait()
    sock.sendall(tail)
    answer = b""
    while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < 20:
        data = sock.recv(65536)
        if not data:
            break
        answer += data
    sock.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    return {"status": status, "body": answer.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in answer else b""}


def listed(values, digits: int = 1) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uploads", type=int, default=64)
    parser.add_argument("--mb", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cap", type=int, default=4)
    parser.add_argument("--extra", type=int, default=16)
    parser.add_argument("--old-source", type=Path, default=None)
    parser.add_argument("--old-label", default=None, help="how the table names the older agent (e.g. its commit)")
    args = parser.parse_args()
    from edgeops.hil.harness import device_facts

    rows, notes = [], []
    runs = []
    for repeat in range(args.repeats):
        agent = Agent(args.cap)
        try:
            runs.append(flood(agent, args.uploads, args.mb, with_benchmark=True))
            if repeat == 0:
                cap_run = beyond_the_cap(agent, args.cap, args.extra, args.mb)
        finally:
            agent.stop()
        print(f"flood {repeat + 1}: {runs[-1]}", flush=True)
    growth = [r["growth_mb"] for r in runs]
    back = [r["after_minus_baseline_mb"] for r in runs]
    label = f"{args.uploads} concurrent unauthenticated {args.mb} MB uploads"
    rows.append(
        {
            "measure": f"{label}: RSS growth, median (max) of {args.repeats}",
            "value": f"{statistics.median(growth):.1f} ({max(growth):.1f})",
            "unit": "MB",
            "goal": f"<= {GROWTH_GOAL_MB:g}",
            "met": max(growth) <= GROWTH_GOAL_MB,
            "detail": f"baseline {listed(r['baseline_mb'] for r in runs)} MB; peak "
            f"{listed(r['peak_mb'] for r in runs)} MB",
        }
    )
    rows.append(
        {
            "measure": f"{label}: RSS 3 s after minus baseline, median (max)",
            "value": f"{statistics.median(back):.1f} ({max(back):.1f})",
            "unit": "MB",
            "goal": f"<= {RETURN_TOLERANCE_MB:g}",
            "met": max(back) <= RETURN_TOLERANCE_MB,
            "detail": f"after {listed(r['after_mb'] for r in runs)} MB",
        }
    )
    rows.append(
        {
            "measure": f"{label}: answers",
            "value": f"{sum(r['all_401'] for r in runs)}/{len(runs)} floods all 401",
            "unit": "",
            "goal": "every one 401",
            "met": all(r["all_401"] for r in runs),
            "detail": f"statuses {[r['statuses'] for r in runs]}; answered before the body was sent: "
            f"{[r['answered_before_body'] for r in runs]} of {args.uploads}; median answer "
            f"{statistics.median(r['median_answer_s'] for r in runs) * 1000:.0f} ms; flood took "
            f"{listed(r['flood_s'] for r in runs)} s",
        }
    )
    bench_ok = [r["benchmark"].get("ok", False) for r in runs]
    rows.append(
        {
            "measure": "benchmark request sent during the flood",
            "value": f"{sum(bench_ok)}/{len(runs)} completed",
            "unit": "",
            "goal": "completes",
            "met": all(bench_ok),
            "detail": f"wall {listed(r['benchmark'].get('seconds', float('nan')) for r in runs)} s "
            f"{[r['benchmark'].get('error') for r in runs if r['benchmark'].get('error')] or ''}",
        }
    )
    rows.append(
        {
            "measure": f"{args.extra} authenticated {args.mb} MB uploads beyond the cap of {args.cap}",
            "value": f"{cap_run['refused_statuses']}",
            "unit": "status",
            "goal": "429 with Retry-After, nothing buffered",
            "met": cap_run["all_429"]
            and cap_run["all_retry_after"]
            and cap_run["peak_while_refusing_mb"] <= GROWTH_GOAL_MB,
            "detail": f"Retry-After on all: {cap_run['all_retry_after']}; answered before the body: "
            f"{cap_run['refused_before_body']} "
            f"of {args.extra}; median answer {cap_run['median_refusal_s'] * 1000:.0f} ms; RSS growth while refusing "
            f"{cap_run['peak_while_refusing_mb']:.1f} MB",
        }
    )
    rows.append(
        {
            "measure": f"the {args.cap} held authenticated {args.mb} MB uploads, streamed to temp files",
            "value": f"{cap_run['peak_while_held_stream_mb']:.1f}",
            "unit": "MB RSS growth",
            "goal": "(reported)",
            "met": "",
            "detail": f"statuses {cap_run['held_statuses']} ({cap_run['held_detail']}); RSS 3 s after minus baseline "
            f"{cap_run['after_minus_baseline_mb']:.1f} MB",
        }
    )
    h11 = Agent(args.cap, http="h11")
    try:
        plain = flood(h11, args.uploads, args.mb, with_benchmark=True)
    finally:
        h11.stop()
    print(f"h11: {plain}", flush=True)
    rows.append(
        {
            "measure": f"{label}, uvicorn's h11 parser (a board without httptools): RSS growth, 3 s after minus "
            "baseline",
            "value": f"{plain['growth_mb']:.1f}, {plain['after_minus_baseline_mb']:.1f}",
            "unit": "MB",
            "goal": f"<= {GROWTH_GOAL_MB:g}",
            "met": plain["growth_mb"] <= GROWTH_GOAL_MB and plain["all_401"] and plain["benchmark"].get("ok", False),
            "detail": f"baseline {plain['baseline_mb']:.1f} MB; statuses {plain['statuses']}; answered before the "
            f"body: {plain['answered_before_body']} of {args.uploads}; benchmark during the flood completed: "
            f"{plain['benchmark'].get('ok', False)}",
        }
    )
    if args.old_source:
        old = Agent(args.cap, source=args.old_source)
        try:
            before = flood(old, 8, args.mb, with_benchmark=False)
        finally:
            old.stop()
        print(f"old agent: {before}", flush=True)
        rows.append(
            {
                "measure": f"for comparison: the agent before this change ({args.old_label or args.old_source}), 8 "
                f"unauthenticated {args.mb} MB uploads",
                "value": f"{before['growth_mb']:.1f}",
                "unit": "MB RSS growth",
                "goal": "(reported)",
                "met": "",
                "detail": f"baseline {before['baseline_mb']:.1f} MB, peak {before['peak_mb']:.1f} MB, 3 s after "
                f"{before['after_mb']:.1f} MB; statuses {before['statuses']}; answered before the body: "
                f"{before['answered_before_body']} of 8",
            }
        )
    facts = device_facts()
    notes += [
        f"run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {facts['cpu_model']} ({facts['cores']} cores), "
        "`edgeops agent serve` (uvicorn's default HTTP parser: httptools here), `nice -n 10 python "
        "benchmarks/agent_memory.py " + " ".join(sys.argv[1:]) + "`",
        "RSS of the agent process (psutil, every 20 ms); baseline and after are medians over 2 s; the benchmark's "
        "child process is not included (it exits with its benchmark)",
        "unauthenticated uploads alternate between no Authorization header and a wrong token; each sends its whole "
        "body",
        "'answered before the body': the answer was readable on the socket while the client still had body bytes to "
        "send; the answer time is taken at the client's first check after a 1 MB send returns, so under 64 senders "
        "on 2 cores it includes the wait for that send",
    ]
    write_table("agent_memory", rows, notes)


if __name__ == "__main__":
    main()
