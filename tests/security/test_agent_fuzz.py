"""The device agent fuzzed through its own OpenAPI schema (schemathesis): whatever a client sends, with or without
the token, the agent answers with a client error or a result, never a server error (5xx).

A signed model is installed before the fuzz starts, so /v1/infer and /v1/personalize reach their real code (inference,
last-layer fine-tuning) instead of stopping at "no model is active" (409); a check on every response holds the fuzz to
that, and test_the_fuzzed_agent_has_a_model_that_answers shows the installed model at work."""

from __future__ import annotations

import numpy as np
import pytest
import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from edgeops import bundle
from edgeops.hil.agent import AGENT_VERSION, create_app
from edgeops.hil.updater import Updater

TOKEN = "f" * 32
FEATURES, CLASSES = 3, 4


def linear_onnx() -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.normal(0, 0.5, (FEATURES, CLASSES)).astype(np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(CLASSES, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["features", "w", "b"], ["logits"])],
        "linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        [weights, bias],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def build_app(install: bool = True):
    import tempfile
    from pathlib import Path

    home = Path(tempfile.mkdtemp(prefix="edgeops-fuzz-"))
    local = home / "local"
    (local / "user1").mkdir(parents=True)
    rng = np.random.default_rng(1)
    np.save(local / "user1" / "x.npy", rng.uniform(0, 1, (40, FEATURES)).astype(np.float32))
    np.save(local / "user1" / "y.npy", rng.integers(0, CLASSES, 40).astype(np.int64))
    signer = Ed25519PrivateKey.generate()
    updater = Updater(home / "agent", "phone", signer.public_key(), AGENT_VERSION, probation=0)
    if install:
        from edgeops import oms

        artifact = (
            home / "release" / "model.onnx"
        )  # signed as registration signs it: the agent refuses unsigned artifacts
        artifact.parent.mkdir()
        artifact.write_bytes(linear_onnx())
        signature = oms.sign(artifact, artifact.with_suffix(".onnx.sig"), home / "oms")
        updater.install(
            bundle.build(
                linear_onnx(),
                pipeline="fuzz",
                model="fuzz-phone",
                version=1,
                target="phone",
                runtime="onnxruntime",
                card_digest=None,
                signing_key=signer,
                feature_bounds=(0.0, 1.0),
                parity_relative=1e-3,
                max_latency_ms=None,
                min_agent_version="0.2.0",
                oms_signature=signature.read_text(),
                oms_public_key=oms.public_key_pem(home / "oms"),
            )
        )
    return create_app(
        TOKEN, max_upload_bytes=100_000, benchmark_timeout_s=30, updater=updater, local_data=local, body_timeout_s=5
    )


AUTH = {"Authorization": f"Bearer {TOKEN}"}
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", build_app(), headers=AUTH
)  # the schema is behind the token too


def model_paths_are_reached(ctx, response, case) -> None:
    """With a model installed, no request to the model's endpoints may stop at "no model is active"."""
    if case.operation.path in ("/v1/infer", "/v1/personalize") and response.status_code == 409:
        detail = response.json().get("detail", "")
        if "no model is active" in detail:
            raise AssertionError(f"{case.operation.path} answered 409 {detail!r}: the fuzz never reaches the model")


def test_the_fuzzed_agent_has_a_model_that_answers():
    client = TestClient(build_app())
    inferred = client.post("/v1/infer", headers=AUTH, json={"inputs": [[0.1, 0.2, 0.3], [0.9, 0.1, 0.5]]})
    assert inferred.status_code == 200, inferred.text
    assert inferred.json()["version"] == 1 and np.asarray(inferred.json()["outputs"]).shape == (2, CLASSES)
    tuned = client.post("/v1/personalize", headers=AUTH, json={"dataset": "user1", "steps": 20})
    assert tuned.status_code == 200, tuned.text
    report = tuned.json()
    assert report["version"] == 1 and report["steps"] == 20 and report["local_rows"] == 40
    assert 0 <= report["accuracy_before"] <= 1 and 0 <= report["accuracy_after"] <= 1
    empty = TestClient(build_app(install=False))  # the check above is what tells the two apart
    assert empty.post("/v1/infer", headers=AUTH, json={"inputs": [[0.1, 0.2, 0.3]]}).status_code == 409


@pytest.mark.parametrize("authorized", [True, False], ids=["with-token", "without-token"])
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_makes_the_agent_fail(case, authorized):
    headers = AUTH if authorized else {}
    response = case.call_and_validate(headers=headers, checks=[not_a_server_error, model_paths_are_reached])
    if not authorized and case.operation.path != "/v1/health":
        assert response.status_code == 401, (case.operation.path, response.status_code)
