"""The device side of delivery: install a bundle, serve inference from the active model, roll back on its own.

State lives under the agent's home folder and survives restarts::

    identity/x25519.pem     this device's decryption key (0600)
    identity/receipt_ed25519.pem  the key that signs benchmark receipts (edgeops.hil.receipts; 0600)
    bundles/<version>.bundle bundles as received (still encrypted when they were sent encrypted)
    state.json              which version is active, which one is kept for rollback, recent events

Installing checks everything before anything changes (signature, hashes, decryption, the artifact's OpenSSF model
signature with model-signing's own verifier, target, runtime, agent version, no downgrade), then loads the model and
runs the bundle's smoke test (parity on recorded synthetic inputs, finite
outputs, latency within budget). Only then does the new model become active, atomically: state.json is replaced in
one rename and the in-memory session is swapped under a lock, so a concurrent inference sees the old model or the new
one, never neither. The first `probation` inferences of a new model are watched: one that raises or returns
non-finite outputs rolls the device back to the previous model, and that request is answered by the previous model,
so no client request fails because of a bad update.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeops.bundle import (
    BundleError,
    VerifiedBundle,
    describe,
    device_fingerprint,
    device_private_key,
    npy_from_b64,
    verify,
    version_tuple,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from onnxruntime import InferenceSession

SUPPORTED_RUNTIMES = ("onnxruntime",)
MAX_EVENTS = 50


class BadRequest(ValueError):
    """An inference request the active model cannot take (wrong shape): answered 422, never blamed on the model."""


class UpdateRefused(BundleError):
    """The bundle is well formed but must not be installed here (wrong target, downgrade, failed smoke test)."""


@dataclass
class LoadedModel:
    manifest: dict[str, Any]
    session: InferenceSession
    input_name: str
    artifact: bytes
    inferences: int = 0

    @property
    def version(self) -> int:
        return int(self.manifest["version"])


def _session(artifact: bytes, threads: int) -> InferenceSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(artifact, options, providers=["CPUExecutionProvider"])


def _load(bundle: VerifiedBundle, threads: int) -> LoadedModel:
    session = _session(bundle.artifact, threads)
    return LoadedModel(
        manifest=bundle.manifest, session=session, input_name=session.get_inputs()[0].name, artifact=bundle.artifact
    )


def smoke_test(model: LoadedModel) -> dict[str, Any]:
    """Parity with the outputs the host recorded, finite outputs, and single-row latency within the bundle's budget."""
    smoke = model.manifest["smoke"]
    x, expected = npy_from_b64(smoke["inputs_npy"]), npy_from_b64(smoke["expected_npy"])
    outputs = model.session.run(None, {model.input_name: x})[0]
    if outputs.shape != expected.shape:
        raise UpdateRefused(f"smoke test: output shape {outputs.shape}, the bundle recorded {expected.shape}")
    if not np.isfinite(outputs).all():
        raise UpdateRefused("smoke test: non-finite outputs")
    difference = float(np.max(np.abs(outputs.astype(np.float64) - expected)))
    if difference > smoke["tolerance"]:
        raise UpdateRefused(
            f"smoke test: outputs differ from the recorded ones by {difference:.3g} (tolerance {smoke['tolerance']:g})"
        )
    latencies = []
    for _ in range(3):  # warm-up
        model.session.run(None, {model.input_name: x[:1]})
    for row in range(max(20, len(x))):
        started = time.perf_counter()
        model.session.run(None, {model.input_name: x[row % len(x) : row % len(x) + 1]})
        latencies.append((time.perf_counter() - started) * 1000)
    p95 = float(np.percentile(latencies, 95))
    budget = smoke.get("max_latency_ms")
    if budget is not None and p95 > budget:
        raise UpdateRefused(f"smoke test: latency p95 {p95:.3f} ms over the bundle's budget of {budget:g} ms")
    return {"max_abs_difference": difference, "latency_p95_ms": p95}


