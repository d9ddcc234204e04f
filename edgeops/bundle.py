"""Release bundles: one signed (and optionally encrypted) file per target that a device agent can check on its own.

Layout (all lengths big-endian)::

    MAGIC | u32 header length | header (JSON: {"manifest": {...}, "signature": {...}}) | payload

The manifest says what the bundle is (pipeline, model, version, target, runtime, input/output spec, card digest,
minimum agent version), carries a small smoke test (synthetic inputs and the outputs the host computed for them,
so no private data travels) and the sha256 and length of both the payload and the plaintext artifact. The ed25519
signature covers the manifest; the manifest pins the payload. A verifier therefore checks, in this order, before
touching the payload's content: the signature against a key it already trusts, the payload length (truncation)
and the payload hash. Only then does it decrypt and check the artifact's own hash.

Encryption (optional, for one device): ephemeral-static X25519, HKDF-SHA256 to a 256-bit key, ChaCha20-Poly1305
with the bundle's identity as associated data, so a ciphertext cannot be replayed under another version or target.
Everything here is the `cryptography` package; nothing is hand-rolled beyond the framing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from edgeops.errors import EdgeopsError
from edgeops.signing import canonical_bytes, fingerprint, public_pem, sign, verify_signature, write_private_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

MAGIC = b"EDGEOPS-BUNDLE\x00\x01"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 1 << 20
ENCRYPTION_SCHEME = "x25519-hkdf-sha256-chacha20poly1305"
HKDF_INFO = b"edgeops bundle v1"


class BundleError(EdgeopsError):
    """A bundle that must not be installed; the message says why (and names the bundle)."""


@dataclass(frozen=True)
class VerifiedBundle:
    manifest: dict[str, Any]
    artifact: bytes  # plaintext, hash-checked


# ---------------------------------------------------------------- device keys (X25519)
def device_private_key(folder: Path) -> X25519PrivateKey:
    """The device's X25519 key under <folder>/x25519.pem (0600), created on first use."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    path = folder / "x25519.pem"
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, X25519PrivateKey):
            raise BundleError(f"{path}: not an X25519 private key")
        return key
    folder.mkdir(parents=True, exist_ok=True)
    key = X25519PrivateKey.generate()
    write_private_key(path, key)
    return key


def load_device_public(pem: bytes | str, where: str) -> X25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    try:
        key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    except (ValueError, TypeError) as err:
        raise BundleError(f"{where}: not a readable PEM public key ({type(err).__name__})") from None
    if not isinstance(key, X25519PublicKey):
        raise BundleError(f"{where}: not an X25519 public key")
    return key


def _aead_key(shared: bytes, recipient_fingerprint: str) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO + recipient_fingerprint.encode()
    ).derive(shared)


def _associated_data(manifest: dict[str, Any]) -> bytes:
    return canonical_bytes(
        {k: manifest[k] for k in ("pipeline", "model", "version", "target", "runtime")}
        | {"artifact_sha256": manifest["artifact"]["sha256"]}
    )


# ---------------------------------------------------------------- smoke test material
def smoke_inputs(n_features: int, bounds: tuple[float, float] | None, rows: int = 8, seed: int = 0) -> np.ndarray:
    """Synthetic inputs within the declared feature bounds: the smoke test ships no private rows."""
    low, high = bounds if bounds else (0.0, 1.0)
    return np.random.default_rng(seed).uniform(low, high, size=(rows, n_features)).astype(np.float32)


def _npy_b64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode()


def npy_from_b64(text: str) -> np.ndarray:
    return cast(np.ndarray, np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False))


def _io_spec(session: Any) -> dict[str, Any]:
    def describe(arg: Any) -> dict[str, Any]:
        return {"name": arg.name, "shape": [d if isinstance(d, int) else None for d in arg.shape], "dtype": arg.type}

    return {
        "inputs": [describe(a) for a in session.get_inputs()],
        "outputs": [describe(a) for a in session.get_outputs()],
    }


