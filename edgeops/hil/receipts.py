"""Signed benchmark receipts: the device agent signs what it measured, the pipeline checks it was that device.

The agent's receipt key is an ed25519 key made on first start under its --home (identity/receipt_ed25519.pem, 0600);
its public half, written as `ed25519:<base64 of the 32 raw bytes>`, is what the declaration names in
`devices[].receipt_public_key`. A receipt is::

    {"body": {"format", "artifact_sha256", "nonce", "time", "device" (facts), "agent_version", "key", "result"},
     "signature": base64 ed25519 over the body's canonical JSON}

`result` is the whole benchmark result (latency per batch size, memory, energy, accuracy on the device), so every
number the pipeline keeps comes from the signed body. The pipeline sends a fresh nonce with each request and accepts
the receipt only if: the declared key signed it, the nonce is the one it sent (a replayed receipt carries an old
one), the time is within RECEIPT_WINDOW_S of the host's clock, and the artifact is the one it sent.
Dependencies: `cryptography` only (the agent extra has it).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeops.hil.runner import BenchmarkError
from edgeops.signing import canonical_bytes, new_private_key_file

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

RECEIPT_FORMAT = "edgeops-benchmark-receipt/v1"
RECEIPT_WINDOW_S = 300.0  # clock skew plus the benchmark's own duration
KEY_PREFIX = "ed25519:"


class ReceiptError(BenchmarkError):
    """A benchmark result whose receipt does not verify; the message says why."""


def device_key(home: Path) -> Ed25519PrivateKey:
    """The agent's receipt key under <home>/identity/, created on first start."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(home) / "identity" / "receipt_ed25519.pem"
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ReceiptError(f"{path}: not an ed25519 private key")
        return key
    key = new_private_key_file(path)
    (path.parent / "receipt_ed25519.pub.txt").write_text(public_text(key.public_key()) + "\n")
    return key


def public_text(public_key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    return (
        KEY_PREFIX
        + base64.b64encode(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
    )


def load_public_text(text: str, where: str) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not isinstance(text, str) or not text.startswith(KEY_PREFIX):
        raise ReceiptError(f"{where}: a receipt key is written 'ed25519:<base64>', got {str(text)[:40]!r}")
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text[len(KEY_PREFIX) :], validate=True))
    except ValueError as err:
        raise ReceiptError(f"{where}: not an ed25519 public key ({err})") from None


def make_receipt(
    key: Ed25519PrivateKey,
    result: dict[str, Any],
    nonce: str | None,
    artifact_sha256: str,
    facts: dict[str, Any],
    agent_version: str,
) -> dict[str, Any]:
    body = {
        "format": RECEIPT_FORMAT,
        "artifact_sha256": artifact_sha256,
        "nonce": nonce,
        "time": time.time(),
        "device": facts,
        "agent_version": agent_version,
        "key": public_text(key.public_key()),
        "result": result,
    }
    body = json.loads(json.dumps(body))  # exactly what the verifier will parse (floats, no tuples)
    return {"body": body, "signature": base64.b64encode(key.sign(canonical_bytes(body))).decode()}


def verify_receipt(
    receipt: dict[str, Any] | None,
    declared_key: str | None,
    *,
    nonce: str | None,
    artifact_sha256: str,
    where: str,
    now: float | None = None,
    window_s: float = RECEIPT_WINDOW_S,
) -> dict[str, Any]:
    """The signed body of a receipt that verifies; ReceiptError with the reason otherwise. `nonce` None skips the
    nonce check (re-verifying an archived receipt: its freshness was checked when it arrived)."""
    from cryptography.exceptions import InvalidSignature

    if not declared_key:
        raise ReceiptError(
            f"{where}: the device declares no receipt_public_key, so its numbers cannot be verified "
            "(add the agent's identity/receipt_ed25519.pub.txt to the devices: entry)"
        )
    if (
        not isinstance(receipt, dict)
        or not isinstance(receipt.get("body"), dict)
        or not isinstance(receipt.get("signature"), str)
    ):
        raise ReceiptError(
            f"{where}: the result carries no signed receipt (start the agent with --home so it has a receipt key)"
        )
    body: dict[str, Any] = receipt["body"]
    if body.get("format") != RECEIPT_FORMAT:
        raise ReceiptError(f"{where}: receipt format {body.get('format')!r}, expected {RECEIPT_FORMAT!r}")
    if body.get("key") != declared_key:
        raise ReceiptError(
            f"{where}: receipt signed by key {str(body.get('key'))[:20]}..., not the device's declared key "
            f"{declared_key[:20]}... (an undeclared device key)"
        )
    public_key = load_public_text(declared_key, f"{where}: receipt_public_key")
    try:
        public_key.verify(base64.b64decode(receipt["signature"]), canonical_bytes(body))
    except (InvalidSignature, ValueError):
        raise ReceiptError(
            f"{where}: receipt signature does not verify with the declared key: "
            "the numbers were altered or not signed by the device"
        ) from None
    if nonce is not None and body.get("nonce") != nonce:
        raise ReceiptError(
            f"{where}: receipt nonce {str(body.get('nonce'))[:12]}... is not this request's {nonce[:12]}...: "
            "a replayed receipt"
        )
    now = time.time() if now is None else now
    if not isinstance(body.get("time"), (int, float)) or abs(now - body["time"]) > window_s:
        raise ReceiptError(
            f"{where}: receipt made at {body.get('time')}, {abs(now - float(body.get('time') or 0)):.0f} s from now "
            f"(window {window_s:g} s): a stale or replayed receipt"
        )
    if body.get("artifact_sha256") != artifact_sha256:
        raise ReceiptError(
            f"{where}: receipt is for artifact {str(body.get('artifact_sha256'))[:16]}, not {artifact_sha256[:16]}"
        )
    if not isinstance(body.get("result"), dict):
        raise ReceiptError(f"{where}: receipt has no result")
    return body
