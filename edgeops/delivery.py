"""Host side of delivery: the release bundle of a promoted version, and the staged rollout to a target's fleet.

A promotion writes one signed bundle per target under <state>/bundles/<model>/v<version>/. A rollout encrypts that
version for each device (its X25519 key, read from a declared file or from the agent over TLS), pushes it stage by
stage, and moves on only when every device of the stage reports the new version active and healthy after
`delivery.health_wait_s`. A device that refuses or rolls back halts the rollout; the decision, with each device's
report, is an MLflow run in the pipeline's experiment.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from edgeops import bundle, oms, registry
from edgeops.errors import EdgeopsError
from edgeops.spec import Declaration, FleetDevice, PipelineSpec

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from edgeops.hil.client import AgentClient


class DeliveryError(EdgeopsError):
    pass


def _card_digest(mv: ModelVersion) -> str | None:
    folder = mv.tags.get("edgeops.card_folder")
    card = Path(folder) / "card.json" if folder else None
    return "sha256:" + hashlib.sha256(card.read_bytes()).hexdigest() if card and card.exists() else None


def public_range(spec: PipelineSpec) -> tuple[float, float]:
    """One (low, high) covering every feature, from public declarations only: smoke inputs must not come from data."""
    declared = spec.dataset.feature_bounds
    if isinstance(declared, dict):
        lows, highs = zip(*declared.values(), strict=False)
        return float(min(lows)), float(max(highs))
    # the dataset declares feature_bounds or a value_range (its validator); both are (low, high)
    bounds = cast("tuple[float, float]", declared or spec.dataset.value_range)
    return cast("tuple[float, float]", tuple(float(v) for v in bounds))


def bundle_inputs(declaration: Declaration, target: str, mv: ModelVersion) -> dict[str, Any]:
    """Everything `bundle.build` needs except the artifact and the keys."""
    from edgeops.compression.build import DEFAULT_PARITY

    spec = declaration.spec
    target_spec = spec.target(target)
    return {
        "pipeline": spec.name,
        "model": mv.name,
        "version": int(mv.version),
        "target": target,
        "runtime": target_spec.runtime,
        "card_digest": _card_digest(mv),
        "feature_bounds": public_range(spec),
        "parity_relative": target_spec.parity_tolerance or DEFAULT_PARITY[target_spec.precision],
        "max_latency_ms": target_spec.budgets.max_latency_p95_ms,
        "min_agent_version": spec.delivery.min_agent_version,
        "smoke_rows": spec.delivery.smoke_rows,
        "n_features": spec.dataset.n_features or len(spec.dataset.features or []) or None,
    }


def bundle_folder(home: Path, model: str, version: int | str) -> Path:
    return home / "bundles" / model / f"v{int(version)}"


def write_release_bundle(
    client: MlflowClient,
    declaration: Declaration,
    target: str,
    version: int | str,
    home: Path,
    *,
    key_file: str | None = None,
    evidence_folder: Path | None = None,
) -> Path:
    """The signed, unencrypted bundle of one registered version (written atomically; kept with the release). With the
    release's evidence folder, the manifest also carries its in-toto attestation and CycloneDX ML-BOM."""
    from edgeops.signing import signing_key

    name = registry.registered_name(declaration.spec.name, target)
    mv = registry.model_version(client, name, str(version))
    record = registry.artifact_record(client, mv)
    signature = oms_signature(client, mv, Path(record.artifact_path), home)
    artifact = Path(record.artifact_path).read_bytes()
    blob = bundle.build(
        artifact,
        signing_key=signing_key(home, key_file),
        recipient=None,
        **bundle_inputs(declaration, target, mv),
        oms_signature=signature.read_text(),
        oms_public_key=oms.public_key_pem(home),
        evidence=_bundle_evidence(evidence_folder) if evidence_folder else None,
    )
    folder = bundle_folder(home, name, version)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{target}.bundle"
    temporary = path.with_suffix(".part")
    temporary.write_bytes(blob)
    os.replace(temporary, path)
    return path