# ---------------------------------------------------------------- build
def build(
    artifact: bytes,
    *,
    pipeline: str,
    model: str,
    version: int,
    target: str,
    runtime: str,
    card_digest: str | None,
    signing_key: Ed25519PrivateKey,
    feature_bounds: tuple[float, float] | None,
    parity_relative: float,
    max_latency_ms: float | None,
    min_agent_version: str,
    recipient: X25519PublicKey | None = None,
    smoke_rows: int = 8,
    n_features: int | None = None,
    oms_signature: str | None = None,
    oms_public_key: bytes | None = None,
    evidence: dict[str, Any] | None = None,
) -> bytes:
    """One bundle. `recipient` is a device's X25519 public key, or None for a signed, unencrypted bundle.
    The smoke tolerance is `parity_relative` times the largest output the host computed: the device runs the same
    artifact on the same runtime, so differences come only from the kernels chosen for its CPU. ONNX artifacts
    describe their own inputs; ExecuTorch and LiteRT ones are run in their tool environment and need `n_features`.
    `oms_signature` (the artifact's OpenSSF model signature, JSON text) and `oms_public_key` (PEM) travel in the signed
    manifest, so a device that trusts the release signer verifies the artifact with model-signing too. `evidence`
    ({"attestation": DSSE envelope, "mlbom": CycloneDX document}) travels in the manifest as well."""
    if runtime == "onnxruntime":
        import onnxruntime as ort

        session = ort.InferenceSession(artifact, providers=["CPUExecutionProvider"])
        io_spec = _io_spec(session)
        width = io_spec["inputs"][0]["shape"][-1]
        if not isinstance(width, int):
            raise BundleError(
                f"the artifact's input {io_spec['inputs'][0]['name']!r} has no fixed feature width: "
                f"{io_spec['inputs'][0]['shape']}"
            )
        x = smoke_inputs(width, feature_bounds, smoke_rows)
        expected = session.run(None, {session.get_inputs()[0].name: x})[0].astype(np.float32)
        filename = "model.onnx"
    else:
        if n_features is None:
            raise BundleError(f"a bundle for runtime {runtime!r} needs the model's feature width (n_features)")
        x = smoke_inputs(n_features, feature_bounds, smoke_rows)
        expected, filename = _tool_runtime_outputs(artifact, runtime, x), f"model{_suffix(runtime)}"
        io_spec = {
            "inputs": [{"name": "features", "shape": [None, n_features], "dtype": "tensor(float)"}],
            "outputs": [{"name": "logits", "shape": [None, int(expected.shape[1])], "dtype": "tensor(float)"}],
        }
    manifest = {
        "format": FORMAT_VERSION,
        "pipeline": pipeline,
        "model": model,
        "version": int(version),
        "target": target,
        "runtime": runtime,
        "created_at": time.time(),
        "card_digest": card_digest,
        "min_agent_version": min_agent_version,
        "io": io_spec,
        "artifact": {"sha256": hashlib.sha256(artifact).hexdigest(), "bytes": len(artifact), "filename": filename},
        "smoke": {
            "inputs_npy": _npy_b64(x),
            "expected_npy": _npy_b64(expected),
            "tolerance": parity_relative * max(float(np.abs(expected).max()), 1e-3),
            "max_latency_ms": max_latency_ms,
        },
    }
    if oms_signature is not None:
        from edgeops.oms import fingerprint as oms_fingerprint

        if oms_public_key is None:
            raise BundleError("an OMS signature needs its public key (oms_public_key) to travel with it")

        manifest["oms"] = {
            "signature": oms_signature,
            "public_key_pem": oms_public_key.decode(),
            "public_key_fingerprint": oms_fingerprint(oms_public_key),
            "library": "model-signing 1.1 (OpenSSF OMS v1.0), key",
        }
    if evidence is not None:
        manifest["evidence"] = evidence
    return seal(manifest, artifact, signing_key, recipient)


def _suffix(runtime: str) -> str:
    from edgeops.runtimes import ARTIFACT_SUFFIX

    return ARTIFACT_SUFFIX[runtime]


def _tool_runtime_outputs(artifact: bytes, runtime: str, x: np.ndarray) -> np.ndarray:
    import tempfile

    from edgeops.runtimes import predict

    with tempfile.TemporaryDirectory(prefix="edgeops-bundle-") as folder:
        path = Path(folder) / f"model{_suffix(runtime)}"
        path.write_bytes(artifact)
        return predict(runtime, path, x).astype(np.float32)


