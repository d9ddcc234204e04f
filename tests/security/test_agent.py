"""The device agent over HTTP (FastAPI's test client): auth, limits, hash checks, crashing models, OpenAPI."""

from __future__ import annotations

import contextlib
import hashlib
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import matmul_onnx

from edgeops.hil.agent import AGENT_VERSION, create_app

TOKEN = "t" * 32


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


@pytest.fixture
def client():
    return TestClient(create_app(TOKEN, max_upload_bytes=200_000, benchmark_timeout_s=60))


def post(client, artifact: bytes, sha: str | None = None, token: str | None = TOKEN, inputs=None, **request):
    import json

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    x = inputs if inputs is not None else np.eye(3, dtype=np.float32)
    body = {
        "sha256": sha or hashlib.sha256(artifact).hexdigest(),
        "batch_sizes": [1],
        "max_seconds": 0.5,
        "min_runs": 20,
        **request,
    }
    return client.post(
        "/v1/benchmark",
        headers=headers,
        data={"request": json.dumps(body)},
        files={"artifact": ("a.onnx", artifact), "inputs": ("x.npy", npy(x)), "labels": ("y.npy", npy(np.arange(3)))},
    )


def test_benchmark_round_trip(client):
    response = post(client, tiny_onnx())
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["accuracy_on_device"] == 1.0
    assert result["latency"]["1"]["runs"] >= 20
    assert result["agent"]["verified_sha256"] == hashlib.sha256(tiny_onnx()).hexdigest()


@pytest.mark.parametrize("token", [None, "wrong-token-wrong-token", TOKEN[:-1], TOKEN + "x"])
def test_missing_or_wrong_token_is_401(client, token):
    response = post(client, tiny_onnx(), token=token)
    assert response.status_code == 401 and response.json() == {"detail": "missing or wrong bearer token"}
    assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/facts", headers={"Authorization": f"Bearer {token}"} if token else {}).status_code == 401
    facts = client.get("/v1/facts", headers={"Authorization": f"Bearer {TOKEN}"})
    assert facts.status_code == 200 and facts.json()["cores"] >= 1, facts.text[:300]


def _asgi_call(app, path: str, headers: dict[str, str], body_chunks: int = 1000):
    """Drive the ASGI app directly and count how often it pulls the request body."""
    import asyncio

    pulled, sent = [], []

    async def receive():
        pulled.append(1)
        return {"type": "http.request", "body": b"x" * 65536, "more_body": len(pulled) < body_chunks}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(app(scope, receive, send))
    return len(pulled), sent[0]["status"], dict(sent[0]["headers"])


@pytest.mark.parametrize("path", ["/v1/benchmark", "/v1/bundles", "/openapi.json", "/nowhere"])
def test_unauthenticated_requests_are_answered_without_reading_a_byte_of_body(path):
    app = create_app(TOKEN, max_upload_bytes=10**12)
    pulled, status, headers = _asgi_call(
        app, path, {"Content-Length": str(60 * 1024 * 1024), "Authorization": "Bearer nope"}
    )
    assert (pulled, status) == (0, 401) and headers[b"www-authenticate"] == b"Bearer"
    # The same request with the token does read its body (so the zero above is the gate's doing, not the driver's).
    pulled, status, _ = _asgi_call(
        app,
        "/v1/benchmark",
        {
            "Content-Length": str(1000 * 65536),
            "Authorization": f"Bearer {TOKEN}",
            "Content-Type": "application/octet-stream",
        },
    )
    assert pulled == 1000 and status == 422


def test_hash_mismatch_is_rejected(client):
    response = post(client, tiny_onnx(), sha="0" * 64)
    assert response.status_code == 400 and "sha256 mismatch" in response.json()["detail"]


def test_oversized_upload_is_413(client):
    response = post(client, tiny_onnx() + b"\0" * 300_000)
    assert response.status_code == 413 and response.json() == {"detail": "request body larger than 200000 bytes"}
    assert post(client, tiny_onnx()).status_code == 200  # the limit, not the endpoint, refused it


