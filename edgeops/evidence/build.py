"""Writing a release evidence folder at promotion: `gather` copies a registered version's materials from MLflow, the
ledger and the card folder; `finish` adds the ML-BOM (`card_bom`), the in-toto attestation over `predicate` and the
README (`readme`), then verifies the whole folder; `write` does both atomically (a failed build leaves no folder).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeops import attest, mlbom, oms
from edgeops.evidence.check import EvidenceError, verify
from edgeops.measurement_stages import BENCHMARK_RECORD_ARTIFACT
from edgeops.records import LATENCY_B1_P95_MS, BenchmarkRecord, TargetArtifact
from edgeops.signing import public_pem, signing_key

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from edgeops.spec.declaration import Declaration

README = "README.md"
NO_BENCHMARK_REASON = "no benchmark run for this artifact in MLflow"


def evidence_folder(home: Path, model: str, version: int | str, target: str) -> Path:
    from edgeops.delivery import bundle_folder

    return bundle_folder(home, model, version) / f"{target}-evidence"


def _write_json(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, sort_keys=True, default=str))


def _download(client: MlflowClient, run_id: str, artifact: str, folder: Path) -> Path | None:
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    try:
        return Path(
            download_artifacts(
                run_id=run_id, artifact_path=artifact, dst_path=str(folder), tracking_uri=client.tracking_uri
            )
        )
    except (MlflowException, OSError):
        return None


def gather(
    client: Any, declaration: Declaration, target: str, version: int | str, home: Path, folder: Path
) -> dict[str, Any]:  # client: an MlflowClient
    """Copy a registered version's materials from MLflow, the ledger and the card folder into `folder`; returns what
    the attestation and the ML-BOM need."""
    import tempfile

    from edgeops.delivery import oms_signature
    from edgeops.ledger import ledger_for
    from edgeops.registry import HISTORY_TAG, MODEL_ID_VERSION_TAG, artifact_record, model_version, registered_name

    spec = declaration.spec
    name = registered_name(spec.name, target)
    mv = model_version(client, name, str(version))
    scratch = Path(tempfile.mkdtemp(prefix="edgeops-evidence-"))
    # artifact + OMS signature
    record = artifact_record(client, mv)
    artifact_path = Path(record.artifact_path)
    signature = oms_signature(client, mv, artifact_path, home)
    file = mv.tags.get("edgeops.artifact_file", artifact_path.name)
    (folder / "artifact").mkdir(parents=True, exist_ok=True)
    shutil.copy(artifact_path, folder / "artifact" / file)
    shutil.copy(signature, folder / "artifact" / f"{file}{oms.SIGNATURE_SUFFIX}")
    # keys
    (folder / "keys").mkdir(exist_ok=True)
    (folder / "keys" / "signing_ed25519.pub").write_bytes(public_pem(signing_key(home).public_key()))
    (folder / "keys" / "oms_p256.pub").write_bytes(oms.public_key_pem(home))
    device = spec.device(spec.target(target).device)
    if device.receipt_public_key:
        (folder / "keys" / "device_receipt_key.txt").write_text(device.receipt_public_key + "\n")
    # declaration
    shutil.copy(declaration.file, folder / "declaration.yaml")
    # data: split digests and validation result
    compression_run = client.get_run(mv.run_id)
    experiment = compression_run.info.experiment_id
    datasets = client.search_runs(
        [experiment],
        f"tags.`dataset.digest` = '{mv.tags.get('edgeops.dataset_digest', '')}'"
        " and attributes.run_name = 'validated_dataset'",
        max_results=1,
    )
    splits = {i.dataset.name: i.dataset.digest for r in datasets for i in r.inputs.dataset_inputs}
    outcomes = _download(client, datasets[0].info.run_id, "validation/outcomes.json", scratch) if datasets else None
    _write_json(
        folder / "data" / "validation.json",
        {
            "dataset_digest": mv.tags.get("edgeops.dataset_digest"),
            "splits": splits,
            "validation_run": datasets[0].info.run_id if datasets else None,
            "outcomes": json.loads(outcomes.read_text()) if outcomes else "not found in MLflow",
        },
    )
    # compression record
    compression = _download(client, mv.run_id, "compression/record.json", scratch)
    compression_record = TargetArtifact.model_validate_json(compression.read_text()) if compression else None
    _write_json(folder / "compression" / "record.json", compression_record.to_json() if compression_record else {})
    # privacy: the ledger, the entries that paid for this artifact, the composed (epsilon, delta)
    view = ledger_for(home / "pipelines" / spec.name, spec.privacy.epsilon, spec.privacy.delta).summary()
    _write_json(folder / "privacy" / "ledger.json", view.to_json())
    # read back as written: the attestation digests each paid entry's JSON document, not the record
    ledger = json.loads((folder / "privacy" / "ledger.json").read_text())
    logged = client.get_logged_model(mv.tags[MODEL_ID_VERSION_TAG]) if mv.tags.get(MODEL_ID_VERSION_TAG) else None
    parts = json.loads(logged.params.get("privacy_composition", "{}")) if logged else {}
    paid_ids = set()
    parent = client.get_run(mv.tags["edgeops.parent_mlflow_run"]) if mv.tags.get("edgeops.parent_mlflow_run") else None
    if parent and parent.data.params.get("dp.ledger_entry", "").isdigit():
        paid_ids.add(int(parent.data.params["dp.ledger_entry"]))
    for step in compression_record.steps if compression_record else []:
        for kind in ("finetune", "distill"):
            if isinstance(step.get(kind), dict) and isinstance(step[kind].get("ledger_entry"), int):
                paid_ids.add(step[kind]["ledger_entry"])
    if "dp_statistics" in parts:
        paid_ids |= {
            e["id"]
            for e in ledger["entries"]
            if e["charge_key"].startswith("dp-quantiles:")
            and e["status"] == "completed"
            and e["parameters"].get("dataset_digest") == mv.tags.get("edgeops.dataset_digest")
        }
    paid = [e for e in ledger["entries"] if e["id"] in paid_ids]
    epsilon = (
        float(logged.params["epsilon"])
        if logged and "epsilon" in logged.params
        else sum(p["epsilon"] for p in parts.values())
    )
    delta = (
        float(logged.params["delta"])
        if logged and "delta" in logged.params
        else sum(p["delta"] for p in parts.values())
    )
    if parts:  # the logged parameters are rounded for display: the composition of the parts is exact
        epsilon, delta = sum(p["epsilon"] for p in parts.values()), sum(p["delta"] for p in parts.values())
    # benchmark record and receipt
    benchmarks = client.search_runs(
        [experiment],
        f"tags.`edgeops.target` = '{target}' and tags.`edgeops.stage` = 'hil_benchmark'",
        max_results=50,
        order_by=["attributes.start_time DESC"],
    )
    benchmark: BenchmarkRecord | None = None
    document: dict[str, Any] = {"measured": False, "reason": NO_BENCHMARK_REASON}
    for run in benchmarks:
        if run.data.tags.get("edgeops.artifact_sha256") == record.sha256:
            downloaded = _download(client, run.info.run_id, BENCHMARK_RECORD_ARTIFACT, scratch)
            if downloaded:  # validated into the stage's record: a malformed one is refused, not copied into the bundle
                benchmark = BenchmarkRecord.model_validate_json(downloaded.read_text())
                document = {**benchmark.to_json(), "mlflow_run": run.info.run_id}
            break
    receipt = document.pop("receipt", None)
    _write_json(folder / "benchmark" / "record.json", document)
    if receipt:
        _write_json(folder / "benchmark" / "receipt.json", receipt)
    # card folder (with its OMS signature and review history)
    card_folder = Path(mv.tags.get("edgeops.card_folder", "")) if mv.tags.get("edgeops.card_folder") else None
    if card_folder is None or not (card_folder / "card.json").is_file():
        raise EvidenceError(
            f"{name} v{version}: no card folder recorded (tag edgeops.card_folder); run the pipeline's model_card first"
        )
    if not (
        card_folder / oms.CARD_SIGNATURE
    ).is_file():  # a card written before OMS signatures: its card.json is ed25519-signed
        oms.sign_card_folder(card_folder, home)
    shutil.copytree(
        card_folder, folder / "card", ignore=shutil.ignore_patterns("superseded", ".*.tmp"), dirs_exist_ok=True
    )
    # release history
    history = json.loads(client.get_registered_model(name).tags.get(HISTORY_TAG, "[]"))
    _write_json(folder / "release" / "history.json", {"model": name, "history": history})
    shutil.rmtree(scratch, ignore_errors=True)
    card = json.loads((folder / "card" / "card.json").read_text())
    return {
        "name": name,
        "version": str(version),
        "target": target,
        "file": file,
        "sha256": record.sha256,
        "splits": splits,
        "paid": paid,
        "epsilon": epsilon,
        "delta": delta,
        "parts": parts,
        "compression": compression_record,
        "compression_run": mv.run_id,
        "benchmark": benchmark,
        "receipt": receipt,
        "card": card,
        "spec": spec,
        "validation_passed": _validation_passed(folder / "data" / "validation.json"),
    }


def _validation_passed(path: Path) -> bool | None:
    outcomes = json.loads(path.read_text()).get("outcomes")
    if isinstance(outcomes, dict):
        flags = [v.get("passed") if isinstance(v, dict) else None for v in outcomes.values()]
        flags = [f for f in flags if isinstance(f, bool)]
        return all(flags) if flags else None
    return None


def predicate(folder: Path, facts: dict[str, Any], declaration_sha256: str) -> dict[str, Any]:
    link: Callable[[str], dict[str, Any]] = lambda relative: attest.link(folder, relative)  # noqa: E731
    benchmark = {"record": link("benchmark/record.json"), "measured": _measured(facts["benchmark"])}
    if (folder / "benchmark" / "receipt.json").is_file():
        benchmark["receipt"] = link("benchmark/receipt.json")
        benchmark["device_key"] = (
            link("keys/device_receipt_key.txt") if (folder / "keys" / "device_receipt_key.txt").is_file() else None
        )
    return {
        "pipeline": facts["spec"].name,
        "model": facts["name"],
        "version": facts["version"],
        "target": facts["target"],
        "declaration": {**link("declaration.yaml"), "spec_sha256": declaration_sha256},
        "data": {
            "validation": link("data/validation.json"),
            "splits": facts["splits"],
            "passed": facts["validation_passed"],
        },
        "privacy": {
            "ledger": link("privacy/ledger.json"),
            "epsilon": facts["epsilon"],
            "delta": facts["delta"],
            "composition": "basic (sums)",
            "parts": facts["parts"],
            "entries": [
                {"id": e["id"], "mechanism": e["mechanism"], "digest": attest.entry_digest(e)} for e in facts["paid"]
            ],
        },
        "compression": {
            "record": link("compression/record.json"),
            "recipe": facts["compression"].recipe if facts["compression"] else None,
            "mlflow_run": facts["compression_run"],
        },
        "benchmark": benchmark,
        "card": {
            **link("card/card.json"),
            "signature": link("card/card.sig.json"),
            "oms_signature": link(f"card/{oms.CARD_SIGNATURE}"),
            "history": link("card/history.json"),
        },
        "oms_signature": link(f"artifact/{facts['file']}{oms.SIGNATURE_SUFFIX}"),
        "mlbom": link("mlbom.cdx.json"),
        "release_history": link("release/history.json"),
    }


def _measured(record: BenchmarkRecord | None) -> bool:
    return record is not None and record.measured


def card_bom(folder: Path, facts: dict[str, Any]) -> dict[str, Any]:
    from edgeops import __version__

    spec, card = facts["spec"], facts["card"]
    record: BenchmarkRecord | None = facts["benchmark"]
    metrics = []
    compression: TargetArtifact | None = facts["compression"]
    if compression is not None and compression.accuracy is not None:
        metrics.append(
            {
                "type": "accuracy",
                "value": f"{compression.accuracy:.4f}",
                "slice": "test split (host, target runtime)",
            }
        )
    if compression is not None and compression.accuracy_drop_points is not None:
        metrics.append(
            {
                "type": "accuracy drop (points vs float)",
                "value": f"{compression.accuracy_drop_points:.3f}",
                "slice": "test split",
            }
        )
    on_device: dict[str, Any] = {
        "measured": _measured(record),
        "source": "verified device receipt" if facts["receipt"] else "host measurement",
        "device": record.device_name if record else None,
    }
    if record is not None and record.measured:
        batch1 = record.batch1
        on_device |= {
            LATENCY_B1_P95_MS: batch1.p95_ms if batch1 else None,
            "peak_rss_beyond_baseline_kb": record.peak_rss_beyond_baseline_kb,
            "accuracy_on_device": record.accuracy_on_device,
            "energy": record.energy.to_json() if record.energy else None,
        }
        for value, label in (
            ((batch1.p95_ms, "latency p95 (ms)"), (batch1.p50_ms, "latency p50 (ms)")) if batch1 else ()
        ):
            if value is not None:
                metrics.append(
                    {"type": label, "value": f"{value:.4f}", "slice": f"device {record.device_name}, batch 1"}
                )
        if record.accuracy_on_device is not None:
            metrics.append(
                {
                    "type": "accuracy",
                    "value": f"{record.accuracy_on_device:.4f}",
                    "slice": f"test split on device {record.device_name}",
                }
            )
    else:
        on_device["reason"] = record.reason if record else NO_BENCHMARK_REASON
    io_width = spec.dataset.n_features or len(spec.dataset.features or []) or None
    return mlbom.build(
        model=facts["name"],
        version=facts["version"],
        target=facts["target"],
        artifact_name=facts["file"],
        artifact_sha256=facts["sha256"],
        family=spec.model.family,
        task="classification",
        inputs=f"tensor(float) [N, {io_width or '?'}]",
        outputs=f"logits [N, {len(spec.dataset.classes)}]",
        datasets=facts["splits"],
        metrics=metrics,
        privacy={"epsilon": facts["epsilon"], "delta": facts["delta"]},
        on_device=on_device,
        considerations=[str(card.get("intended_use", {}).get("out_of_scope", "see the card"))[:500]]
        if isinstance(card.get("intended_use"), dict)
        else ["see the card"],
        card_sha256=hashlib.sha256((folder / "card" / "card.json").read_bytes()).hexdigest(),
        tool_version=__version__,
    )


def write(
    client: MlflowClient,
    declaration: Declaration,
    target: str,
    version: int | str,
    home: Path,
    folder: Path | None = None,
) -> Path:
    """Build the evidence folder of one registered version (atomically: a failed build leaves no folder)."""
    from edgeops.registry import registered_name

    name = registered_name(declaration.spec.name, target)
    final = folder or evidence_folder(home, name, version, target)
    staging = final.with_name(f".{final.name}.part")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        facts = gather(client, declaration, target, version, home, staging)
        finish(staging, facts, declaration.sha256, home)
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    return final


def finish(folder: Path, facts: dict[str, Any], declaration_sha256: str, home: Path) -> None:
    """ML-BOM, attestation and README over gathered materials, then the whole folder verified (what we hand out must
    verify: a failure here stops the promotion)."""
    bom = card_bom(folder, facts)
    (folder / "mlbom.cdx.json").write_text(json.dumps(bom, indent=1))
    statement = attest.statement(facts["file"], facts["sha256"], predicate(folder, facts, declaration_sha256))
    (folder / attest.ATTESTATION_FILE).write_text(json.dumps(attest.sign(statement, signing_key(home)), indent=1))
    (folder / README).write_text(readme(facts))
    verify(folder)


def readme(facts: dict[str, Any]) -> str:
    file = facts["file"]
    return f"""# Release evidence: {facts["name"]} v{facts["version"]} (target {facts["target"]})