def seal(
    manifest: dict[str, Any], artifact: bytes, signing_key: Ed25519PrivateKey, recipient: X25519PublicKey | None = None
) -> bytes:
    """Frame and sign a manifest with its artifact, encrypting the artifact for `recipient` when given. Used by
    `build` and to re-seal one verified release for each device of a fleet."""
    manifest = {k: v for k, v in manifest.items() if k != "payload"}
    payload = artifact
    encryption = None
    if recipient is not None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        ephemeral = X25519PrivateKey.generate()
        recipient_fingerprint = device_fingerprint(recipient)
        nonce = os.urandom(12)
        key = _aead_key(ephemeral.exchange(recipient), recipient_fingerprint)
        payload = ChaCha20Poly1305(key).encrypt(nonce, artifact, _associated_data(manifest))
        raw_public = ephemeral.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        encryption = {
            "scheme": ENCRYPTION_SCHEME,
            "recipient_fingerprint": recipient_fingerprint,
            "ephemeral_public": base64.b64encode(raw_public).decode(),
            "nonce": base64.b64encode(nonce).decode(),
        }
    manifest["payload"] = {
        "sha256": hashlib.sha256(payload).hexdigest(),
        "bytes": len(payload),
        "encryption": encryption,
    }
    header = json.dumps({"manifest": manifest, "signature": sign(manifest, signing_key)}, sort_keys=True).encode()
    return MAGIC + struct.pack(">I", len(header)) + header + payload