class Updater:
    def __init__(
        self,
        home: Path,
        target: str,
        trusted_key: Ed25519PublicKey,
        agent_version: str,
        probation: int = 20,
        threads: int = 1,
    ) -> None:
        self.home, self.target, self.trusted_key = Path(home), target, trusted_key
        self.agent_version, self.probation, self.threads = agent_version, probation, threads
        self.device_key = device_private_key(self.home / "identity")
        import model_signing  # noqa: F401  (bundle.verify checks OMS signatures: import its stack at start, not in the first activation)

        (self.home / "bundles").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # serialises installs and rollbacks; inference reads self._active without it
        self._active: LoadedModel | None = None
        self._previous_manifest: dict[str, Any] | None = None
        self._events: list[dict[str, Any]] = []
        self._restore()

    # -------------------------------------------------------------- identity and state
    @property
    def device_id(self) -> str:
        return device_fingerprint(self.device_key.public_key())

    def _state_path(self) -> Path:
        return self.home / "state.json"

    def _bundle_path(self, version: int) -> Path:
        return self.home / "bundles" / f"{int(version)}.bundle"

    def _write_state(self) -> None:
        state = {
            "target": self.target,
            "active": describe(self._active.manifest) if self._active else None,
            "previous": describe(self._previous_manifest) if self._previous_manifest else None,
            "events": self._events[-MAX_EVENTS:],
        }
        temporary = self._state_path().with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=1))
        os.replace(temporary, self._state_path())  # one rename: the state on disk is the old one or the new one

    def _restore(self) -> None:
        """After a restart: reload the active bundle from disk, verified again (the disk is not trusted either)."""
        if not self._state_path().exists():
            return
        state = json.loads(self._state_path().read_text())
        self._events = state.get("events", [])
        for slot in ("active", "previous"):
            if state.get(slot):
                path = self._bundle_path(state[slot]["version"])
                try:
                    # A bundle activated here before OMS signatures existed stays usable; one that carries a signature
                    # is checked.
                    bundle = verify(path.read_bytes(), self.trusted_key, self.device_key, str(path), require_oms=False)
                except (OSError, BundleError) as err:
                    self._event("restore_failed", state[slot]["version"], str(err))
                    continue
                if slot == "active":
                    self._active = _load(bundle, self.threads)
                else:
                    self._previous_manifest = bundle.manifest

    def _event(self, kind: str, version: int | None, detail: str = "") -> None:
        self._events.append({"at": time.time(), "event": kind, "version": version, "detail": detail[:500]})
        del self._events[:-MAX_EVENTS]

    def status(self) -> dict[str, Any]:
        active = self._active
        failures = [e for e in self._events if e["event"] in {"auto_rollback", "refused"}]
        return {
            "device_id": self.device_id,
            "target": self.target,
            "agent_version": self.agent_version,
            "active": describe(active.manifest) if active else None,
            "active_version": active.version if active else None,
            "in_probation": bool(active and active.inferences < self.probation and self._previous_manifest),
            "previous_version": int(self._previous_manifest["version"]) if self._previous_manifest else None,
            "last_event": self._events[-1] if self._events else None,
            "recent_failures": failures[-5:],
        }

    # -------------------------------------------------------------- install
    def _check_fits(self, manifest: dict[str, Any], allow_downgrade: bool) -> None:
        if manifest["target"] != self.target:
            raise UpdateRefused(f"bundle is for target {manifest['target']!r}; this device runs {self.target!r}")
        if manifest["runtime"] not in SUPPORTED_RUNTIMES:
            raise UpdateRefused(
                f"bundle needs runtime {manifest['runtime']!r}; this agent has {', '.join(SUPPORTED_RUNTIMES)}"
            )
        if version_tuple(manifest["min_agent_version"]) > version_tuple(self.agent_version):
            raise UpdateRefused(
                f"bundle needs agent {manifest['min_agent_version']} or newer; this agent is {self.agent_version}"
            )
        active = self._active
        if active and manifest["model"] != active.manifest["model"]:
            raise UpdateRefused(
                f"bundle is model {manifest['model']!r}; this device serves {active.manifest['model']!r}"
            )
        if active and int(manifest["version"]) == active.version:
            raise UpdateRefused(f"version {active.version} is already active")
        if active and int(manifest["version"]) < active.version and not allow_downgrade:
            raise UpdateRefused(
                f"downgrade refused: version {manifest['version']} is older than the active version {active.version} "
                "(use the rollback command to go back)"
            )

    def install(self, blob: bytes, allow_downgrade: bool = False) -> dict[str, Any]:
        started = time.perf_counter()
        with self._lock:
            try:
                bundle = verify(blob, self.trusted_key, self.device_key, "bundle")
                self._check_fits(bundle.manifest, allow_downgrade)
                candidate = _load(bundle, self.threads)
                smoke = smoke_test(candidate)
            except BundleError as err:
                self._event("refused", None, str(err))
                self._write_state()
                raise
            except Exception as err:  # the runtime could not load or run the artifact
                self._event("refused", None, f"{type(err).__name__}: {err}")
                self._write_state()
                raise UpdateRefused(
                    f"the runtime could not load or run the model: {type(err).__name__}: {err}"
                ) from None
            path = self._bundle_path(candidate.version)
            temporary = path.with_suffix(".part")
            temporary.write_bytes(blob)
            os.replace(temporary, path)
            previous = self._active
            self._previous_manifest = previous.manifest if previous else None
            self._active = candidate  # the swap: one reference assignment
            self._event("activated", candidate.version, f"smoke {smoke}")
            self._write_state()
            self._prune_bundles()
        return {
            "activated": candidate.version,
            "previous": previous.version if previous else None,
            "smoke": smoke,
            "seconds": time.perf_counter() - started,
        }

    def _prune_bundles(self) -> None:
        kept = (self._active.manifest if self._active else None, self._previous_manifest)
        keep_names = {f"{int(m['version'])}.bundle" for m in kept if m}
        for path in (self.home / "bundles").glob("*.bundle"):
            if path.name not in keep_names:
                path.unlink()

    # -------------------------------------------------------------- rollback
    def rollback(self, reason: str, automatic: bool = False) -> dict[str, Any]:
        with self._lock:
            return self._rollback_locked(reason, automatic)

    def _rollback_locked(self, reason: str, automatic: bool) -> dict[str, Any]:
        if self._previous_manifest is None:
            raise UpdateRefused("no previous version kept on this device to roll back to")
        failed = self._active
        path = self._bundle_path(self._previous_manifest["version"])
        bundle = verify(
            path.read_bytes(), self.trusted_key, self.device_key, str(path), require_oms=False
        )  # was active here before
        restored = _load(bundle, self.threads)
        restored.inferences = self.probation  # it was trusted before: no probation
        self._active, self._previous_manifest = restored, None
        self._event(
            "auto_rollback" if automatic else "rollback",
            restored.version,
            f"from {failed.version if failed else None}: {reason}",
        )
        self._write_state()
        if failed is not None:
            self._bundle_path(failed.version).unlink(missing_ok=True)
        return {"rolled_back_to": restored.version, "from": failed.version if failed else None, "reason": reason}

    def active_artifact(self) -> tuple[bytes, int]:
        model = self._active
        if model is None:
            raise UpdateRefused("no model is active on this device yet")
        return model.artifact, model.version

    # -------------------------------------------------------------- inference
    def infer(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        model = self._active
        if model is None:
            raise UpdateRefused("no model is active on this device yet")
        expected = model.manifest["io"]["inputs"][0]["shape"][1:]
        if x.ndim != len(expected) + 1 or any(
            want is not None and want != got for want, got in zip(expected, x.shape[1:], strict=False)
        ):
            # The request's fault, not the model's: refused before it could count against the new model.
            raise BadRequest(
                f"inputs of shape {list(x.shape)}; the active model takes [N, {', '.join(str(d) for d in expected)}]"
            )
        watched = model.inferences < self.probation and self._previous_manifest is not None
        model.inferences += 1
        try:
            outputs = model.session.run(None, {model.input_name: x})[0]
            if not np.isfinite(outputs).all():
                raise ValueError("non-finite outputs")
            return outputs, model.version
        except Exception as err:
            if not watched:
                raise
            with self._lock:
                if self._active is model:  # another request may have rolled back already
                    self._rollback_locked(
                        f"inference {model.inferences} of {self.probation} in probation failed: {err}", automatic=True
                    )
            fallback = self._active
            if fallback is None:
                raise UpdateRefused(
                    f"no model is active on this device after the rollback from version {model.version}"
                ) from err
            return fallback.session.run(None, {fallback.input_name: x})[0], fallback.version
