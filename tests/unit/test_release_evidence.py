"""Release evidence (issue 22): in-toto attestation, CycloneDX 1.6 ML-BOM and the offline-verifiable folder.

The folder is built here from real pieces (a real ONNX artifact, OMS signatures by model-signing, a real privacy
ledger, a receipt signed by a device key, a signed card) without MLflow; `gather` (the MLflow side) runs in the
end-to-end test. Each bad-input row of the issue is shown refused with its reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from record_examples import TARGET_ARTIFACT_INT8

from edgeops import attest, evidence, mlbom, oms
from edgeops.hil.receipts import device_key, make_receipt, public_text
from edgeops.ledger import ledger_for
from edgeops.records import BenchmarkRecord, TargetArtifact
from edgeops.records.compression import REGISTRY_FIELDS
from edgeops.signing import public_pem, sign, signing_key
from edgeops.spec import load_declaration

ROOT = Path(__file__).resolve().parents[2]


def linear_onnx(width: int = 64) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.1, (width, 10)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["logits"])],
        "linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [weights],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def build_folder(folder: Path, home: Path, device_home: Path, artifact: bytes | None = None) -> Path:
    """What `evidence.gather` copies out of MLflow, made by hand, then `evidence.finish` as at promotion (also used by
    benchmarks/release_evidence.py)."""
    facts, declaration = materials(folder, home, device_home, artifact)
    evidence.finish(folder, facts, declaration.sha256, home)
    return folder


def materials(folder: Path, home: Path, device_home: Path, artifact: bytes | None = None) -> tuple[dict, object]:
    import hashlib

    declaration = load_declaration(ROOT / "pipelines" / "digits.yaml")
    artifact = artifact or linear_onnx()
    sha = hashlib.sha256(artifact).hexdigest()
    (folder / "artifact").mkdir(parents=True)
    (folder / "artifact" / "model.onnx").write_bytes(artifact)
    oms.sign(folder / "artifact" / "model.onnx", folder / "artifact" / "model.onnx.sig", home)
    (folder / "keys").mkdir()
    (folder / "keys" / "signing_ed25519.pub").write_bytes(public_pem(signing_key(home).public_key()))
    (folder / "keys" / "oms_p256.pub").write_bytes(oms.public_key_pem(home))
    receipt_key = device_key(device_home)
    (folder / "keys" / "device_receipt_key.txt").write_text(public_text(receipt_key.public_key()) + "\n")
    shutil.copy(declaration.file, folder / "declaration.yaml")
    splits = {"train": "sha256:" + "1" * 16, "validation": "sha256:" + "2" * 16, "test": "sha256:" + "3" * 16}
    evidence._write_json(
        folder / "data" / "validation.json", {"splits": splits, "outcomes": {"expectations": {"passed": True}}}
    )
    ledger = ledger_for(home / "pipelines" / "digits", 4.0, 2e-5)  # delta composes: two entries at 1e-5
    paid, _ = ledger.charge("dp-sgd:test", "dp-sgd (opacus)", 1.5, 1e-5, {"seed": 1}, run_id="r1")
    ledger.update(paid.id, "completed", epsilon=1.25)
    ledger.charge("dp-sgd:other", "dp-sgd (opacus)", 0.5, 1e-5, {"seed": 2}, run_id="r2")  # another model's training
    evidence._write_json(folder / "privacy" / "ledger.json", ledger.summary().to_json())
    entries = json.loads((folder / "privacy" / "ledger.json").read_text())["entries"]
    # the record as the compression run logged it to MLflow: before the registry fields were added
    compression = TargetArtifact.model_validate(
        {k: v for k, v in TARGET_ARTIFACT_INT8.items() if k not in (*REGISTRY_FIELDS, "oms_signature")}
        | {"target": "phone", "accuracy": 0.91, "accuracy_drop_points": 0.4}
    )
    evidence._write_json(folder / "compression" / "record.json", compression.to_json())
    stats = {"p50_ms": 0.05, "p90_ms": 0.07, "p95_ms": 0.08, "p99_ms": 0.09, "mean_ms": 0.055, "std_ms": 0.01}
    result = {
        "load_ms": 3.5,
        "latency": {"1": stats | {"runs": 200, "throughput_per_s": 18000.0}},
        "accuracy_on_device": 0.9,
        "n_eval": 100,
        "peak_rss_beyond_baseline_kb": 812,
        "baseline_rss_kb": 51200,
        "memory_method": "VmHWM reset at baseline (/proc/self/clear_refs)",
        "energy": {"measured": False, "reason": "no RAPL interface"},
        "device": {"runtime": "onnxruntime", "cores": 4},
        "roofline": {"device_peak_gflops": 40.0, "macs": None, "peak_probe": "fp32 256x256 matmul, ONNX Runtime CPU"},
    }
    receipt = make_receipt(receipt_key, result, "ab" * 16, sha, {"runtime": "onnxruntime"}, "0.2.0")
    bench = BenchmarkRecord.model_validate(
        {"target": "phone", "device_name": "pi", "device_kind": "agent", "artifact_sha256": sha, "batch_sizes": [1]}
        | {"measured": True, **result}
    )
    evidence._write_json(folder / "benchmark" / "record.json", bench.to_json())
    evidence._write_json(folder / "benchmark" / "receipt.json", receipt)
    (folder / "card").mkdir()
    card = {"card_id": "digits/abc", "intended_use": {"out_of_scope": "medical use"}}
    (folder / "card" / "card.json").write_text(json.dumps(card))
    (folder / "card" / "card.sig.json").write_text(json.dumps(sign(card, signing_key(home))))
    (folder / "card" / "card.md").write_text("# card\n")
    (folder / "card" / "history.json").write_text("[]")
    oms.sign_card_folder(folder / "card", home)
    evidence._write_json(folder / "release" / "history.json", {"model": "digits-phone", "history": []})
    facts = {
        "name": "digits-phone",
        "version": "3",
        "target": "phone",
        "file": "model.onnx",
        "sha256": sha,
        "splits": splits,
        "paid": [e for e in entries if e["id"] == paid.id],
        "epsilon": 1.25,
        "delta": 1e-5,
        "parts": {"dp_model": {"epsilon": 1.25, "delta": 1e-5}},
        "compression": compression,
        "compression_run": "run-1",
        "benchmark": bench,
        "receipt": receipt,
        "card": card,
        "spec": declaration.spec,
        "validation_passed": True,
    }
    return facts, declaration


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("evidence")
    return build_folder(base / "release", base / "home", base / "device"), base / "home"


@pytest.fixture
def copy(built, tmp_path):
    folder, _ = built
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


def test_folder_verifies_and_the_statement_links_everything(built):
    folder, _home = built
    checked = evidence.verify(folder)
    assert set(checked) >= {"oms_artifact", "oms_card", "attestation", "card_signature", "mlbom", "receipt"}
    envelope = json.loads((folder / attest.ATTESTATION_FILE).read_text())
    statement = attest.envelope_statement(envelope)
    assert (
        statement["_type"] == "https://in-toto.io/Statement/v1"
        and envelope["payloadType"] == "application/vnd.in-toto+json"
    )
    assert statement["subject"][0]["digest"]["sha256"] == checked["artifact"]["sha256"]
    predicate = statement["predicate"]
    assert {"declaration", "data", "privacy", "compression", "benchmark", "card"} <= set(predicate)
    assert [e["id"] for e in predicate["privacy"]["entries"]] == [1] and predicate["privacy"]["epsilon"] == 1.25
    assert predicate["benchmark"]["receipt"]["name"] == "benchmark/receipt.json"
    bom = json.loads((folder / "mlbom.cdx.json").read_text())
    model = mlbom.model_component(bom)
    assert bom["specVersion"] == "1.6" and model["type"] == "machine-learning-model"
    assert {"modelParameters", "quantitativeAnalysis", "considerations"} <= set(model["modelCard"])
    assert any(c["type"] == "library" and c["name"].lower() == "model-signing" for c in bom["components"])
    assert any(
        m["slice"].startswith("device pi") for m in model["modelCard"]["quantitativeAnalysis"]["performanceMetrics"]
    )


def test_evidence_verifies_offline_without_edgeops_state(built, tmp_path):
    """A fresh process, in an empty folder, with EDGEOPS_HOME pointing nowhere: the CLI verifies the copied folder,
    and the OpenSSF library's own CLI verifies the artifact and the card folder."""
    folder, _ = built
    out = tmp_path / "audit"
    shutil.copytree(folder, out)
    env = {**os.environ, "EDGEOPS_HOME": str(tmp_path / "no-state"), "EDGEOPS_SIGNING_KEY": ""}
    checked = subprocess.run(
        [sys.executable, "-m", "edgeops.cli", "release", "verify-evidence", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stderr
    assert "verifies" in checked.stdout and not (tmp_path / "no-state").exists()
    attested = subprocess.run(
        [sys.executable, "-m", "edgeops.cli", "attest", "verify", str(out / "artifact" / "model.onnx")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert attested.returncode == 0 and "declaration.yaml" in attested.stdout, attested.stderr
    for path, signature in (("artifact/model.onnx", "artifact/model.onnx.sig"), ("card", "card/card.oms.sig")):
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "model_signing",
                "verify",
                "key",
                "--signature",
                signature,
                "--public_key",
                "keys/oms_p256.pub",
                path,
            ],
            capture_output=True,
            text=True,
            cwd=out,
            timeout=300,
        )
        assert cli.returncode == 0, cli.stderr


def refused(folder: Path, match: str) -> None:
    with pytest.raises(evidence.EvidenceError, match=match):
        evidence.verify(folder)


def test_artifact_changed_after_signing_is_refused(copy):
    artifact = copy / "artifact" / "model.onnx"
    data = bytearray(artifact.read_bytes())
    data[-20] ^= 0x01
    artifact.write_bytes(bytes(data))
    refused(copy, r"oms_artifact: .*changed after signing")
    refused(copy, r"attestation: .*the artifact changed after it was attested")


def test_signature_by_another_key_is_refused(copy, tmp_path):
    """The whole folder re-signed consistently by an intruder's keys still fails against the keys the auditor pins."""
    intruder = tmp_path / "intruder"
    oms.sign(copy / "artifact" / "model.onnx", copy / "artifact" / "model.onnx.sig", intruder)
    pinned_oms = tmp_path / "pinned_oms.pub"
    pinned_oms.write_bytes((copy / "keys" / "oms_p256.pub").read_bytes())
    with pytest.raises(evidence.EvidenceError, match="oms_artifact: .*was not made by the key"):
        evidence.verify(copy, oms_public_key_file=pinned_oms)
    envelope = json.loads((copy / attest.ATTESTATION_FILE).read_text())
    (copy / attest.ATTESTATION_FILE).write_text(
        json.dumps(attest.sign(attest.envelope_statement(envelope), signing_key(intruder)))
    )
    refused(copy, "attestation: .*DSSE signature does not verify")


def test_attestation_whose_ledger_digest_does_not_match_is_refused(copy, built):
    """The ledger entry that paid for the artifact rewritten to a smaller epsilon (file digest fixed up too, as an
    attacker with the folder would): the entry's digest in the signed predicate no longer matches."""
    ledger_path = copy / "privacy" / "ledger.json"
    ledger = json.loads(ledger_path.read_text())
    ledger["entries"][0]["epsilon"] = 0.1
    ledger_path.write_text(json.dumps(ledger, indent=1, sort_keys=True))
    refused(copy, r"attestation: .*predicate.privacy.ledger: privacy/ledger.json has sha256")
    # and with a predicate re-signed over the new file digest but the old entry digest (by the release key itself)
    _, home = built
    envelope = json.loads((copy / attest.ATTESTATION_FILE).read_text())
    statement = attest.envelope_statement(envelope)
    statement["predicate"]["privacy"]["ledger"] = attest.link(copy, "privacy/ledger.json")
    (copy / attest.ATTESTATION_FILE).write_text(json.dumps(attest.sign(statement, signing_key(home))))
    refused(copy, r"the digest of ledger entry 1 \(dp-sgd \(opacus\)\) does not match the ledger")
    # a predicate understating (epsilon, delta) against the entries it lists
    ledger["entries"][0]["epsilon"] = 1.25
    ledger_path.write_text(json.dumps(ledger, indent=1, sort_keys=True))
    statement["predicate"]["privacy"]["ledger"] = attest.link(copy, "privacy/ledger.json")
    statement["predicate"]["privacy"]["epsilon"] = 0.5
    (copy / attest.ATTESTATION_FILE).write_text(json.dumps(attest.sign(statement, signing_key(home))))
    refused(copy, r"claims \(epsilon 0.5, .*less than the ledger entries")


def test_receipt_by_undeclared_key_in_the_folder_is_refused(copy, tmp_path):
    body = json.loads((copy / "benchmark" / "receipt.json").read_text())["body"]
    forged = make_receipt(
        device_key(tmp_path / "other-device"),
        body["result"],
        body["nonce"],
        body["artifact_sha256"],
        body["device"],
        "0.2.0",
    )
    (copy / "benchmark" / "receipt.json").write_text(json.dumps(forged))
    refused(copy, "receipt: .*undeclared device key")


def test_mlbom_failing_its_schema_is_refused(copy):
    bom = json.loads((copy / "mlbom.cdx.json").read_text())
    mlbom.model_component(bom)["modelCard"]["modelParameters"]["approach"]["type"] = "guesswork"
    (copy / "mlbom.cdx.json").write_text(json.dumps(bom))
    refused(
        copy,
        r"mlbom: mlbom.cdx.json: fails the CycloneDX 1.6 schema at "
        r"components/0/modelCard/modelParameters/approach/type",
    )
    with pytest.raises(mlbom.MlBomError, match="fails the CycloneDX 1.6 schema"):
        mlbom.validate(bom)


def test_release_evidence_command_copies_and_verifies(built, tmp_path):
    folder, _ = built
    out = evidence.copy(folder, tmp_path / "out")
    assert (out / "README.md").read_text().startswith("# Release evidence: digits-phone v3")
    with pytest.raises(evidence.EvidenceError, match="not empty"):
        evidence.copy(folder, out)
    assert evidence.verify(out)["attestation"] == "ok"


def test_a_bom_failing_its_schema_stops_the_release_and_leaves_no_folder(tmp_path, monkeypatch):
    """As at promotion (`evidence.write`, which runs before the production alias moves): the ML-BOM is refused while
    being made, the error names the schema path, and neither the evidence folder nor its staging copy is left."""
    declaration = load_declaration(ROOT / "pipelines" / "digits.yaml")
    monkeypatch.setattr(
        evidence.build,  # where write looks gather up
        "gather",
        lambda client, decl, target, version, home, folder: materials(folder, tmp_path / "home", tmp_path / "device")[
            0
        ],
    )
    original = mlbom.build

    def bad_metric(**kwargs):  # a performance metric with a field CycloneDX 1.6 does not define
        return original(
            **{
                **kwargs,
                "metrics": [*kwargs["metrics"], {"type": "accuracy", "value": "0.9", "slice": "test", "seed": "7"}],
            }
        )

    monkeypatch.setattr(mlbom, "build", bad_metric)
    final = tmp_path / "bundles" / "digits-phone" / "v3" / "phone-evidence"
    with pytest.raises(
        mlbom.MlBomError, match=r"fails the CycloneDX 1.6 schema at components/0/modelCard/quantitativeAnalysis"
    ):
        evidence.write(None, declaration, "phone", 3, tmp_path / "home", folder=final)
    assert not final.exists() and not final.with_name(".phone-evidence.part").exists()