def _bundle_evidence(folder: Path) -> dict[str, Any]:
    from edgeops.attest import ATTESTATION_FILE

    return {
        "attestation": json.loads((folder / ATTESTATION_FILE).read_text()),
        "mlbom": json.loads((folder / "mlbom.cdx.json").read_text()),
    }


def oms_signature(client: MlflowClient, mv: ModelVersion, artifact_path: Path, home: Path) -> Path:
    """The OMS signature logged beside a version's artifact at registration (model/<file>.sig), checked against the
    artifact now; a version registered before signatures existed is signed here. Raises OmsError when the artifact no
    longer matches its signature (changed after signing) or the signature is another key's: no bundle, no release."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    file = mv.tags.get("edgeops.artifact_file", "model.onnx") + oms.SIGNATURE_SUFFIX
    try:
        path = Path(
            download_artifacts(
                artifact_uri=f"{mv.source}/{file}", dst_path=str(artifact_path.parent), tracking_uri=client.tracking_uri
            )
        )
    except (MlflowException, OSError):
        path = oms.sign(artifact_path, artifact_path.with_name(file), home)
    oms.verify(artifact_path, path, oms.public_key_pem(home), f"{mv.name} v{mv.version} artifact")
    return path


def reencrypt_for(blob: bytes, home: Path, recipient: X25519PublicKey, key_file: str | None = None) -> bytes:
    """The same signed release, re-signed with its payload encrypted for one device."""
    from edgeops.signing import load_public, public_key_path, signing_key

    key = signing_key(home, key_file)
    trusted = (
        load_public(public_key_path(home).read_bytes(), str(public_key_path(home)))
        if public_key_path(home).exists()
        else key.public_key()
    )
    verified = bundle.verify(blob, trusted)
    return bundle.seal(verified.manifest, verified.artifact, key, recipient)


# ---------------------------------------------------------------- fleet
def fleet_client(
    declaration: Declaration, member: FleetDevice, timeout_s: float = 30.0, retries: int = 2
) -> AgentClient:
    from edgeops.hil.client import client_for

    token = os.environ.get(member.token_env)
    if not token:
        raise DeliveryError(f"delivery.fleet {member.name!r}: env var {member.token_env} (its bearer token) is not set")
    return client_for(member, token, declaration.root, retries=retries, timeout_s=timeout_s)


def device_key(declaration: Declaration, member: FleetDevice, agent: AgentClient) -> X25519PublicKey:
    """The device's X25519 key: the declared file (checked against what the agent reports) or the agent's word over
    TLS."""
    identity = agent.identity()
    if identity["target"] != member.target:
        raise DeliveryError(
            f"device {member.name!r} runs target {identity['target']!r}; the declaration says {member.target!r}"
        )
    reported = bundle.load_device_public(identity["encryption_public_key"], f"device {member.name!r} identity")
    if member.encryption_key:
        path = declaration.resolve(member.encryption_key)
        declared = bundle.load_device_public(path.read_bytes(), str(path))
        if bundle.device_fingerprint(declared) != bundle.device_fingerprint(reported):
            raise DeliveryError(
                f"device {member.name!r} reports key {bundle.device_fingerprint(reported)}, {path} holds "
                f"{bundle.device_fingerprint(declared)}: refusing to encrypt for an unexpected key"
            )
        return declared
    return reported


def plan_stages(declaration: Declaration, target: str) -> list[list[str]]:
    """Device names per stage, in order; devices no stage reached form a last stage (the rest)."""
    members = [m.name for m in declaration.spec.delivery.fleet if m.target == target]
    done: list[str] = []
    stages = []
    for stage in declaration.spec.delivery.stages:
        if stage.devices is not None:
            chosen = [d for d in stage.devices if d in members and d not in done]
        else:
            chosen = [d for d in members if d not in done][
                : max(
                    0, math.ceil(cast(float, stage.fraction) * len(members)) - len(done)
                )  # a stage without devices has a fraction
            ]
        if chosen:
            stages.append(chosen)
            done += chosen
    rest = [d for d in members if d not in done]
    if rest:
        stages.append(rest)
    return stages


def _healthy(report: dict[str, Any], version: int) -> tuple[bool, str]:
    if report.get("active_version") != version:
        last = report.get("last_event") or {}
        return (
            False,
            f"active version {report.get('active_version')} (last event: {last.get('event')} {last.get('detail', '')})",
        )
    return True, "active and healthy" + (" (still in probation)" if report.get("in_probation") else "")


def rollout(
    client: MlflowClient,
    declaration: Declaration,
    target: str,
    home: Path,
    *,
    version: int | str | None = None,
    key_file: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Deliver a released version to the target's fleet, stage by stage (see the module docstring)."""
    spec = declaration.spec
    name = registry.registered_name(spec.name, target)
    version = str(version or registry.alias_version(client, name, registry.PRODUCTION) or "")
    if not version:
        raise DeliveryError(f"{name} has no production version to roll out; promote one first")
    path = bundle_folder(home, name, version) / f"{target}.bundle"
    if not path.exists():
        path = write_release_bundle(client, declaration, target, version, home, key_file=key_file)
    release_blob = path.read_bytes()
    members = {m.name: m for m in spec.delivery.fleet if m.target == target}
    if not members:
        raise DeliveryError(f"delivery.fleet declares no device for target {target!r}")
    reports: list[dict[str, Any]] = []
    halted = None
    stages = plan_stages(declaration, target)
    for number, stage in enumerate(stages, start=1):
        for device in stage:
            member = members[device]
            row: dict[str, Any] = {"stage": number, "device": device}
            try:
                agent = fleet_client(declaration, member)
                blob = (
                    reencrypt_for(release_blob, home, device_key(declaration, member, agent), key_file)
                    if spec.delivery.encrypt
                    else release_blob
                )
                row["install"] = agent.install(blob)
            except EdgeopsError as err:
                row["error"] = str(err)
            reports.append(row)
        sleep(spec.delivery.health_wait_s)
        for row in (r for r in reports if r["stage"] == number):
            if "error" in row:
                row["healthy"], row["detail"] = False, row["error"]
                continue
            try:
                ok, detail = _healthy(fleet_client(declaration, members[row["device"]]).status(), int(version))
            except EdgeopsError as err:
                ok, detail = False, f"status unreadable: {err}"
            row["healthy"], row["detail"] = ok, detail
        failed = [r for r in reports if r["stage"] == number and not r["healthy"]]
        if failed:
            halted = f"stage {number} of {len(stages)}: " + "; ".join(f"{r['device']}: {r['detail']}" for r in failed)
            break
    decision = "halted" if halted else "delivered"
    run_id = registry.record_release_decision(
        client,
        declaration,
        name,
        "rollout",
        version,
        previous=None,
        decision=decision,
        reason=halted or "every stage healthy",
        numbers={"stages": stages, "devices": reports},
        gate_states={},
    )
    result = {
        "model": name,
        "version": version,
        "decision": decision,
        "stages": stages,
        "devices": reports,
        "mlflow_run_id": run_id,
    }
    if halted:
        raise DeliveryError(
            f"{name} v{version} rollout halted at {halted} (recorded in MLflow run {run_id})\n"
            + json.dumps(reports, indent=1, default=str)[:4000]
        )
    return result


def fleet_status(declaration: Declaration, target: str) -> list[dict[str, Any]]:
    rows = []
    for member in (m for m in declaration.spec.delivery.fleet if m.target == target):
        try:
            report = fleet_client(declaration, member, timeout_s=5.0, retries=0).status()
            rows.append(
                {
                    "device": member.name,
                    "reachable": True,
                    "active_version": report.get("active_version"),
                    "in_probation": report.get("in_probation"),
                    "last_event": report.get("last_event"),
                }
            )
        except EdgeopsError as err:
            rows.append({"device": member.name, "reachable": False, "detail": str(err)[:300]})
    return rows
