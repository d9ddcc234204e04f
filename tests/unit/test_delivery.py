"""Release bundles and the device-side updater: every refusal leaves the active model untouched."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from edgeops import bundle
from edgeops.faults import fails_on_live_inputs
from edgeops.hil.agent import AGENT_VERSION, create_app
from edgeops.hil.updater import Updater, UpdateRefused

OMS_HOME = Path(tempfile.mkdtemp(prefix="edgeops-test-oms-"))  # the release's OMS (P-256) key, made on first use
TOKEN = "u" * 32
FEATURES = 64
BOUNDS = (0.0, 16.0)


def linear_onnx(seed: int) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = numpy_helper.from_array(rng.normal(0, 0.1, (FEATURES, 10)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.normal(0, 0.1, 10).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["features", "w", "b"], ["logits"])],
        "linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [weights, bias],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


@pytest.fixture(scope="module")
def signer():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def oms_sign(artifact: bytes, home: Path = OMS_HOME) -> tuple[str, bytes]:
    """The artifact's OpenSSF model signature (as registration makes it) and the OMS public key."""
    from edgeops import oms

    folder = Path(tempfile.mkdtemp(prefix="edgeops-test-artifact-"))
    (folder / "model.onnx").write_bytes(artifact)
    signature = oms.sign(folder / "model.onnx", folder / "model.onnx.sig", home)
    return signature.read_text(), oms.public_key_pem(home)


def make(
    signer,
    version: int,
    artifact: bytes | None = None,
    target: str = "phone",
    recipient=None,
    oms_of: bytes | None = None,
    oms_home: Path = OMS_HOME,
    **overrides,
) -> bytes:
    """A bundle; `oms_of` signs other bytes than the artifact (the artifact changed after OMS signing)."""
    artifact = artifact or linear_onnx(version)
    overrides.setdefault("oms_signature", None)
    if overrides["oms_signature"] is None:
        overrides["oms_signature"], overrides["oms_public_key"] = oms_sign(oms_of or artifact, oms_home)
    options = {
        "pipeline": "digits",
        "model": "digits-phone",
        "version": version,
        "target": target,
        "runtime": "onnxruntime",
        "card_digest": None,
        "feature_bounds": BOUNDS,
        "parity_relative": 1e-3,
        "max_latency_ms": None,
        "min_agent_version": "0.2.0",
    } | overrides
    return bundle.build(artifact, signing_key=signer, recipient=recipient, **options)


def other_runtime(signer, version: int, runtime: str) -> bytes:
    """A correctly signed bundle whose manifest names another runtime (building a real one needs that runtime)."""
    verified = bundle.verify(make(signer, version), signer.public_key())
    return bundle.seal({**verified.manifest, "runtime": runtime}, verified.artifact, signer)


@pytest.fixture
def updater(tmp_path, signer):
    return Updater(tmp_path / "agent", "phone", signer.public_key(), AGENT_VERSION, probation=5)


def dark_inputs(rows: int = 4) -> np.ndarray:
    """Like real digit scans: mostly background, feature sums far below the smoke inputs'."""
    return np.random.default_rng(1).uniform(0, 6, (rows, FEATURES)).astype(np.float32)


def test_round_trip_plain_and_encrypted(signer, updater):
    plain = make(signer, 1)
    verified = bundle.verify(plain, signer.public_key())
    assert verified.artifact == linear_onnx(1) and verified.manifest["io"]["inputs"][0]["shape"] == [None, FEATURES]
    sealed = make(signer, 1, recipient=updater.device_key.public_key())
    assert linear_onnx(1) not in sealed  # the artifact does not travel in clear
    assert bundle.verify(sealed, signer.public_key(), updater.device_key).artifact == linear_onnx(1)
    assert bundle.describe(verified.manifest)["encrypted_for"] is None


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[:-10], "payload truncated"),
        (lambda b: b[:40], "truncated inside the header"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "payload hash mismatch"),
        (lambda b: b.replace(b'"target": "phone"', b'"target": "phonf"'), "bad signature"),
        (lambda b: b"PK\x03\x04" + b[4:], "bad magic"),
        (lambda b: b + b"x", "trailing data"),
    ],
)
def test_damaged_bundles_are_refused_with_a_reason(signer, damage, message):
    with pytest.raises(bundle.BundleError, match=message):
        bundle.verify(damage(make(signer, 1)), signer.public_key())