def device_fingerprint(public_key: X25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "x25519:" + hashlib.sha256(raw).hexdigest()[:32]


def device_public_pem(public_key: X25519PublicKey) -> str:
    return public_pem(public_key).decode()


# ---------------------------------------------------------------- verify
def read_header(blob: bytes, where: str = "bundle") -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """Split a bundle into manifest, signature and payload; nothing here is trusted yet."""
    if not blob.startswith(MAGIC):
        raise BundleError(f"{where}: not an edgeops bundle (bad magic)")
    if len(blob) < len(MAGIC) + 4:
        raise BundleError(f"{where}: truncated before the header")
    (length,) = struct.unpack(">I", blob[len(MAGIC) : len(MAGIC) + 4])
    if length > MAX_HEADER_BYTES:
        raise BundleError(f"{where}: header of {length} bytes exceeds the {MAX_HEADER_BYTES}-byte limit")
    start = len(MAGIC) + 4
    if len(blob) < start + length:
        raise BundleError(f"{where}: truncated inside the header ({len(blob) - start} of {length} bytes)")
    try:
        header = json.loads(blob[start : start + length])
        manifest, signature = header["manifest"], header["signature"]
        if not isinstance(manifest, dict) or not isinstance(signature, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise BundleError(f"{where}: header is not the expected JSON document") from None
    return manifest, signature, blob[start + length :]


def verify(
    blob: bytes,
    trusted_key: Ed25519PublicKey,
    device_key: Any = None,  # an X25519PrivateKey (callers narrow it only inside a branch)
    where: str = "bundle",
    require_oms: bool = True,
) -> VerifiedBundle:
    """Signature, then length and hash of the payload, then decryption (needs `device_key` when encrypted), then the
    artifact's hash, then the artifact's OpenSSF model signature (carried in the manifest, made with the OMS key the
    signed manifest names). Raises BundleError with the first problem found; returns the manifest and plaintext
    artifact."""
    manifest, payload = verify_envelope(blob, trusted_key, where)
    encryption = manifest["payload"].get("encryption")
    artifact = _decrypt(payload, manifest, encryption, device_key, where) if encryption else payload
    if (
        hashlib.sha256(artifact).hexdigest() != manifest["artifact"]["sha256"]
        or len(artifact) != manifest["artifact"]["bytes"]
    ):
        raise BundleError(f"{where}: artifact hash mismatch after decryption")
    if require_oms or manifest.get("oms"):
        verify_oms(manifest, artifact, where)
    return VerifiedBundle(manifest=manifest, artifact=artifact)


def verify_oms(manifest: dict[str, Any], artifact: bytes, where: str = "bundle") -> None:
    """The artifact against the OMS signature the manifest carries (edgeops.oms; model-signing's own verifier)."""
    from edgeops.oms import OmsError, verify_bytes
    from edgeops.oms import fingerprint as oms_fingerprint

    carried = manifest.get("oms")
    if not carried or not carried.get("signature") or not carried.get("public_key_pem"):
        raise BundleError(
            f"{where}: the bundle carries no OpenSSF model signature (manifest.oms); refusing an unsigned artifact"
        )
    public_pem = carried["public_key_pem"].encode()
    if carried.get("public_key_fingerprint") not in (None, oms_fingerprint(public_pem)):
        raise BundleError(
            f"{where}: manifest.oms names key {carried.get('public_key_fingerprint')} but carries "
            f"{oms_fingerprint(public_pem)}"
        )
    try:
        verify_bytes(
            artifact, manifest["artifact"]["filename"], carried["signature"], public_pem, f"{where}: OMS signature"
        )
    except OmsError as err:
        raise BundleError(str(err)) from None


def verify_envelope(blob: bytes, trusted_key: Ed25519PublicKey, where: str = "bundle") -> tuple[dict[str, Any], bytes]:
    """What anyone holding the signer's public key can check: signature, payload length and payload hash."""
    manifest, signature, payload = read_header(blob, where)
    if signature.get("key_fingerprint") != fingerprint(trusted_key):
        raise BundleError(
            f"{where}: signed by key {signature.get('key_fingerprint')}, this verifier trusts "
            f"{fingerprint(trusted_key)}"
        )
    if not verify_signature(manifest, signature, trusted_key):
        raise BundleError(f"{where}: bad signature: the manifest was altered or not signed by the trusted key")
    if manifest.get("format") != FORMAT_VERSION:
        raise BundleError(
            f"{where}: bundle format {manifest.get('format')} is not supported (this verifier reads {FORMAT_VERSION})"
        )
    expected = manifest["payload"]
    if len(payload) != expected["bytes"]:
        kind = "truncated" if len(payload) < expected["bytes"] else "has trailing data"
        raise BundleError(
            f"{where}: payload {kind}: {len(payload)} bytes, the signed manifest says {expected['bytes']}"
        )
    if hashlib.sha256(payload).hexdigest() != expected["sha256"]:
        raise BundleError(f"{where}: payload hash mismatch: the payload was altered after signing")
    return manifest, payload


def _decrypt(
    payload: bytes,
    manifest: dict[str, Any],
    encryption: dict[str, Any],
    device_key: X25519PrivateKey | None,
    where: str,
) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    if encryption.get("scheme") != ENCRYPTION_SCHEME:
        raise BundleError(f"{where}: unknown encryption scheme {encryption.get('scheme')!r}")
    if device_key is None:
        raise BundleError(
            f"{where}: encrypted for {encryption['recipient_fingerprint']}; no device key given to decrypt it"
        )
    mine = device_fingerprint(device_key.public_key())
    if encryption["recipient_fingerprint"] != mine:
        raise BundleError(
            f"{where}: encrypted for another device ({encryption['recipient_fingerprint']}; this device is {mine})"
        )
    ephemeral = X25519PublicKey.from_public_bytes(base64.b64decode(encryption["ephemeral_public"]))
    key = _aead_key(device_key.exchange(ephemeral), mine)
    try:
        return ChaCha20Poly1305(key).decrypt(base64.b64decode(encryption["nonce"]), payload, _associated_data(manifest))
    except InvalidTag:
        raise BundleError(f"{where}: decryption failed (authentication tag mismatch)") from None


def describe(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a human needs from a manifest (no smoke arrays)."""
    keep = ("pipeline", "model", "version", "target", "runtime", "card_digest", "min_agent_version", "created_at")
    encryption = manifest["payload"].get("encryption")
    return {k: manifest.get(k) for k in keep} | {
        "artifact_sha256": manifest["artifact"]["sha256"],
        "artifact_bytes": manifest["artifact"]["bytes"],
        "encrypted_for": encryption["recipient_fingerprint"] if encryption else None,
    }


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())