def test_model_that_crashes_the_runtime_leaves_the_agent_alive(client):
    garbage = b"not an onnx model at all" * 10
    response = post(client, garbage)
    assert response.status_code == 422 and "runtime failed" in response.json()["detail"]
    after = post(client, tiny_onnx())
    assert after.status_code == 200, after.text[:300]
    assert after.json()["accuracy_on_device"] == 1.0 and after.json()["latency"]["1"]["runs"] >= 20


def test_pickled_inputs_are_refused(client):
    import json

    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    body = {"sha256": hashlib.sha256(tiny_onnx()).hexdigest(), "batch_sizes": [1]}
    response = client.post(
        "/v1/benchmark",
        headers={"Authorization": f"Bearer {TOKEN}"},
        data={"request": json.dumps(body)},
        files={"artifact": ("a.onnx", tiny_onnx()), "inputs": ("x.npy", pickled.getvalue())},
    )
    assert response.status_code == 422 and "plain .npy" in response.json()["detail"]


def test_no_path_from_the_request_is_used(client, tmp_path):
    import json

    # The upload's own file name never becomes a path: a traversal or absolute name is ignored, nothing lands there.
    planted = tmp_path / "planted.onnx"
    body = {"sha256": hashlib.sha256(tiny_onnx()).hexdigest(), "batch_sizes": [1], "max_seconds": 0.2, "min_runs": 10}
    for name in (str(planted), f"../../../../../..{planted}"):
        response = client.post(
            "/v1/benchmark",
            headers={"Authorization": f"Bearer {TOKEN}"},
            data={"request": json.dumps(body)},
            files={"artifact": (name, tiny_onnx()), "inputs": ("x.npy", npy(np.eye(3, dtype=np.float32)))},
        )
        assert response.status_code == 200, response.text[:300]
        assert (
            response.json()["agent"]["verified_sha256"] == body["sha256"]
            and response.json()["latency"]["1"]["runs"] >= 10
        )
        assert not planted.exists()
    assert list(tmp_path.iterdir()) == []


def test_openapi_schema_and_docs_need_the_token_or_are_switched_off(client):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert client.get(path).status_code == 401, path
    schema = client.get("/openapi.json", headers=auth).json()
    assert "/v1/benchmark" in schema["paths"] and "/v1/health" in schema["paths"]
    assert "swagger" in client.get("/docs", headers=auth).text.lower()
    health = client.get("/v1/health")  # the one public path
    assert health.status_code == 200 and health.json() == {"status": "ok", "agent_version": AGENT_VERSION}

    closed = TestClient(create_app(TOKEN, docs=False))
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert closed.get(path).status_code == 401, path
        assert closed.get(path, headers=auth).status_code == 404, path
    assert closed.get("/v1/health").status_code == 200


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
        run_isolated(model, np.eye(3, dtype=np.float32), None, batch_sizes=[1], timeout_s=0.5)


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
            slow.sendall(
                b"POST /v1/benchmark HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + TOKEN.encode()
                + b"\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
            )
            started = time.perf_counter()
            answer = b""
            for _ in range(20):  # a byte every 0.2 s: a slowloris upload
                try:
                    slow.sendall(b"x")
                except OSError:
                    break
                time.sleep(0.2)
                slow.settimeout(0.01)
                with contextlib.suppress(TimeoutError, BlockingIOError):
                    answer += slow.recv(4096)
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
    artifact.write_bytes(
        matmul_onnx(512)
    )  # slow enough (~0.1 ms a call) for the meter to take readings during the runs
    hook = {"path": str(meter), "unit": "mW", "interval_s": 0.002}
    result = run_isolated(artifact, x, None, batch_sizes=[1], max_seconds=1.0, min_runs=1000, power_meter=hook)
    assert result["energy"]["measured"] and str(meter) in result["energy"]["source"], result["energy"]
    stats = result["latency"]["1"]
    # 2.5 W over the elapsed time of warm-up and timed runs: at least 2.5 W x the mean latency per inference.
    assert 2.5 * stats["mean_ms"] * 0.9 <= stats["energy_mj_per_inference"] <= 2.5 * stats["mean_ms"] * 50
    missing = run_isolated(
        artifact,
        x,
        None,
        batch_sizes=[1],
        max_seconds=0.2,
        min_runs=20,
        power_meter={"path": str(tmp_path / "nope"), "unit": "W"},
    )
    assert not missing["energy"]["measured"] and "not readable" in missing["energy"]["reason"]

    client = TestClient(create_app(TOKEN, max_upload_bytes=2_000_000, power_meter=hook))
    response = post(client, matmul_onnx(512), inputs=x[:3], min_runs=1000, max_seconds=1.0)  # post() sends 3 labels
    assert response.status_code == 200 and response.json()["energy"]["measured"], response.text[:300]


