"""Checking a release evidence folder: `verify` runs every check an auditor needs with nothing but the folder (and,
optionally, keys the auditor pins): the OMS signatures of the artifact and the card, the in-toto attestation, the
card's ed25519 signature, the ML-BOM and the device's benchmark receipt. `copy` hands a folder out and verifies the
copy. EvidenceError, raised here and while the folder is written, lives here too.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeops import attest, mlbom, oms
from edgeops.errors import EdgeopsError
from edgeops.signing import load_public, verify_signature


class EvidenceError(EdgeopsError):
    pass


def verify(
    folder: Path, public_key_file: Path | None = None, oms_public_key_file: Path | None = None
) -> dict[str, Any]:
    """Every check an auditor needs, from the folder alone; EvidenceError lists each problem. Returns what was
    checked."""
    from edgeops.hil.receipts import ReceiptError, verify_receipt

    folder = Path(folder)
    started = time.perf_counter()
    problems, checked = [], {}
    release_key_path = Path(public_key_file) if public_key_file else folder / "keys" / "signing_ed25519.pub"
    oms_key_path = Path(oms_public_key_file) if oms_public_key_file else folder / "keys" / "oms_p256.pub"
    try:
        release_key = load_public(release_key_path.read_bytes(), str(release_key_path))
        oms_public = oms_key_path.read_bytes()
    except (OSError, EdgeopsError) as err:
        raise EvidenceError(f"{folder}: keys: {err}") from None
    artifacts = (
        [p for p in (folder / "artifact").glob("*") if not p.name.endswith(oms.SIGNATURE_SUFFIX)]
        if (folder / "artifact").is_dir()
        else []
    )
    if len(artifacts) != 1:
        raise EvidenceError(f"{folder}: expected one artifact under artifact/, found {len(artifacts)}")
    artifact = artifacts[0]

    def check(name: str, function: Callable[[], object]) -> None:
        try:
            checked[name] = function() or "ok"
        except (EdgeopsError, OSError, ValueError, KeyError) as err:
            problems.append(f"{name}: {err}")

    check(
        "oms_artifact",
        lambda: oms.verify(
            artifact, artifact.with_name(artifact.name + oms.SIGNATURE_SUFFIX), oms_public, f"artifact/{artifact.name}"
        ),
    )
    check("oms_card", lambda: oms.verify(folder / "card", folder / "card" / oms.CARD_SIGNATURE, oms_public, "card/"))
    statement: dict[str, Any] = {}

    def attestation() -> None:
        statement.update(attest.verify(artifact, folder, release_key, attest.ATTESTATION_FILE))

    check("attestation", attestation)

    def card_signature() -> None:
        card = json.loads((folder / "card" / "card.json").read_text())
        signature = json.loads((folder / "card" / "card.sig.json").read_text())
        if not verify_signature(card, signature, release_key):
            raise EvidenceError(
                "card/card.json: its ed25519 signature (card.sig.json) does not verify with the release key"
            )

    check("card_signature", card_signature)

    def bom() -> None:
        text = (folder / "mlbom.cdx.json").read_text()
        mlbom.validate(text, "mlbom.cdx.json")
        model = mlbom.model_component(json.loads(text))
        digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
        if {"alg": "SHA-256", "content": digest} not in model.get("hashes", []):
            raise EvidenceError(
                f"mlbom.cdx.json: the model component's SHA-256 is not the artifact's ({digest[:16]}...)"
            )

    check("mlbom", bom)

    def receipt() -> str:
        path = folder / "benchmark" / "receipt.json"
        if not path.is_file():
            record = json.loads((folder / "benchmark" / "record.json").read_text())
            return (
                f"no receipt: measured on the host ({record.get('device_kind', 'not measured')}: "
                f"{record.get('reason', 'local device')})"
            )
        key_path = folder / "keys" / "device_receipt_key.txt"
        declared = key_path.read_text().strip() if key_path.is_file() else None
        receipt_document = json.loads(path.read_text())
        body = verify_receipt(
            receipt_document,
            declared,
            nonce=None,
            artifact_sha256=hashlib.sha256(artifact.read_bytes()).hexdigest(),
            where="benchmark/receipt.json",
            now=receipt_document.get("body", {}).get("time"),
        )  # freshness was checked when it arrived
        record = json.loads((folder / "benchmark" / "record.json").read_text())
        for key in ("latency", "peak_rss_beyond_baseline_kb", "accuracy_on_device"):
            if record.get(key) != body["result"].get(key):
                raise ReceiptError(f"benchmark/record.json: {key} differs from the signed receipt's")
        return "receipt verifies with the declared device key; the record's numbers are the receipt's"

    check("receipt", receipt)
    if problems:
        raise EvidenceError(f"{folder}: evidence does not verify:\n  " + "\n  ".join(problems))
    checked["seconds"] = round(time.perf_counter() - started, 3)
    checked["artifact"] = {
        "name": artifact.name,
        "sha256": statement.get("subject", [{}])[0].get("digest", {}).get("sha256"),
    }
    return checked


def copy(source: Path, out: Path) -> Path:
    """`edgeops release evidence`: the folder written at promotion, copied to `out` and verified there."""
    if not (source / attest.ATTESTATION_FILE).is_file():
        raise EvidenceError(f"{source}: no release evidence here (it is written when a version is promoted)")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise EvidenceError(f"{out}: not empty; give a new folder")
    shutil.copytree(source, out, dirs_exist_ok=True)
    verify(out)
    return out
