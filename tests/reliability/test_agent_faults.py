"""A device agent that dies in the middle of a benchmark: the client retries (and succeeds once the agent is back),
or reports the device by name when it stays down."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from helpers import matmul_onnx

from edgeops.hil.client import AgentClient, AgentUnreachable

TOKEN = "r" * 32


def start_agent(port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "edgeops.cli", "agent", "serve", "--port", str(port)],
        env={**os.environ, "EDGEOPS_AGENT_TOKEN": TOKEN},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("agent did not start")


def kill(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)  # the agent and its benchmark child: a power cut, not a clean stop
    process.wait(timeout=10)


def benchmark_child(agent: subprocess.Popen, seconds: float = 30.0) -> int:
    """The pid of the child process the agent runs the benchmark in, once it exists (the benchmark is under way)."""
    import psutil

    deadline = time.time() + seconds
    while time.time() < deadline:
        children = psutil.Process(agent.pid).children(recursive=True)
        if children:
            return children[0].pid
        time.sleep(0.05)
    raise AssertionError("the agent never started a benchmark child process")


def kill_mid_benchmark(agent: subprocess.Popen) -> None:
    """Kill the agent while its benchmark runs, and show that the kill landed on both processes."""
    import psutil

    child = benchmark_child(agent)
    time.sleep(0.5)  # well inside the 6 s benchmark
    kill(agent)
    assert agent.returncode == -signal.SIGKILL, agent.returncode
    deadline = time.time() + 10
    while (
        psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE and time.time() < deadline
    ):
        time.sleep(0.05)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE, (
        "the benchmark child survived"
    )


@pytest.fixture
def port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def benchmark(client: AgentClient):
    artifact = matmul_onnx(256)
    x = np.random.default_rng(1).standard_normal((64, 256)).astype(np.float32)
    # Long enough (it stops at max_seconds, not at min_runs) that the kill lands while it runs.
    return client.benchmark(
        artifact, hashlib.sha256(artifact).hexdigest(), x, None, batch_sizes=[1], max_seconds=6.0, min_runs=1_000_000
    )


def test_agent_killed_mid_benchmark_is_retried_and_the_retry_completes(port):
    agent = start_agent(port)
    client = AgentClient("bench-box", f"http://127.0.0.1:{port}", TOKEN, retries=4, backoff_s=1.0)
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(result=benchmark(client)))
    worker.start()
    first_agent = agent.pid
    kill_mid_benchmark(agent)
    agent = start_agent(port)  # the device comes back while the client backs off
    try:
        worker.join(timeout=120)
        assert outcome["result"]["latency"]["1"]["runs"] >= 20
        # The first attempt died with the agent; a later attempt, to the restarted agent, gave the result.
        assert client.failed_attempts, "no attempt failed: the kill did not interrupt the benchmark"
        assert any(
            name in client.failed_attempts[0] for name in ("RemoteProtocolError", "ReadError", "ConnectError")
        ), client.failed_attempts
        assert len(client.failed_attempts) <= client.retries and agent.pid != first_agent
    finally:
        kill(agent)


def test_agent_that_stays_down_is_reported_by_name(port):
    agent = start_agent(port)
    client = AgentClient("bench-box", f"http://127.0.0.1:{port}", TOKEN, retries=2, backoff_s=0.2)
    errors = []

    def run():
        try:
            benchmark(client)
        except AgentUnreachable as err:
            errors.append(str(err))
        except Exception as err:
            errors.append(f"wrong error: {type(err).__name__}: {err}")

    worker = threading.Thread(target=run)
    worker.start()
    kill_mid_benchmark(agent)
    worker.join(timeout=60)
    assert errors and "device 'bench-box'" in errors[0] and "after 3 attempts" in errors[0]
    assert len(client.failed_attempts) == 3, client.failed_attempts  # the first attempt, then two retries