def test_other_signer_and_other_device_are_refused(signer, updater, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    with pytest.raises(bundle.BundleError, match="signed by key"):
        bundle.verify(make(Ed25519PrivateKey.generate(), 1), signer.public_key())
    other = bundle.device_private_key(tmp_path / "other-device")
    sealed = make(signer, 1, recipient=other.public_key())
    with pytest.raises(bundle.BundleError, match="encrypted for another device"):
        updater.install(sealed)
    with pytest.raises(bundle.BundleError, match="no device key"):
        bundle.verify(sealed, signer.public_key())


def test_install_refusals_leave_the_active_model_untouched(signer, updater):
    updater.install(make(signer, 2, recipient=updater.device_key.public_key()))
    before = updater.infer(dark_inputs())[0]
    refusals = {
        "already active": make(signer, 2),
        "downgrade refused": make(signer, 1),
        "for target 'watch'": make(signer, 3, target="watch"),
        "needs agent 9.0": make(signer, 3, min_agent_version="9.0.0"),
        "latency p95": make(signer, 3, max_latency_ms=1e-9),
        "needs runtime": other_runtime(signer, 3, "executorch"),
    }
    for reason, blob in refusals.items():
        with pytest.raises(UpdateRefused, match=reason):
            updater.install(blob)
    assert updater.status()["active_version"] == 2
    np.testing.assert_array_equal(updater.infer(dark_inputs())[0], before)
    assert sorted(p.name for p in (updater.home / "bundles").glob("*")) == ["2.bundle"]


def test_bad_update_rolls_back_on_its_own_and_no_request_fails(signer, updater):
    updater.install(make(signer, 1))
    good = updater.infer(dark_inputs())[0]
    bad = fails_on_live_inputs(linear_onnx(2), threshold=FEATURES * BOUNDS[1] * 0.35)
    result = updater.install(make(signer, 2, artifact=bad))  # the smoke inputs are bright: it passes
    assert result["activated"] == 2 and updater.status()["in_probation"]
    with pytest.raises(ValueError, match="the active model takes"):  # a malformed request is not the model's failure
        updater.infer(np.zeros((1, 3), np.float32))
    assert updater.status()["active_version"] == 2
    outputs, version = updater.infer(dark_inputs())  # real-looking input: NaN from v2, answered by v1
    assert version == 1 and np.isfinite(outputs).all()
    np.testing.assert_allclose(outputs, good)
    status = updater.status()
    assert status["active_version"] == 1 and status["last_event"]["event"] == "auto_rollback"
    assert "non-finite" in status["last_event"]["detail"]


def test_manual_rollback_and_restart_restore_state(signer, updater, tmp_path):
    with pytest.raises(UpdateRefused, match="no previous version"):
        updater.rollback("nothing to go back to")
    updater.install(make(signer, 1))
    updater.install(make(signer, 2))
    assert updater.rollback("operator saw bad outputs")["rolled_back_to"] == 1
    restarted = Updater(updater.home, "phone", signer.public_key(), AGENT_VERSION)
    assert restarted.status()["active_version"] == 1 and restarted.device_id == updater.device_id
    (updater.home / "bundles" / "1.bundle").write_bytes(b"EDGEOPS-BUNDLE\x00\x01garbage")  # disk tampered while stopped
    tampered = Updater(updater.home, "phone", signer.public_key(), AGENT_VERSION)
    assert tampered.status()["active_version"] is None and tampered.status()["last_event"]["event"] == "restore_failed"


def test_agent_endpoints(signer, updater):
    client = TestClient(create_app(TOKEN, max_upload_bytes=2_000_000, updater=updater))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/v1/status").status_code == 401
    identity = client.get("/v1/identity", headers=auth).json()
    key = bundle.load_device_public(identity["encryption_public_key"], "identity")
    assert identity["device_id"] == bundle.device_fingerprint(key) and identity["target"] == "phone"
    assert client.post("/v1/infer", headers=auth, json={"inputs": dark_inputs().tolist()}).status_code == 409
    installed = client.post("/v1/bundles", headers=auth, content=make(signer, 1, recipient=key))
    assert installed.status_code == 200, installed.text
    answer = client.post("/v1/infer", headers=auth, json={"inputs": dark_inputs(2).tolist()}).json()
    assert answer["version"] == 1 and np.asarray(answer["outputs"]).shape == (2, 10)
    refused = client.post("/v1/bundles", headers=auth, content=make(signer, 1, recipient=key)[:-5])
    assert refused.status_code == 400 and "truncated" in refused.json()["detail"]
    assert client.post("/v1/bundles", headers=auth, content=make(signer, 0)).status_code == 409
    assert client.post("/v1/rollback", headers=auth, json={"reason": "x"}).status_code == 409
    assert client.get("/v1/status", headers=auth).json()["active_version"] == 1


def test_inference_continues_while_an_update_installs(signer, updater, monkeypatch):
    from edgeops.hil import updater as updater_module

    updater.install(make(signer, 1))
    errors, served = [], {1: threading.Event(), 2: threading.Event()}
    installing, answered_mid_install, stop = threading.Event(), threading.Event(), threading.Event()
    real_smoke_test = updater_module.smoke_test

    def smoke_test_held_until_a_client_is_answered(model):
        # An install of this tiny model takes ~2 ms, less than one GIL switch interval, so overlap by timing is luck.
        # Holding the install here (lock taken, candidate loaded, not yet active) makes the overlap certain.
        installing.set()
        if not answered_mid_install.wait(10):
            raise AssertionError("no inference was answered while the install was in progress")
        return real_smoke_test(model)

    monkeypatch.setattr(updater_module, "smoke_test", smoke_test_held_until_a_client_is_answered)

    def keep_asking():
        while not stop.is_set():
            try:
                version = updater.infer(dark_inputs(1))[1]
            except Exception as err:
                errors.append(err)
                continue
            served[version].set()
            if installing.is_set() and version == 1:
                answered_mid_install.set()

    worker = threading.Thread(target=keep_asking, daemon=True)
    worker.start()
    try:
        assert served[1].wait(10), "the client was never answered by version 1"
        assert updater.install(make(signer, 2))["activated"] == 2
        assert served[2].wait(10), "the client was never answered by version 2 after the install"
    finally:
        stop.set()
        worker.join(10)
    assert answered_mid_install.is_set() and not errors


def test_personalization_on_the_device_improves_the_head_and_keeps_the_data(signer, updater, tmp_path):
    import onnx

    from edgeops.hil.personalize import find_head, personalize

    artifact = linear_onnx(1)
    head = find_head(onnx.load_from_string(artifact))
    assert head.embedding == "features" and head.weight.shape == (10, FEATURES)
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 16, (300, FEATURES)).astype(np.float32)
    y = np.argmax(x @ rng.normal(0, 1, (FEATURES, 10)), axis=1)  # this user's labels follow another rule
    result = personalize(artifact, x, y, steps=300, learning_rate=0.01, returns="delta")
    assert result["accuracy_after"] > result["accuracy_before"] + 0.2
    assert set(result["delta"]) == {"weight_npy", "bias_npy"} and result["step_latency_ms"]["p95"] > 0
    assert personalize(artifact, x, y, steps=5, returns="nothing") == {"returns": "nothing", "completed": True}
    private = personalize(artifact, x, y, steps=5, clipping_norm=1.0, noise_multiplier=1.0)
    assert private["dp"]["noise_multiplier"] == 1.0 and "delta" not in private
    # DP noise and sampling come from a fresh secret, not from `seed`: the same seed gives two different deltas
    deltas = [
        personalize(artifact, x, y, steps=5, clipping_norm=1.0, noise_multiplier=1.0, returns="delta", seed=0)["delta"][
            "weight_npy"
        ]
        for _ in range(2)
    ]
    assert deltas[0] != deltas[1]

    local = tmp_path / "device-data" / "user1"
    local.mkdir(parents=True)
    np.save(local / "x.npy", x)
    np.save(local / "y.npy", y)
    client = TestClient(
        create_app(TOKEN, updater=updater, local_data=tmp_path / "device-data", allow_returns="metrics")
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert (
        client.post("/v1/personalize", headers=auth, json={"dataset": "user1"}).status_code == 409
    )  # no active model yet
    updater.install(make(signer, 1, artifact=artifact))
    answer = client.post("/v1/personalize", headers=auth, json={"dataset": "user1", "steps": 50, "learning_rate": 0.01})
    assert answer.status_code == 200 and answer.json()["version"] == 1 and "delta" not in answer.json()
    refused = client.post("/v1/personalize", headers=auth, json={"dataset": "user1", "returns": "delta"})
    assert (
        refused.status_code == 403 and "at most 'metrics'" in refused.json()["detail"]
    )  # the device's policy, not the caller's wish
    assert client.post("/v1/personalize", headers=auth, json={"dataset": "../user1"}).status_code == 422
    assert client.post("/v1/personalize", headers=auth, json={"dataset": "nobody"}).status_code == 404


def test_dp_personalization_needs_an_epsilon_and_the_device_total_is_never_overspent(signer, updater, tmp_path):
    from edgeops.hil.personalize import device_ledger, job_epsilon

    artifact = linear_onnx(1)
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 16, (200, FEATURES)).astype(np.float32)
    y = np.argmax(x @ rng.normal(0, 1, (FEATURES, 10)), axis=1)
    local = tmp_path / "device-data" / "user1"
    local.mkdir(parents=True)
    np.save(local / "x.npy", x)
    np.save(local / "y.npy", y)
    updater.install(make(signer, 1, artifact=artifact))
    job = {
        "dataset": "user1",
        "steps": 20,
        "batch_size": 32,
        "clipping_norm": 1.0,
        "noise_multiplier": 1.5,
        "delta": 1e-6,
    }
    cost, _ = job_epsilon(len(x), 20, 32, 0.3, 1.5, 1e-6)
    budget = 2.5 * cost  # room for two jobs, not three
    client = TestClient(
        create_app(TOKEN, updater=updater, local_data=tmp_path / "device-data", device_budget=(budget, 1e-5))
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}

    no_epsilon = client.post("/v1/personalize", headers=auth, json=job)
    assert no_epsilon.status_code == 403 and "needs an epsilon" in no_epsilon.json()["detail"]
    too_small = client.post("/v1/personalize", headers=auth, json={**job, "epsilon": cost / 2})
    assert too_small.status_code == 403 and f"would spend epsilon {cost:.4g}" in too_small.json()["detail"]
    for _ in range(2):
        answer = client.post("/v1/personalize", headers=auth, json={**job, "epsilon": cost * 1.01})
        assert answer.status_code == 200 and answer.json()["device_privacy"]["epsilon"] == pytest.approx(cost)
    over = client.post("/v1/personalize", headers=auth, json={**job, "epsilon": cost * 1.01})
    assert over.status_code == 403
    assert (
        f"needs epsilon {cost:g}, but only {round(budget - 2 * cost, 9):g} of the declared {budget:g} is left"
        in over.json()["detail"]
    )
    ledger = device_ledger(updater.home, budget, 1e-5)
    assert (
        len(ledger.entries()) == 2 and ledger.spent()[0] == pytest.approx(2 * cost) and ledger.spent()[0] <= budget
    )  # under --home
    plain = client.post(
        "/v1/personalize", headers=auth, json={"dataset": "user1", "steps": 5}
    )  # not DP: not charged, still served
    assert plain.status_code == 200 and len(ledger.entries()) == 2


