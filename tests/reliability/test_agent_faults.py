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

from conftest import matmul_onnx
from edgeops.hil.client import AgentClient, AgentUnreachable

TOKEN = "r" * 32


def start_agent(port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "edgeops.cli", "agent", "serve", "--port", str(port)],
                               env={**os.environ, "EDGEOPS_AGENT_TOKEN": TOKEN}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
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


@pytest.fixture
def port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def benchmark(client: AgentClient):
    artifact = matmul_onnx(256)
    x = np.random.default_rng(1).standard_normal((64, 256)).astype(np.float32)
    # Long enough (it stops at max_seconds, not at min_runs) that the kill lands while it runs.
    return client.benchmark(artifact, hashlib.sha256(artifact).hexdigest(), x, None, batch_sizes=[1], max_seconds=6.0, min_runs=1_000_000)


def test_agent_killed_mid_benchmark_is_retried_and_the_retry_completes(port):
    agent = start_agent(port)
    client = AgentClient("bench-box", f"http://127.0.0.1:{port}", TOKEN, retries=4, backoff_s=1.0)
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(result=benchmark(client)))
    worker.start()
    time.sleep(2.0)  # the benchmark is running in the agent's child process
    kill(agent)
    agent = start_agent(port)  # the device comes back while the client backs off
    try:
        worker.join(timeout=120)
        assert outcome["result"]["latency"]["1"]["runs"] >= 20
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
        except Exception as err:  # noqa: BLE001 - anything else is a wrong outcome the assertion shows
            errors.append(f"wrong error: {type(err).__name__}: {err}")

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(2.0)
    kill(agent)
    worker.join(timeout=60)
    assert errors and "device 'bench-box'" in errors[0] and "after 3 attempts" in errors[0]
