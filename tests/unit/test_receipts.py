"""Signed benchmark receipts (issue 22): the agent signs what it measured; the pipeline keeps only numbers from a
receipt that the device's declared key signed, for this request (nonce), recently, and for this artifact."""

from __future__ import annotations

import hashlib
import io
import json
import secrets

import numpy as np
import pytest
from fastapi.testclient import TestClient

from edgeops.hil.agent import create_app
from edgeops.hil.bench import receipt_numbers
from edgeops.hil.receipts import ReceiptError, device_key, public_text, verify_receipt
from edgeops.records import BenchmarkRecord
from edgeops.spec import DeviceSpec

TOKEN = "r" * 32


def tiny_onnx() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["features"], ["logits"])],
        "id",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    home = tmp_path_factory.mktemp("agent-home")
    key = device_key(home)
    assert device_key(home).private_bytes_raw() == key.private_bytes_raw()  # made once, kept under --home
    assert (home / "identity" / "receipt_ed25519.pem").stat().st_mode & 0o077 == 0
    return TestClient(create_app(TOKEN, benchmark_timeout_s=60, receipt_key=key)), public_text(key.public_key())


def benchmark(client, nonce: str) -> dict:
    artifact = tiny_onnx()
    body = {
        "sha256": hashlib.sha256(artifact).hexdigest(),
        "batch_sizes": [1],
        "max_seconds": 0.3,
        "min_runs": 20,
        "nonce": nonce,
    }
    response = client.post(
        "/v1/benchmark",
        headers={"Authorization": f"Bearer {TOKEN}"},
        data={"request": json.dumps(body)},
        files={
            "artifact": ("a.onnx", artifact),
            "inputs": ("x.npy", npy(np.eye(3, dtype=np.float32))),
            "labels": ("y.npy", npy(np.arange(3))),
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def answered(agent):
    client, declared = agent
    nonce = secrets.token_hex(16)
    return benchmark(client, nonce), nonce, declared


SHA = hashlib.sha256(tiny_onnx()).hexdigest()


def device(key: str | None) -> DeviceSpec:
    return DeviceSpec(
        name="pi", kind="agent", url="https://pi.local:8765", token_env="PI_TOKEN", receipt_public_key=key
    )


def test_verified_receipt_gives_the_numbers(answered):
    answer, nonce, declared = answered
    numbers = receipt_numbers(answer, device(declared), nonce, SHA)
    signed = answer["receipt"]["body"]
    assert numbers["latency"] == signed["result"]["latency"] and numbers["accuracy_on_device"] == 1.0
    assert numbers["peak_rss_beyond_baseline_kb"] == signed["result"]["peak_rss_beyond_baseline_kb"]
    assert numbers["device_facts"]["runtime"] == "onnxruntime" and numbers["receipt_verified"]["nonce"] == nonce
    assert signed["artifact_sha256"] == SHA


def test_an_agents_record_validates_and_its_receipt_still_verifies(answered):
    """The agent path's record (edgeops.hil.bench.benchmark_target) is a BenchmarkRecord whose JSON is the dict it
    was built from, and the receipt it keeps re-verifies after the JSON round trip (the evidence bundle's check)."""
    answer, nonce, declared = answered
    base = {"target": "t", "device_name": "pi", "device_kind": "agent", "artifact_sha256": SHA, "batch_sizes": [1]}
    built = {**base, "measured": True, **receipt_numbers(answer, device(declared), nonce, SHA)}
    record = BenchmarkRecord.model_validate(built)
    assert record.to_json() == built and json.dumps(record.to_json()) == json.dumps(built)
    assert record.agent is not None and record.agent.verified_sha256 == SHA
    assert record.receipt_verified is not None and record.receipt_verified.nonce == nonce
    stored = BenchmarkRecord.model_validate_json(json.dumps(record.to_json()))
    receipt = stored.to_json()["receipt"]
    body = verify_receipt(receipt, declared, nonce=None, artifact_sha256=SHA, where="t", now=receipt["body"]["time"])
    assert body["result"]["latency"] == stored.to_json()["latency"]


def test_agent_reports_its_receipt_key(agent):
    client, declared = agent
    assert (
        client.get("/v1/facts", headers={"Authorization": f"Bearer {TOKEN}"}).json()["receipt_public_key"] == declared
    )


def test_numbers_altered_in_transit_are_refused(answered):
    answer, nonce, declared = answered
    forged = json.loads(json.dumps(answer))
    forged["receipt"]["body"]["result"]["latency"]["1"]["p95_ms"] /= 10  # a faster device than the one that measured
    with pytest.raises(ReceiptError, match="does not verify with the declared key"):
        receipt_numbers(forged, device(declared), nonce, SHA)


def test_receipt_by_an_undeclared_key_is_refused(answered, tmp_path):
    answer, nonce, _ = answered
    other = public_text(device_key(tmp_path).public_key())
    with pytest.raises(ReceiptError, match="undeclared device key"):
        receipt_numbers(answer, device(other), nonce, SHA)
    with pytest.raises(ReceiptError, match="declares no receipt_public_key"):
        receipt_numbers(answer, device(None), nonce, SHA)


def test_replayed_or_stale_receipt_is_refused(answered):
    answer, nonce, declared = answered
    with pytest.raises(ReceiptError, match="a replayed receipt"):  # the answer to an earlier request, sent again
        receipt_numbers(answer, device(declared), secrets.token_hex(16), SHA)
    with pytest.raises(ReceiptError, match="stale or replayed"):
        verify_receipt(
            answer["receipt"],
            declared,
            nonce=nonce,
            artifact_sha256=SHA,
            where="pi",
            now=answer["receipt"]["body"]["time"] + 3600,
        )
    with pytest.raises(ReceiptError, match="is for artifact"):
        verify_receipt(answer["receipt"], declared, nonce=nonce, artifact_sha256="0" * 64, where="pi")


def test_agent_without_a_receipt_key_is_refused(answered):
    answer, nonce, declared = answered
    unsigned = {k: v for k, v in answer.items() if k != "receipt"}
    with pytest.raises(ReceiptError, match="carries no signed receipt"):
        receipt_numbers(unsigned, device(declared), nonce, SHA)


def test_declared_key_format_is_checked():
    with pytest.raises(ValueError, match="receipt_public_key"):
        device("ed25519:not-a-key")