def test_bundle_verify_command_offline(signer, updater, tmp_path):
    from click.testing import CliRunner
    from cryptography.hazmat.primitives import serialization

    from edgeops.cli import main
    from edgeops.signing import public_pem

    public = tmp_path / "signer.pub"
    public.write_bytes(public_pem(signer.public_key()))
    sealed = tmp_path / "sealed.bundle"
    sealed.write_bytes(make(signer, 3, recipient=updater.device_key.public_key()))
    runner = CliRunner()
    envelope = runner.invoke(main, ["bundle", "verify", str(sealed), "--public-key", str(public)])
    assert envelope.exit_code == 0 and "artifact hash not checked without --device-key" in envelope.output
    device_key = updater.home / "identity" / "x25519.pem"
    full = runner.invoke(
        main, ["bundle", "verify", str(sealed), "--public-key", str(public), "--device-key", str(device_key)]
    )
    assert full.exit_code == 0 and '"version": 3' in full.output and "not checked" not in full.output
    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(
        signer.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    refused = runner.invoke(
        main, ["bundle", "verify", str(sealed), "--public-key", str(public), "--device-key", str(wrong)]
    )
    assert refused.exit_code == 2 and "not an X25519 private key" in refused.output


# ---------------------------------------------------------------- OpenSSF model signatures (issue 22)
def test_device_refuses_an_artifact_changed_after_oms_signing(signer, updater):
    """The manifest is correctly ed25519-signed over the altered artifact (as a release built from an artifact altered
    in storage would be); only the OMS signature made at registration can tell, and the device refuses it."""
    good = linear_onnx(1)
    updater.install(make(signer, 1, good))
    import onnx

    original = linear_onnx(2)
    bias = next(t for t in onnx.load_from_string(original).graph.initializer if t.name == "b").raw_data
    altered = bytearray(original)
    altered[original.index(bias)] ^= 0x01  # one byte: the lowest mantissa byte of the first bias (still a valid model)
    with pytest.raises(bundle.BundleError, match="OMS signature: the files do not match the OMS signature"):
        updater.install(make(signer, 2, bytes(altered), oms_of=linear_onnx(2)))
    assert updater.status()["active_version"] == 1
    assert updater.status()["last_event"]["event"] == "refused" and "OMS" in updater.status()["last_event"]["detail"]


def test_device_refuses_an_oms_signature_by_another_key(signer, updater, tmp_path):
    from edgeops import oms

    artifact = linear_onnx(3)
    signature, _ = oms_sign(artifact, tmp_path / "intruder")  # a valid OMS signature, by another P-256 key
    blob = make(signer, 3, artifact, oms_signature=signature, oms_public_key=oms.public_key_pem(OMS_HOME))
    with pytest.raises(bundle.BundleError, match="was not made by the key"):
        updater.install(blob)
    assert updater.status()["active_version"] is None


def test_device_refuses_a_bundle_without_oms_signature(signer, updater):
    verified = bundle.verify(make(signer, 4), signer.public_key())
    unsigned = bundle.seal({k: v for k, v in verified.manifest.items() if k != "oms"}, verified.artifact, signer)
    with pytest.raises(bundle.BundleError, match="carries no OpenSSF model signature"):
        updater.install(unsigned)
    assert updater.status()["active_version"] is None


def test_model_signing_cli_verifies_our_artifact_and_card_folder(tmp_path):
    """The OpenSSF library's own CLI (python -m model_signing verify key) accepts what edgeops signs, and rejects one
    altered byte."""
    import subprocess
    import sys

    from edgeops import oms

    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(linear_onnx(5))
    oms.sign(artifact, tmp_path / "model.onnx.sig", OMS_HOME)
    card = tmp_path / "card"
    card.mkdir()
    (card / "card.json").write_text('{"card": 1}')
    (card / "history.json").write_text("[]")
    oms.sign_card_folder(card, OMS_HOME)
    (card / "history.json").write_text('[{"kind": "review"}]')  # reviews come later: left out of the signature
    public = tmp_path / "oms.pub"
    public.write_bytes(oms.public_key_pem(OMS_HOME))

    def cli(path, signature):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "model_signing",
                "verify",
                "key",
                "--signature",
                str(signature),
                "--public_key",
                str(public),
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )

    for path, signature in ((artifact, tmp_path / "model.onnx.sig"), (card, card / oms.CARD_SIGNATURE)):
        checked = cli(path, signature)
        assert checked.returncode == 0 and "Verification succeeded" in checked.stdout + checked.stderr, checked.stderr
    artifact.write_bytes(artifact.read_bytes()[:-1] + bytes([artifact.read_bytes()[-1] ^ 1]))
    (card / "card.json").write_text('{"card": 2}')
    for path, signature in ((artifact, tmp_path / "model.onnx.sig"), (card, card / oms.CARD_SIGNATURE)):
        refused = cli(path, signature)
        assert refused.returncode != 0 and "Signature mismatch" in refused.stdout + refused.stderr


def test_a_bundle_activated_before_oms_signatures_survives_a_restart(signer, tmp_path):
    """An agent upgraded to check OMS signatures keeps serving the model it had already verified and activated; a
    new install without a signature is still refused."""
    import json

    verified = bundle.verify(make(signer, 7), signer.public_key())
    legacy = bundle.seal({k: v for k, v in verified.manifest.items() if k != "oms"}, verified.artifact, signer)
    home = tmp_path / "agent-legacy"
    (home / "bundles").mkdir(parents=True)
    (home / "bundles" / "7.bundle").write_bytes(legacy)  # as an older agent left it
    (home / "state.json").write_text(json.dumps({"active": {"version": 7}, "previous": None, "events": []}))
    restarted = Updater(home, "phone", signer.public_key(), AGENT_VERSION)
    assert restarted.status()["active_version"] == 7
    with pytest.raises(bundle.BundleError, match="carries no OpenSSF model signature"):
        restarted.install(
            bundle.seal(
                {**{k: v for k, v in verified.manifest.items() if k != "oms"}, "version": 8}, verified.artifact, signer
            )
        )
    assert restarted.status()["active_version"] == 7
