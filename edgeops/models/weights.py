"""Model weights as files: safetensors (never pickles) with one metadata entry, loading them back into a built model,
and `weights_sha256`, a hash of the weights themselves that does not depend on the file format.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn


def save_weights(model: nn.Module, path: Path, metadata: dict[str, Any] | None = None) -> str:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # one entry: safetensors writes its metadata map in a per-process hash order, so several entries would make the
    # same weights' file bytes differ from run to run
    save_file(
        state,
        str(tmp),
        metadata={"edgeops": json.dumps({k: str(v) for k, v in (metadata or {}).items()}, sort_keys=True)},
    )
    tmp.replace(path)
    return weights_sha256(model)


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)))
    return model


def weights_sha256(model: nn.Module) -> str:
    """A hash of the weights themselves (names, shapes, bytes), independent of file format."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        array = tensor.detach().cpu().numpy()
        digest.update(json.dumps([name, list(array.shape), str(array.dtype)]).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
