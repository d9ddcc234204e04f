"""ed25519 signing for cards, reviews and release bundles (the `cryptography` package).

The key comes from EDGEOPS_SIGNING_KEY (PEM text), a declared file, or, for the embedded default, a key generated
on first use under <state>/keys/ (mode 0600). Private key material is never logged or written into a card; cards
carry only the public key's fingerprint.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from edgeops.errors import EdgeopsError


class SigningError(EdgeopsError):
    pass


def canonical_bytes(document: dict) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _load_private(pem: bytes, where: str):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as err:
        raise SigningError(f"{where}: not a readable PEM private key ({type(err).__name__}); expected an unencrypted ed25519 key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{where}: the key is not an ed25519 key")
    return key


def signing_key(home: Path, key_file: str | None = None):
    """The project's private key (see module docstring for where it comes from)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if os.environ.get("EDGEOPS_SIGNING_KEY"):
        return _load_private(os.environ["EDGEOPS_SIGNING_KEY"].encode(), "env EDGEOPS_SIGNING_KEY")
    path = Path(key_file) if key_file else home / "keys" / "signing_ed25519.pem"
    if path.exists():
        return _load_private(path.read_bytes(), str(path))
    if key_file:
        raise SigningError(f"{path}: signing key file not found")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    public_key_path(home).write_bytes(public_pem(key.public_key()))
    return key


def public_key_path(home: Path) -> Path:
    return home / "keys" / "signing_ed25519.pub"


def public_pem(public_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public(pem: bytes, where: str):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as err:
        raise SigningError(f"{where}: not a readable PEM public key ({type(err).__name__})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"{where}: not an ed25519 public key")
    return key


def fingerprint(public_key) -> str:
    return "sha256:" + hashlib.sha256(public_pem(public_key)).hexdigest()[:32]


def sign(document: dict, key) -> dict:
    return {"algorithm": "ed25519", "key_fingerprint": fingerprint(key.public_key()),
            "signature": base64.b64encode(key.sign(canonical_bytes(document))).decode()}


def verify_signature(document: dict, signature: dict, public_key) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(base64.b64decode(signature["signature"]), canonical_bytes(document))
        return True
    except (InvalidSignature, KeyError, ValueError):
        return False
