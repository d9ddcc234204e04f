"""OpenSSF Model Signing (OMS v1.0) signatures with the `model-signing` library (1.1.x), key-based and offline.

Why a second key: the library's key signer accepts only elliptic-curve keys on NIST P-256/P-384/P-521 (it matches
Sigstore's protobuf specs), so the project's ed25519 key (edgeops.signing) cannot make an OMS signature. The OMS key
is an ECDSA P-256 key kept beside the ed25519 one: from EDGEOPS_OMS_KEY_FILE or a declared file, or generated on first
use under <state>/keys/oms_p256.pem (0600) with its public half in oms_p256.pub. The ed25519-signed bundle manifest
carries the OMS public key, so a device that trusts the release signer also trusts the OMS key it verifies with.

A signature is a Sigstore bundle (JSON) whose DSSE payload is an in-toto statement listing the file (or every file of
a folder) by sha256; `python -m model_signing verify key --signature S --public_key K PATH` checks it without edgeops.
No network is used: key signing writes no transparency-log entry.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from edgeops.errors import EdgeopsError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

OMS_KEY_ENV = "EDGEOPS_OMS_KEY_FILE"
SIGNATURE_SUFFIX = ".sig"  # <artifact>.sig beside the artifact (model_signing's own default name is model.sig)
CARD_SIGNATURE = "card.oms.sig"  # inside the card folder
# Files of a card folder that change after the card is written (review history, the re-rendered HTML) or are the
# signature itself: recorded in the signature as ignored, so the library's verifier skips them too.
CARD_IGNORED = ("history.json", "card.html", "render.json", "superseded", CARD_SIGNATURE)


class OmsError(EdgeopsError):
    """An OMS signature that is missing, made by another key, or does not match the files."""


def key_paths(home: Path) -> tuple[Path, Path]:
    return home / "keys" / "oms_p256.pem", home / "keys" / "oms_p256.pub"


def private_key_path(home: Path, key_file: str | None = None) -> Path:
    """The OMS private key file (see the module docstring), created on first use for the embedded default."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from edgeops.signing import write_private_key

    declared = key_file or os.environ.get(OMS_KEY_ENV)
    if declared:
        path = Path(declared)
        if not path.is_file():
            raise OmsError(f"{path}: OMS signing key file not found")
        _check_ec(serialization.load_pem_private_key(path.read_bytes(), password=None).public_key(), str(path))
        return path
    private, public = key_paths(home)
    if not private.exists():
        private.parent.mkdir(parents=True, exist_ok=True)
        write_private_key(private, ec.generate_private_key(ec.SECP256R1()))
        public.write_bytes(public_pem_of(private))
    return private


def _check_ec(public_key: object, where: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name not in (
        "secp256r1",
        "secp384r1",
        "secp521r1",
    ):
        raise OmsError(f"{where}: an OMS key must be an EC key on P-256, P-384 or P-521 (model-signing's key signer)")


def public_pem_of(private_path: Path) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_pem(home: Path, key_file: str | None = None) -> bytes:
    return public_pem_of(private_key_path(home, key_file))


def fingerprint(public_pem: bytes) -> str:
    return "sha256:" + hashlib.sha256(public_pem).hexdigest()[:32]


def sign(
    path: Path, signature_path: Path, home: Path, key_file: str | None = None, ignored: tuple[str, ...] = ()
) -> Path:
    """Sign a file or a folder; `ignored` names paths inside a folder that the signature leaves out."""
    import model_signing

    key = private_key_path(home, key_file)
    hashing = model_signing.hashing.Config().set_ignored_paths(  # type: ignore[no-untyped-call]  # unannotated __init__
        paths=list(ignored), ignore_git_paths=True
    )
    temporary = signature_path.with_name(f".{signature_path.name}.tmp")
    model_signing.signing.Config().use_elliptic_key_signer(  # type: ignore[no-untyped-call]  # unannotated __init__
        private_key=key
    ).set_hashing_config(hashing).sign(path, temporary)
    os.replace(temporary, signature_path)
    return signature_path


def sign_card_folder(folder: Path, home: Path, key_file: str | None = None) -> Path:
    return sign(folder, folder / CARD_SIGNATURE, home, key_file, CARD_IGNORED)


def verify(path: Path, signature_path: Path, public_pem: bytes, where: str | None = None) -> None:
    """Raise OmsError saying why `path` does not match the OMS signature made by the key `public_pem`."""
    import model_signing

    where = where or str(path)
    if not Path(signature_path).is_file():
        raise OmsError(f"{where}: no OMS signature at {signature_path}")
    with tempfile.TemporaryDirectory(prefix="edgeops-oms-") as folder:
        key = Path(folder) / "oms.pub"
        key.write_bytes(public_pem)
        try:
            _check_ec(_load_public(public_pem), "OMS public key")
            model_signing.verifying.Config().use_elliptic_key_verifier(  # type: ignore[no-untyped-call]  # unannotated __init__
                public_key=key
            ).verify(Path(path), Path(signature_path))
        except OmsError:
            raise
        except (
            Exception
        ) as err:  # the library raises ValueError (mismatch) or cryptography's InvalidSignature (other key)
            text = str(err) or type(err).__name__
            if type(err).__name__ == "InvalidSignature" or "key mismatch" in text.lower():
                reason = (
                    f"the OMS signature was not made by the key {fingerprint(public_pem)} "
                    f"({type(err).__name__}: {text[:200]})"
                )
            else:
                reason = f"the files do not match the OMS signature (changed after signing): {text[:300]}"
            raise OmsError(f"{where}: {reason}") from None


def _load_public(pem: bytes) -> PublicKeyTypes:
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as err:
        raise OmsError(f"OMS public key: not a readable PEM public key ({type(err).__name__})") from None


def verify_bytes(artifact: bytes, filename: str, signature_json: str, public_pem: bytes, where: str) -> None:
    """Verify an in-memory artifact (a device's decrypted bundle payload) against its carried OMS signature."""
    with tempfile.TemporaryDirectory(prefix="edgeops-oms-") as folder:
        target = Path(folder) / Path(filename).name
        target.write_bytes(artifact)
        signature = Path(folder) / "artifact.sig"
        signature.write_text(signature_json)
        verify(target, signature, public_pem, where)
