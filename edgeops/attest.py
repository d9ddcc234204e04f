"""in-toto attestations of released artifacts: a Statement v1 per artifact, in a DSSE envelope signed with the
project's ed25519 key (securesystemslib's DSSE Envelope and CryptoSigner; the statement is checked with the
in-toto-attestation library's Statement validator).

The subject is the artifact (its file name and sha256). The predicate (PREDICATE_TYPE) links, each by the sha256 of a
file of the release's evidence folder ({"name": <path in the folder>, "digest": {"sha256": ...}}): the declaration,
the data validation result with the split digests, the privacy ledger with the entries that paid for the artifact
(each by the digest of its canonical JSON) and their composed (epsilon, delta), the compression record and recipe,
the benchmark record and its signed receipt, the card and its OMS signature. `verify` walks all of it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from edgeops.errors import EdgeopsError
from edgeops.signing import canonical_bytes

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    from securesystemslib.signer import Key  # type: ignore[attr-defined]  # re-exported without __all__

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://edgeops.dev/attestation/release/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
ATTESTATION_FILE = "attestation.intoto.json"


class AttestationError(EdgeopsError):
    """An attestation that does not verify; the message names the link of the chain that broke."""


def file_digest(path: Path) -> dict[str, str]:
    return {"sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def link(folder: Path, relative: str) -> dict[str, Any]:
    """A predicate link to a file of the evidence folder."""
    return {"name": relative, "digest": file_digest(folder / relative)}


def entry_digest(entry: dict[str, Any]) -> dict[str, str]:
    return {"sha256": hashlib.sha256(canonical_bytes(entry)).hexdigest()}


def statement(subject_name: str, subject_sha256: str, predicate: dict[str, Any]) -> dict[str, Any]:
    document = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": subject_sha256}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }
    _validate_statement(document)
    return document


def _validate_statement(document: dict[str, Any]) -> None:
    from google.protobuf import json_format
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    try:
        proto = json_format.ParseDict(document, statement_pb2.Statement())
        Statement.copy_from_pb(proto).validate()
    except (json_format.ParseError, ValueError) as err:
        raise AttestationError(f"not a valid in-toto Statement v1: {err}") from None


def _sslib_key(public_key: Ed25519PublicKey) -> Key:
    from securesystemslib.signer import SSlibKey  # type: ignore[attr-defined]  # re-exported without __all__

    return SSlibKey.from_crypto(public_key)


def sign(document: dict[str, Any], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """The DSSE envelope (as JSON) of a statement, signed with an ed25519 private key (pyca/cryptography)."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]  # re-exported without __all__

    envelope = Envelope(payload=json.dumps(document, sort_keys=True).encode(), payload_type=PAYLOAD_TYPE, signatures={})
    envelope.sign(CryptoSigner(private_key))
    return envelope.to_dict()


