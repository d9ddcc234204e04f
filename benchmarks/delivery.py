"""Delivery to a device agent over TLS on loopback: verification + activation time, and automatic rollback of a bad
update while a client keeps sending inference requests.

Usage: python benchmarks/delivery.py [--repeats 7]
Writes benchmarks/results/delivery.md and delivery_rollback.md. Goals (issue 12):
- bundle verification and activation <= 1 s for the default targets (float_baseline, mobile_int8, mcu_pruned_int8);
- a failing update rolled back in <= 2 s with no inference request failing meanwhile.

Each target's artifact is built as the pipeline builds it (DP-SGD training, then the target's recipe). A real agent
(`edgeops agent serve`, self-signed TLS, bearer token) runs in its own process; every bundle is encrypted for it.
The bad update is the mobile_int8 artifact altered by edgeops.faults.fails_on_live_inputs: it passes the smoke test
(synthetic bright inputs) and returns NaN on real digit scans, so it is caught only after activation.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from _common import ROOT, digits_training_data, train_and_build_targets, write_table

TOKEN = "benchmark-token-" + "x" * 16


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_artifacts(work: Path) -> tuple[object, object, dict[str, bytes]]:
    """The default targets that run on this host, built as the pipeline builds them."""
    declaration, data, ref = digits_training_data()
    records = train_and_build_targets(declaration, data, ref, work, local_only=True)
    return declaration, data, {name: Path(record.artifact_path).read_bytes() for name, record in records.items()}


class Agent:
    """`edgeops agent serve` in its own process, with TLS and delivery turned on."""

    def __init__(self, work: Path, target: str, trust: Path):
        self.home, self.port = work / f"agent-{target}", free_port()
        env = {**os.environ, "EDGEOPS_AGENT_TOKEN": TOKEN, "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgeops.cli",
                "agent",
                "serve",
                "--port",
                str(self.port),
                "--home",
                str(self.home),
                "--target",
                target,
                "--trust",
                str(trust),
                "--self-signed-tls",
                "--probation",
                "20",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        from edgeops.hil.client import AgentClient

        cert = self.home / "tls" / "agent-cert.pem"
        deadline = time.time() + 60
        while not cert.exists() and time.time() < deadline:
            time.sleep(0.1)
        self.url = f"https://127.0.0.1:{self.port}"
        self.client = AgentClient(target, self.url, TOKEN, retries=10, backoff_s=0.2, timeout_s=60, verify=str(cert))
        self.key = None
        from edgeops.bundle import load_device_public

        self.key = load_device_public(self.client.identity()["encryption_public_key"], "agent identity")
        self.cert = str(cert)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def bundle_for(declaration, target: str, artifact: bytes, version: int, signer, recipient, home: Path) -> bytes:
    """What `edgeops release promote` and `release rollout` build, for a stand-in registry version: signed, with the
    artifact's OpenSSF model signature (the agent refuses a bundle without one). Built before any timer starts."""
    import hashlib
    from types import SimpleNamespace

    from edgeops import bundle, oms
    from edgeops.delivery import bundle_inputs

    digest = hashlib.sha256(artifact).hexdigest()[:16]
    artifact_path, signature_path = home / "oms" / f"{digest}.artifact", home / "oms" / f"{digest}.sig"
    if not signature_path.exists():
        artifact_path.parent.mkdir(parents=True, exist_ok=True)
        artifact_path.write_bytes(artifact)
        oms.sign(artifact_path, signature_path, home)
    version_record = SimpleNamespace(name=f"{declaration.spec.name}-{target}", version=version, tags={})
    return bundle.build(
        artifact,
        signing_key=signer,
        recipient=recipient,
        oms_signature=signature_path.read_text(),
        oms_public_key=oms.public_key_pem(home),
        **bundle_inputs(declaration, target, version_record),
    )


def measure_activation(agent: Agent, declaration, target: str, artifact: bytes, signer, repeats: int) -> dict:
    client_seconds, agent_seconds = [], []
    for version in range(1, repeats + 2):
        blob = bundle_for(declaration, target, artifact, version, signer, agent.key, agent.home.parent)
        started = time.perf_counter()
        result = agent.client.install(blob)
        elapsed = time.perf_counter() - started
        if version > 1:  # the first install warms the agent's imports and the TLS session
            client_seconds.append(elapsed)
            agent_seconds.append(result["seconds"])
    return {
        "target": target,
        "bundle_kb": round(len(blob) / 1024, 1),
        "installs": repeats,
        "activation_s_median": statistics.median(client_seconds),
        "activation_s_max": max(client_seconds),
        "agent_side_s_median": statistics.median(agent_seconds),
        "goal_s": 1.0,
        "met": statistics.median(client_seconds) <= 1.0,
    }


