"""What a privacy ledger charge is keyed by: `Computation` (a hash of exactly what determines a mechanism's
computation and its output), `code_version` (the edgeops version, a sha256 of the source files of the modules that
compute it and its libraries' versions), the DP-SGD modules and libraries, and `training_code_version` (the dp_model
asset's code version for Dagster). edgeops.ledger re-exports these names.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from edgeops.spec import PipelineSpec


# ---------------------------------------------------------------- what a charge is keyed by
def _source_files(package: Path, module: str) -> list[tuple[str, Path]]:
    """(name, path) of the source files of one edgeops module, or of every module in it when it is a package: a module
    split into a package stays one entry of the code version, and an edit to any of its files is still a new one."""
    path = package / module.replace(".", "/")
    if path.is_dir():
        return [
            (f"{module}.{file.relative_to(path).with_suffix('').as_posix().replace('/', '.')}", file)
            for file in sorted(path.rglob("*.py"))
        ]
    return [(module, path.with_suffix(".py"))]


@cache
def _source_sha256(modules: tuple[str, ...]) -> str:
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for module in sorted(modules):
        for name, path in _source_files(package, module):
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def code_version(*modules: str, libraries: tuple[str, ...] = ()) -> dict[str, Any]:
    """The code that runs a mechanism: the edgeops package version, a sha256 of the source files of the edgeops modules
    that compute it (names relative to the package: "training", "models", ...; a subpackage counts every file in it)
    and the versions of the libraries it calls (torch, opacus, ...). Any edit to those files, or another library
    version, is a different computation, charged anew; an edit elsewhere (cards, CLI, checks, asset wiring) is not."""
    from importlib.metadata import version

    from edgeops import __version__

    return {
        "edgeops": __version__,
        "modules": sorted(set(modules)),
        "source_sha256": _source_sha256(tuple(sorted(set(modules)))),
        "libraries": {name: version(name) for name in sorted(libraries)},
    }


class Computation(BaseModel):
    """Exactly what determines one mechanism's computation and its output; its hash is the charge key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(description="short mechanism name, the key's prefix (dpsgd, dp-quantiles, ...)")
    dataset_digest: str = Field(description="digest of the private data it reads")
    inputs: dict[Any, Any] = Field(
        default_factory=dict, description="resolved inputs: feature bounds, the weights it starts from, ..."
    )
    hyperparameters: dict[Any, Any] = Field(
        default_factory=dict, description="everything that changes the computation: epochs, rates, seeds"
    )
    code: dict[Any, Any] = Field(default_factory=dict, description="code_version(...) of the modules that compute it")
    noise_secret_identity: str | None = Field(
        default=None,
        description="public identity (edgeops.noise) of the secret its noise "
        "comes from, never its value; None for mechanisms whose library draws its own secret noise",
    )

    def canonical(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), default=str)

    def key(self) -> str:
        return f"{self.kind}:" + hashlib.sha256(self.canonical().encode()).hexdigest()


# TrainingSpec fields that do not change a DP-SGD run's output: a check's threshold, how often to checkpoint (a resume
# restores the exact state), which mode wires the stages. Every other field (and any field added later) is in the key.
NOT_IN_COMPUTATION = frozenset({"min_accuracy", "checkpoint_every", "mode", "federated"})
# The source files whose code computes a DP-SGD run (their hash is the charge key's code version).
DP_SGD_MODULES = ("training", "models", "synthetic")
DP_SGD_LIBRARIES = ("torch", "opacus")


def training_code_version(spec: PipelineSpec) -> str:
    """The dp_model asset's code version for Dagster: what its computation depends on (data source and split, bounds,
    privacy shares, model, training settings minus NOT_IN_COMPUTATION, the DP-SGD source files). A threshold-only change
    (training.min_accuracy, a target's budgets, monitoring) leaves it unchanged: the asset is not stale, and a
    re-materialization reuses the stored model (the ledger's key decides that) and re-evaluates its checks."""
    payload = {
        "dataset": spec.dataset.model_dump(mode="json"),
        "privacy": spec.privacy.model_dump(mode="json"),
        "mechanism_delta": spec.mechanism_delta,
        "model": spec.model.model_dump(mode="json"),
        "training": spec.training.model_dump(mode="json", exclude=set(NOT_IN_COMPUTATION - {"mode", "federated"})),
        "code": code_version(*DP_SGD_MODULES, "federated", "privacy"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]
