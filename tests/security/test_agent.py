"""The device agent over HTTP (FastAPI's test client): auth, limits, hash checks, crashing models, OpenAPI."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import matmul_onnx
from edgeops.hil.agent import create_app

TOKEN = "t" * 32


def tiny_onnx() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["features"], ["logits"])], "id",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@pytest.fixture
def client():
    return TestClient(create_app(TOKEN, max_upload_bytes=200_000, benchmark_timeout_s=60))


def post(client, artifact: bytes, sha: str | None = None, token: str | None = TOKEN, inputs=None, **request):
    import json

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    x = inputs if inputs is not None else np.eye(3, dtype=np.float32)
    body = {"sha256": sha or hashlib.sha256(artifact).hexdigest(), "batch_sizes": [1], "max_seconds": 0.5, "min_runs": 20, **request}
    return client.post("/v1/benchmark", headers=headers, data={"request": json.dumps(body)},
                       files={"artifact": ("a.onnx", artifact), "inputs": ("x.npy", npy(x)), "labels": ("y.npy", npy(np.arange(3)))})


def test_benchmark_round_trip(client):
    response = post(client, tiny_onnx())
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["accuracy_on_device"] == 1.0
    assert result["latency"]["1"]["runs"] >= 20
    assert result["agent"]["verified_sha256"] == hashlib.sha256(tiny_onnx()).hexdigest()


@pytest.mark.parametrize("token", [None, "wrong-token-wrong-token"])
def test_missing_or_wrong_token_is_401(client, token):
    assert post(client, tiny_onnx(), token=token).status_code == 401
    assert client.get("/v1/facts", headers={"Authorization": f"Bearer {token}"} if token else {}).status_code == 401


def test_hash_mismatch_is_rejected(client):
    response = post(client, tiny_onnx(), sha="0" * 64)
    assert response.status_code == 400 and "sha256 mismatch" in response.json()["detail"]


def test_oversized_upload_is_413(client):
    response = post(client, tiny_onnx() + b"\0" * 300_000)
    assert response.status_code == 413


def test_model_that_crashes_the_runtime_leaves_the_agent_alive(client):
    garbage = b"not an onnx model at all" * 10
    response = post(client, garbage)
    assert response.status_code == 422 and "runtime failed" in response.json()["detail"]
    assert post(client, tiny_onnx()).status_code == 200


def test_pickled_inputs_are_refused(client):
    import json

    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    body = {"sha256": hashlib.sha256(tiny_onnx()).hexdigest(), "batch_sizes": [1]}
    response = client.post("/v1/benchmark", headers={"Authorization": f"Bearer {TOKEN}"}, data={"request": json.dumps(body)},
                           files={"artifact": ("a.onnx", tiny_onnx()), "inputs": ("x.npy", pickled.getvalue())})
    assert response.status_code == 422 and "plain .npy" in response.json()["detail"]


def test_no_path_from_the_request_is_used(client):
    response = post(client, tiny_onnx())
    assert response.status_code == 200
    # The upload's own file name never becomes a path: a traversal name is just ignored.
    import json

    body = {"sha256": hashlib.sha256(tiny_onnx()).hexdigest(), "batch_sizes": [1], "max_seconds": 0.2, "min_runs": 10}
    response = client.post("/v1/benchmark", headers={"Authorization": f"Bearer {TOKEN}"}, data={"request": json.dumps(body)},
                           files={"artifact": ("../../../../etc/passwd", tiny_onnx()), "inputs": ("x.npy", npy(np.eye(3, dtype=np.float32)))})
    assert response.status_code == 200


def test_openapi_schema_and_health(client):
    schema = client.get("/openapi.json").json()
    assert "/v1/benchmark" in schema["paths"] and "/v1/health" in schema["paths"]
    assert client.get("/v1/health").json()["status"] == "ok"


def test_short_token_is_refused():
    from edgeops.hil.agent import load_token

    with pytest.raises(SystemExit, match="at least 16 characters"):
        load_token(token="short")


def test_unreachable_agent_retries_then_names_the_device():
    from edgeops.hil.client import AgentClient
    from edgeops.hil.runner import BenchmarkError

    client = AgentClient("pi-kitchen", "http://127.0.0.1:9", TOKEN, retries=2, backoff_s=0.01, timeout_s=2)
    with pytest.raises(BenchmarkError, match="device 'pi-kitchen' at http://127.0.0.1:9 unreachable after 3 attempts"):
        client.benchmark(tiny_onnx(), "0" * 64, np.eye(3, dtype=np.float32), None)


def test_benchmark_past_its_timeout_is_stopped_with_a_clear_error(tmp_path):
    from edgeops.hil.runner import BenchmarkError, run_isolated

    model = tmp_path / "m.onnx"
    model.write_bytes(tiny_onnx())
    with pytest.raises(BenchmarkError, match="exceeded its timeout of 0.5 s"):
        run_isolated(model, np.eye(3, dtype=np.float32), None, [1], timeout_s=0.5)


def _serve_in_thread(app):
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    return server, thread, port


def test_a_trickling_upload_is_cut_off_with_408_and_the_agent_keeps_serving():
    import socket
    import time

    import httpx

    server, thread, port = _serve_in_thread(create_app(TOKEN, max_upload_bytes=200_000, body_timeout_s=1.0))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(b"POST /v1/benchmark HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                         + b"\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n")
            started = time.perf_counter()
            answer = b""
            for _ in range(20):  # a byte every 0.2 s: a slowloris upload
                try:
                    slow.sendall(b"x")
                except OSError:
                    break
                time.sleep(0.2)
                slow.settimeout(0.01)
                try:
                    answer += slow.recv(4096)
                except (socket.timeout, BlockingIOError):
                    pass
                if answer:
                    break
            assert answer.startswith(b"HTTP/1.1 408") and b"not received within 1 s" in answer, answer[:200]
            assert time.perf_counter() - started < 3
        assert httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5).status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_declared_power_meter_gives_energy_per_inference_and_a_missing_one_says_why(tmp_path):
    from edgeops.hil.runner import run_isolated

    meter = tmp_path / "power_mw"
    meter.write_text("2500\n")  # a steady 2.5 W, as a device's rail file would report it
    x = np.random.default_rng(0).standard_normal((8, 512)).astype(np.float32)
    artifact = tmp_path / "a.onnx"
    artifact.write_bytes(matmul_onnx(512))  # slow enough (~0.1 ms a call) for the meter to take readings during the runs
    hook = {"path": str(meter), "unit": "mW", "interval_s": 0.002}
    result = run_isolated(artifact, x, None, [1], max_seconds=1.0, min_runs=1000, power_meter=hook)
    assert result["energy"]["measured"] and str(meter) in result["energy"]["source"], result["energy"]
    stats = result["latency"]["1"]
    # 2.5 W over the elapsed time of warm-up and timed runs: at least 2.5 W x the mean latency per inference.
    assert 2.5 * stats["mean_ms"] * 0.9 <= stats["energy_mj_per_inference"] <= 2.5 * stats["mean_ms"] * 50
    missing = run_isolated(artifact, x, None, [1], max_seconds=0.2, min_runs=20, power_meter={"path": str(tmp_path / "nope"), "unit": "W"})
    assert not missing["energy"]["measured"] and "not readable" in missing["energy"]["reason"]

    client = TestClient(create_app(TOKEN, max_upload_bytes=2_000_000, power_meter=hook))
    response = post(client, matmul_onnx(512), inputs=x[:3], min_runs=1000, max_seconds=1.0)  # post() sends 3 labels
    assert response.status_code == 200 and response.json()["energy"]["measured"], response.text[:300]
