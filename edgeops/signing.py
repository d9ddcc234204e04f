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
from typing import TYPE_CHECKING, Any

from edgeops.errors import EdgeopsError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey


class SigningError(EdgeopsError):
    pass


def canonical_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _load_private(pem: bytes, where: str) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as err:
        raise SigningError(
            f"{where}: not a readable PEM private key ({type(err).__name__}); expected an unencrypted ed25519 key"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{where}: the key is not an ed25519 key")
    return key


def signing_key(home: Path, key_file: str | None = None) -> Ed25519PrivateKey:
    """The project's private key (see module docstring for where it comes from)."""
    if os.environ.get("EDGEOPS_SIGNING_KEY"):
        return _load_private(os.environ["EDGEOPS_SIGNING_KEY"].encode(), "env EDGEOPS_SIGNING_KEY")
    path = Path(key_file) if key_file else home / "keys" / "signing_ed25519.pem"
    if path.exists():
        return _load_private(path.read_bytes(), str(path))
    if key_file:
        raise SigningError(f"{path}: signing key file not found")
    key = new_private_key_file(path)
    public_key_path(home).write_bytes(public_pem(key.public_key()))
    return key


def new_private_key_file(path: Path) -> Ed25519PrivateKey:
    """A fresh ed25519 key written to `path` (PKCS8 PEM), readable by its owner only; refuses to overwrite a file."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    write_private_key(path, key)
    return key


def write_private_key(path: Path, key: PrivateKeyTypes) -> None:
    """`key` as unencrypted PKCS8 PEM in a new file at `path`, readable by its owner only (0600 from its creation,
    never a moment wider); refuses to overwrite a file. Every key edgeops creates is written here."""
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)


def public_key_path(home: Path) -> Path:
    return home / "keys" / "signing_ed25519.pub"


def public_pem(public_key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public(pem: bytes, where: str) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as err:
        raise SigningError(f"{where}: not a readable PEM public key ({type(err).__name__})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"{where}: not an ed25519 public key")
    return key


def fingerprint(public_key: Ed25519PublicKey) -> str:
    return "sha256:" + hashlib.sha256(public_pem(public_key)).hexdigest()[:32]


def sign(document: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    return {
        "algorithm": "ed25519",
        "key_fingerprint": fingerprint(key.public_key()),
        "signature": base64.b64encode(key.sign(canonical_bytes(document))).decode(),
    }


def verify_signature(document: dict[str, Any], signature: dict[str, Any], public_key: Ed25519PublicKey) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(base64.b64decode(signature["signature"]), canonical_bytes(document))
        return True
    except (InvalidSignature, KeyError, ValueError):
        return False