def measure_rollback(
    agent: Agent, declaration, target: str, artifact: bytes, signer, x_live: np.ndarray, repeats: int
) -> list[dict]:
    import httpx

    from edgeops.faults import fails_on_live_inputs

    bounds = declaration.spec.dataset.feature_bounds
    bad = fails_on_live_inputs(artifact, threshold=declaration.spec.dataset.n_features * bounds[1] * 0.35)
    rows = []
    version = 100
    for attempt in range(repeats):
        version += 2
        agent.client.install(
            bundle_for(declaration, target, artifact, version, signer, agent.key, agent.home.parent)
        )  # a good production version
        failures, answered, versions = [], 0, []
        stop = threading.Event()

        def keep_asking():
            nonlocal answered
            with httpx.Client(verify=agent.cert, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
                row = 0
                while not stop.is_set():
                    response = http.post(
                        f"{agent.url}/v1/infer",
                        json={"inputs": x_live[row % len(x_live) : row % len(x_live) + 1].tolist()},
                    )
                    row += 1
                    if response.status_code != 200 or not np.isfinite(response.json()["outputs"]).all():
                        failures.append(response.status_code)
                    else:
                        answered += 1
                        versions.append(response.json()["version"])

        worker = threading.Thread(target=keep_asking)
        worker.start()
        time.sleep(0.3)
        started = time.time()
        agent.client.install(bundle_for(declaration, target, bad, version + 1, signer, agent.key, agent.home.parent))
        rolled_back_at = None
        while time.time() - started < 10:
            status = agent.client.status()
            if status["last_event"]["event"] == "auto_rollback":
                rolled_back_at = status["last_event"]["at"]
                break
            time.sleep(0.02)
        time.sleep(0.3)
        stop.set()
        worker.join()
        rows.append(
            {
                "attempt": attempt,
                "rolled_back": rolled_back_at is not None,
                "update_to_rollback_s": (rolled_back_at - started) if rolled_back_at else None,
                "requests_answered": answered,
                "requests_failed": len(failures),
                "answered_by_bad_version": versions.count(version + 1),
                "active_after": agent.client.status()["active_version"],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edgeops.signing import public_pem

    work = Path(tempfile.mkdtemp(prefix="edgeops-delivery-"))
    declaration, data, artifacts = build_artifacts(work)
    signer = Ed25519PrivateKey.generate()
    trust = work / "signer.pub"
    trust.write_bytes(public_pem(signer.public_key()))
    activation, rollback = [], []
    for target, artifact in artifacts.items():
        agent = Agent(work, target, trust)
        try:
            activation.append(measure_activation(agent, declaration, target, artifact, signer, args.repeats))
            if target == "mobile_int8":
                rollback = measure_rollback(
                    agent, declaration, target, artifact, signer, data.x_test[:200], max(3, args.repeats // 2)
                )
        finally:
            agent.stop()
    seconds = [r["update_to_rollback_s"] for r in rollback if r["rolled_back"]]
    summary = {
        "target": "mobile_int8 (bad update)",
        "attempts": len(rollback),
        "rolled_back": sum(r["rolled_back"] for r in rollback),
        "update_to_rollback_s_median": statistics.median(seconds) if seconds else None,
        "update_to_rollback_s_max": max(seconds) if seconds else None,
        "goal_s": 2.0,
        "requests_failed_total": sum(r["requests_failed"] for r in rollback),
        "met": bool(seconds)
        and len(seconds) == len(rollback)
        and max(seconds) <= 2.0
        and not sum(r["requests_failed"] for r in rollback),
    }
    notes = [
        "Activation: client-side wall time of POST /v1/bundles over TLS on loopback: signature, payload hash, X25519 "
        "decryption, "
        "artifact hash, target/version checks, model load, smoke test (parity on 8 synthetic inputs, latency p95), "
        f"atomic swap. Median of {args.repeats} installs after one warm-up install; each install is a new version.",
        "Rollback: a client thread sends single-row inference requests (real test digits) over one keep-alive TLS "
        "connection "
        "throughout; the update's artifact returns NaN on real inputs; update_to_rollback_s = the agent's "
        "auto_rollback event "
        "time minus the moment the update was sent. A failing request = non-200 or non-finite outputs.",
        "Agent: `edgeops agent serve --self-signed-tls` in its own process, 1 intra-op thread. Shared 2-core machine.",
    ]
    write_table("delivery", activation, notes[::2])
    write_table("delivery_rollback", [summary, *rollback], notes[1:])


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