Artifact `artifact/{file}`, sha256 `{facts["sha256"]}`; \
(epsilon, delta) = ({facts["epsilon"]:.4g}, {facts["delta"]:.3g}) by basic
composition of the ledger entries listed in the attestation. Written by edgeops at promotion, \
{time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}.

## Verify with edgeops (offline; no edgeops state needed)

    edgeops release verify-evidence .                 # everything below, in one go
    edgeops attest verify artifact/{file} --evidence .

Pin the keys you already trust with `--public-key` (ed25519 release key) and `--oms-public-key` (OMS P-256 key); by
default the keys in `keys/` are used, which proves integrity, not who signed.

## Verify without edgeops

- OpenSSF model signature of the artifact and of the card folder (the `model-signing` package's own CLI):

      python -m model_signing verify key --signature artifact/{file}.sig --public_key keys/oms_p256.pub artifact/{file}
      python -m model_signing verify key --signature card/card.oms.sig --public_key keys/oms_p256.pub card

- ML-BOM: validate `mlbom.cdx.json` against the CycloneDX 1.6 JSON schema (e.g. `cyclonedx-py`'s or any \
JSON-schema tool).
- Attestation: `attestation.intoto.json` is a DSSE envelope (payload type application/vnd.in-toto+json) signed with
  `keys/signing_ed25519.pub`; its payload is an in-toto Statement v1 whose predicate links every file here by sha256.
- Benchmark receipt: `benchmark/receipt.json` is signed (ed25519) by the device key in `keys/device_receipt_key.txt`
  over the canonical JSON of its body (sorted keys, no spaces).

## Contents

| path | what |
|---|---|
| artifact/ | the released artifact and its OMS signature |
| keys/ | public keys: release (ed25519), OMS (P-256), the benchmark device's receipt key |
| declaration.yaml | the pipeline declaration |
| data/validation.json | split digests and the data validation result |
| privacy/ledger.json | the privacy ledger at release time |
| compression/record.json | recipe, parity, accuracy and size of the artifact |
| benchmark/ | the benchmark record and the device's signed receipt |
| card/ | the model card (JSON, Markdown, HTML, MCT), its signatures and review history |
| release/history.json | promotions and rollbacks of this model |
| mlbom.cdx.json | CycloneDX 1.6 ML-BOM |
| attestation.intoto.json | the in-toto attestation linking all of the above |
"""