def open_envelope(envelope: dict[str, Any], public_key: Ed25519PublicKey, where: str = "attestation") -> dict[str, Any]:
    """The statement of an envelope that the key signed (AttestationError otherwise)."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError

    try:
        parsed = Envelope.from_dict(envelope)
    except (KeyError, TypeError, ValueError) as err:
        raise AttestationError(f"{where}: not a DSSE envelope ({type(err).__name__}: {err})") from None
    if parsed.payload_type != PAYLOAD_TYPE:
        raise AttestationError(f"{where}: payload type {parsed.payload_type!r}, expected {PAYLOAD_TYPE!r}")
    try:
        parsed.verify([_sslib_key(public_key)], 1)
    except VerificationError as err:
        raise AttestationError(f"{where}: DSSE signature does not verify with the trusted key: {err}") from None
    document: dict[str, Any] = json.loads(parsed.payload)
    _validate_statement(document)
    if document.get("predicateType") != PREDICATE_TYPE:
        raise AttestationError(
            f"{where}: predicate type {document.get('predicateType')!r}, expected {PREDICATE_TYPE!r}"
        )
    return document


def links(node: Any, path: str = "predicate") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if set(node) >= {"name", "digest"} and isinstance(node["digest"], dict) and isinstance(node["name"], str):
            yield path, node
        for key, value in node.items():
            yield from links(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from links(value, f"{path}[{index}]")


def verify(artifact: Path, folder: Path, public_key: Ed25519PublicKey, where: str | None = None) -> dict[str, Any]:
    """Walk the chain: DSSE signature, subject = the artifact's sha256, every linked file's digest, the ledger entries
    that paid for the artifact against the ledger file, and their composed (epsilon, delta). Returns the statement."""
    folder = Path(folder)
    where = where or str(folder / ATTESTATION_FILE)
    path = folder / ATTESTATION_FILE
    if not path.is_file():
        raise AttestationError(f"{where}: no attestation at {path}")
    try:
        envelope = json.loads(path.read_text())
    except ValueError as err:
        raise AttestationError(f"{where}: not JSON ({err})") from None
    document = open_envelope(envelope, public_key, where)
    actual = hashlib.sha256(Path(artifact).read_bytes()).hexdigest()
    subjects = [s["digest"].get("sha256") for s in document["subject"]]
    if actual not in subjects:
        raise AttestationError(
            f"{where}: the artifact {Path(artifact).name} has sha256 {actual[:16]}..., the attestation's subject is "
            f"{', '.join(s[:16] + '...' for s in subjects)}: the artifact changed after it was attested"
        )
    predicate = document["predicate"]
    for at, node in links(predicate):
        if at.startswith("predicate.privacy.entries"):
            continue  # ledger entries are checked against the ledger below, not as files
        target = (folder / node["name"]).resolve()
        if folder.resolve() not in target.parents:
            raise AttestationError(f"{where}: {at} names {node['name']!r}, outside the evidence folder")
        if not target.is_file():
            raise AttestationError(f"{where}: {at} links {node['name']}, which is missing")
        if file_digest(target)["sha256"] != node["digest"].get("sha256"):
            raise AttestationError(
                f"{where}: {at}: {node['name']} has sha256 {file_digest(target)['sha256'][:16]}..., the attestation "
                f"says {str(node['digest'].get('sha256'))[:16]}..."
            )
    _verify_privacy(predicate.get("privacy") or {}, folder, where)
    return document


def _verify_privacy(privacy: dict[str, Any], folder: Path, where: str) -> None:
    if "ledger" not in privacy:
        raise AttestationError(f"{where}: predicate.privacy links no ledger")
    ledger = json.loads((folder / privacy["ledger"]["name"]).read_text())
    by_id = {entry["id"]: entry for entry in ledger.get("entries", [])}
    spent_epsilon = spent_delta = 0.0
    for index, claimed in enumerate(privacy.get("entries", [])):
        entry = by_id.get(claimed.get("id"))
        if entry is None:
            raise AttestationError(
                f"{where}: predicate.privacy.entries[{index}] names ledger entry {claimed.get('id')}, which the ledger "
                "does not hold"
            )
        if entry_digest(entry) != claimed.get("digest"):
            raise AttestationError(
                f"{where}: predicate.privacy.entries[{index}]: the digest of ledger entry {claimed.get('id')} "
                f"({entry.get('mechanism')}) does not match the ledger (the ledger or the attestation was altered)"
            )
        spent_epsilon += float(entry["epsilon"])
        spent_delta += float(entry["delta"])
    claimed_epsilon, claimed_delta = privacy.get("epsilon"), privacy.get("delta")
    if not isinstance(claimed_epsilon, (int, float)) or not isinstance(claimed_delta, (int, float)):
        raise AttestationError(f"{where}: predicate.privacy states no composed (epsilon, delta)")
    if claimed_epsilon + 1e-9 < spent_epsilon or claimed_delta + 1e-15 < spent_delta:
        raise AttestationError(
            f"{where}: predicate.privacy claims (epsilon {claimed_epsilon:.4g}, delta {claimed_delta:.3g}), less than "
            "the "
            f"ledger entries that paid for the artifact add up to ({spent_epsilon:.4g}, {spent_delta:.3g})"
        )


def envelope_statement(envelope: dict[str, Any]) -> dict[str, Any]:
    """The statement of an envelope without checking it (for display)."""
    return cast(dict[str, Any], json.loads(base64.b64decode(envelope["payload"])))
