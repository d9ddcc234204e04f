"""File helpers every stage uses: a file's sha256, and a state-folder file only its owner can read. Kept free of any
edgeops import, so that the data, lineage, validation and training modules can all use them without importing each
other."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# A trained model's files in its ledger entry's work folder (central and federated training alike).
TRAINED_WEIGHTS_FILE = "model.safetensors"
TRAINED_ONNX_FILE = "model.onnx"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_owner_only(path: Path, text: str) -> None:
    """A state-folder file readable by its owner alone (records holding un-noised values computed from private rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
        handle.write(text)
    tmp.replace(path)