def _read_answer(sock, seconds: float) -> bytes:
    """Whatever the server has answered within `seconds` (the request's body still unsent)."""
    import time

    sock.settimeout(0.05)
    answer, deadline = b"", time.perf_counter() + seconds
    while time.perf_counter() < deadline and b"\r\n\r\n" not in answer:
        try:
            data = sock.recv(4096)
        except (TimeoutError, BlockingIOError):
            continue
        if not data:
            break
        answer += data
    return answer


def _start_upload(port: int, token: str | None, length: int, sent: int = 1000):
    """A POST whose headers and first bytes are sent and whose body never finishes."""
    import socket

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
    sock.sendall(
        b"POST /v1/benchmark HTTP/1.1\r\nHost: x\r\n"
        + auth
        + f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n".encode()
        + b"x" * sent
    )
    return sock


@pytest.fixture(scope="module")
def gated_server():
    """A real server (uvicorn on loopback) with a 30 s body deadline and one upload slot."""
    server, thread, port = _serve_in_thread(
        create_app(TOKEN, max_upload_bytes=200_000, body_timeout_s=30.0, max_inflight_uploads=1, retry_after_s=3)
    )
    yield port
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.parametrize("length", [150_000, 10**15], ids=["under-the-limit", "huge"])
def test_a_request_without_the_token_gets_401_before_its_body_arrives(gated_server, length):
    import time

    started = time.perf_counter()
    with _start_upload(gated_server, None, length) as sock:
        answer = _read_answer(sock, 5.0)
    # The body never finishes: a 401 here came from the headers alone, within well under the 30 s body deadline.
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert time.perf_counter() - started < 5.0


def test_uploads_beyond_the_in_flight_limit_get_429_with_retry_after(gated_server):
    import time

    import httpx

    holder = _start_upload(gated_server, TOKEN, 150_000)  # takes the one slot and keeps it: its body never finishes
    try:
        time.sleep(0.3)
        started = time.perf_counter()
        with _start_upload(gated_server, TOKEN, 150_000) as second:
            answer = _read_answer(second, 5.0)
        assert answer.startswith(b"HTTP/1.1 429") and b"retry-after: 3" in answer.lower(), answer[:300]
        assert (
            time.perf_counter() - started < 5.0
        )  # answered from the headers: its unfinished body was never waited for
        # Requests without a body (health, facts) are not uploads and pass.
        facts = httpx.get(
            f"http://127.0.0.1:{gated_server}/v1/facts", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )
        assert facts.status_code == 200
    finally:
        holder.close()
    # The slot comes back when its upload ends (here: the client went away); the next upload runs to its endpoint.
    deadline = time.time() + 10
    while True:
        response = httpx.post(
            f"http://127.0.0.1:{gated_server}/v1/benchmark",
            headers={"Authorization": f"Bearer {TOKEN}"},
            content=b"x" * 1000,
            timeout=10,
        )
        if response.status_code != 429 or time.time() > deadline:
            break
        time.sleep(0.1)
    assert response.status_code == 422, response.text[:300]  # reached the endpoint's form parsing: not a form
    assert {tuple(error["loc"]) for error in response.json()["detail"]} >= {("body", "request"), ("body", "artifact")}
