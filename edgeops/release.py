"""Release governance: gated promotion of `<pipeline>-<target>` versions, rollback, status, and lineage from MLflow.

A version becomes `production` only when
1. every check recorded on the version passed (compression budgets, benchmark budgets on the declared device),
2. its card verifies and its latest review approves it,
3. it does not regress against the current production version beyond the declared tolerances, measured side by
   side on the same device now (not taken from stale numbers).
Each decision (what, who, why, the numbers) is an MLflow run in the pipeline's experiment and an entry in the card's
history. The alias moves last, under a per-model lock: a refused, failed or racing promotion leaves it untouched.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from edgeops.errors import EdgeopsError, ReleaseError
from edgeops.lineage import CARD_FOLDER_TAG
from edgeops.noise import NOISE_TAG, NOT_PRIVATE, TEST_SEED_ENV
from edgeops.records import BatchLatency, BenchmarkRecord, ReleaseOutcome
from edgeops.registry import (
    HISTORY_TAG,
    PRODUCTION,
    alias_version,
    artifact_record,
    model_version,
    record_release_decision,
    registered_name,
)
from edgeops.spec import Declaration

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from edgeops.records import DatasetRef


@contextmanager
def model_lock(home: Path, name: str) -> Iterator[None]:
    """One promotion or rollback per registered model at a time (also across processes on this host)."""
    path = home / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _latest_version(client: MlflowClient, name: str) -> str | None:
    versions = client.search_model_versions(f"name = '{name}'")
    return (
        str(max(int(v.version) for v in versions)) if versions else None
    )  # versions are ints in some stores, strings in others


def gates(
    client: MlflowClient, declaration: Declaration, target: str, version: str, home: Path, cards_dir: Path
) -> dict[str, tuple[bool, str]]:
    """The state of every gate except the side-by-side comparison (which needs the device)."""
    from edgeops.cards.store import review_status, verify_card

    name = registered_name(declaration.spec.name, target)
    mv = model_version(client, name, version)
    tags = mv.tags
    result: dict[str, tuple[bool, str]] = {}
    checks = {k.removeprefix("edgeops.check."): v for k, v in tags.items() if k.startswith("edgeops.check.")}
    # A not-measured check is not a pass: it keeps the gate shut unless the target names it in accept_not_measured.
    accepted = set(declaration.spec.target(target).accept_not_measured)
    waived = sorted(k for k in checks if checks[k] == "not_measured" and f"{k}_budget" in accepted)
    problems = [
        f"{k}={checks[k]}"
        + (
            f" (add {k}_budget to the target's accept_not_measured to release without it)"
            if checks[k] == "not_measured"
            else ""
        )
        for k in sorted(checks)
        if checks[k] != "passed" and k not in waived
    ]
    problems += [
        f"no {needed} benchmark recorded on this version (run hil_benchmark)"
        for needed in ("latency", "memory")
        if needed not in checks
    ]
    passed = ", ".join(sorted(k for k in checks if checks[k] == "passed"))
    result["checks"] = (
        not problems,
        "not passed: " + ", ".join(problems)
        if problems
        else f"all passed: {passed}"
        + (f"; not measured, accepted by the target: {', '.join(waived)}" if waived else ""),
    )
    result["noise"] = noise_gate(tags.get(NOISE_TAG))
    card_folder = tags.get(CARD_FOLDER_TAG)
    if not card_folder or not Path(card_folder).exists():
        result["card"] = (False, "no card for this version (run model_card)")
        result["review"] = (False, "no card to review")
        return result
    problems = verify_card(card_folder, home, client)
    result["card"] = (
        not problems,
        "card verifies" if not problems else "card does not verify: " + "; ".join(problems)[:400],
    )
    status = review_status(Path(card_folder))
    result["review"] = (
        status == "approved",
        f"review {status}" + ("" if status == "approved" else ": run edgeops card review"),
    )
    return result


def noise_gate(statement: str | None) -> tuple[bool, str]:
    """Only a model whose every DP step drew secret noise is promotable; deterministic (test-mode) noise never is."""
    if statement is None:
        return False, f"no {NOISE_TAG} tag: trained before secret noise (edgeops.noise); retrain before release"
    if statement.startswith(NOT_PRIVATE):
        return False, f"{NOT_PRIVATE} (the test switch {TEST_SEED_ENV}): never released"
    if statement != "secret":
        return False, f"noise {statement}: retrain before release"
    return True, "every DP step drew secret noise"


def side_by_side(
    declaration: Declaration,
    target: str,
    candidate: ModelVersion,
    production: ModelVersion,
    client: MlflowClient,
    dataset: DatasetRef,
) -> tuple[bool, str, dict[str, Any]]:
    """Benchmark both artifacts on the declared device now, alternately, and compare within the tolerances."""
    from edgeops.hil.bench import benchmark_target

    spec = declaration.spec
    target_spec = spec.target(target)
    tolerances = spec.release
    numbers: dict[str, Any] = {}
    for label, mv in (("candidate", candidate), ("production", production)):
        record = artifact_record(client, mv)
        numbers[label] = record
    rounds = 4
    measured: dict[str, list[BenchmarkRecord]] = {"candidate": [], "production": []}
    for _ in range(rounds):  # A B A B ...: both see the same device conditions
        for label in ("candidate", "production"):
            measured[label].append(
                benchmark_target(spec, target_spec, numbers[label], dataset, max_seconds=0.5, root=declaration.root)
            )
    unmeasured = [
        m.reason if not m.measured else "no latency at batch 1 (declare batch size 1)"
        for runs in measured.values()
        for m in runs
        if not m.measured or m.batch1 is None or m.batch1.p95_ms is None
    ]
    if unmeasured:
        return False, f"side-by-side comparison not measured: {unmeasured[0]}", {}

    def summary(runs: list[BenchmarkRecord]) -> dict[str, Any]:
        p95s = sorted(cast(float, cast(BatchLatency, r.batch1).p95_ms) for r in runs)
        return {
            "accuracy": runs[0].accuracy_on_device,
            "latency_p95_ms": (p95s[len(p95s) // 2 - 1] + p95s[len(p95s) // 2]) / 2,
            "latency_p95_rounds": p95s,
            "memory_kb": sorted(cast(int, r.peak_rss_beyond_baseline_kb) for r in runs)[len(runs) // 2],
        }

    cand, prod = summary(measured["candidate"]), summary(measured["production"])
    accuracy_drop = 100 * (prod["accuracy"] - cand["accuracy"])
    latency_growth = 100 * (cand["latency_p95_ms"] / prod["latency_p95_ms"] - 1)
    memory_growth = 100 * (cand["memory_kb"] / max(prod["memory_kb"], 1) - 1)
    # A latency regression must be both larger than the tolerance (medians) and real: every candidate round slower than
    # every production round. With 4 interleaved rounds each, two identical artifacts separate by chance 1 time in 70.
    separated = min(cand["latency_p95_rounds"]) > max(prod["latency_p95_rounds"])
    problems = []
    if accuracy_drop > tolerances.max_accuracy_regression_points:
        problems.append(
            f"accuracy {accuracy_drop:.2f} points below production "
            f"(tolerance {tolerances.max_accuracy_regression_points:g})"
        )
    if latency_growth > tolerances.max_latency_regression_pct and separated:
        problems.append(
            f"latency p95 +{latency_growth:.1f}% in every one of {rounds} interleaved rounds "
            f"(tolerance {tolerances.max_latency_regression_pct:g}%)"
        )
    if memory_growth > tolerances.max_memory_regression_pct:
        problems.append(f"memory +{memory_growth:.1f}% (tolerance {tolerances.max_memory_regression_pct:g}%)")
    numbers = {
        "candidate": cand,
        "production": prod,
        "accuracy_drop_points": accuracy_drop,
        "latency_growth_pct": latency_growth,
        "memory_growth_pct": memory_growth,
    }
    text = "no regression against production" if not problems else "regresses: " + "; ".join(problems)
    return not problems, text, numbers


def _append_card_history(client: MlflowClient, name: str, version: str, home: Path, entry: dict[str, Any]) -> None:
    from edgeops.cards.store import append_history

    folder = model_version(client, name, version).tags.get(CARD_FOLDER_TAG)
    if folder and Path(folder).exists():
        append_history(Path(folder), home, entry)


def promote(
    client: MlflowClient,
    declaration: Declaration,
    target: str,
    home: Path,
    cards_dir: Path,
    dataset: DatasetRef,
    *,
    version: str | None = None,
    who: str | None = None,
) -> ReleaseOutcome:
    name = registered_name(declaration.spec.name, target)
    with model_lock(home, name):
        version = str(version or _latest_version(client, name) or "")
        if not version:
            raise ReleaseError(f"{name} has no registered version; run the pipeline first")
        candidate = model_version(client, name, version)
        if candidate.tags.get("edgeops.target") not in (None, target) or not candidate.name.startswith(
            f"{declaration.spec.name}-"
        ):
            raise ReleaseError(f"{name} v{version} belongs to another pipeline or target")
        current = alias_version(client, name, PRODUCTION)
        if current == version:
            raise ReleaseError(f"{name} v{version} is already in production")
        states = gates(client, declaration, target, version, home, cards_dir)
        numbers: dict[str, Any] = {}
        if current is not None and all(ok for ok, _ in states.values()):
            production = model_version(client, name, current)
            ok, text, numbers = side_by_side(declaration, target, candidate, production, client, dataset)
            states["no_regression"] = (ok, text)
        elif current is None:
            states["no_regression"] = (True, "no production version yet: nothing to regress against")
        refused = {k: text for k, (ok, text) in states.items() if not ok}
        decision = "refused" if refused else "promoted"
        reason = "; ".join(f"{k}: {v}" for k, v in refused.items()) if refused else "every gate passed"
        gate_states = {k: {"passed": ok, "detail": text} for k, (ok, text) in states.items()}
        run_id = record_release_decision(
            client,
            declaration,
            name,
            "promote",
            version,
            previous=current,
            decision=decision,
            reason=reason,
            numbers=numbers,
            gate_states=gate_states,
        )
        if refused:
            raise ReleaseError(
                f"{name} v{version} not promoted (decision recorded in MLflow run {run_id}):\n  "
                + "\n  ".join(f"{k}: {v}" for k, v in refused.items())
            )
        from edgeops import evidence
        from edgeops.delivery import write_release_bundle

        try:  # before the alias: no release without its evidence (OMS, attestation, ML-BOM, receipt) and its bundle
            evidence_path = evidence.write(client, declaration, target, version, home)
            bundle_path = write_release_bundle(
                client, declaration, target, version, home, evidence_folder=evidence_path
            )
        except EdgeopsError as err:
            client.set_tag(run_id, "edgeops.release.decision", "refused")
            client.set_tag(run_id, "edgeops.release.reason", f"release evidence: {err}"[:5000])
            raise ReleaseError(
                f"{name} v{version} not promoted (decision recorded in MLflow run {run_id}):\n  release evidence: {err}"
            ) from None
        client.log_artifact(run_id, str(bundle_path), "release")
        client.log_artifacts(
            run_id, str(evidence_path), "release/evidence"
        )  # the ML-BOM and attestation, attached to the release
        history = json.loads(client.get_registered_model(name).tags.get(HISTORY_TAG, "[]"))
        history.append({"version": version, "at": time.time(), "action": "promote", "run": run_id})
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-50:]))
        _append_card_history(
            client,
            name,
            version,
            home,
            {
                "kind": "release",
                "action": "promote",
                "target": target,
                "version": version,
                "previous": current or "",
                "reviewer": who or getpass.getuser(),
                "mlflow_run": run_id,
            },
        )
        client.set_registered_model_alias(name, PRODUCTION, version)  # last: the commit point
        return ReleaseOutcome(
            model=name,
            version=version,
            previous=current,
            decision="promoted",
            mlflow_run_id=run_id,
            numbers=numbers,
            bundle=str(bundle_path),
        )


def rollback(
    client: MlflowClient,
    declaration: Declaration,
    target: str,
    home: Path,
    reason: str,
    *,
    to: str | None = None,
    who: str | None = None,
) -> ReleaseOutcome:
    if not reason or not reason.strip():
        raise ReleaseError("--reason is required: a rollback records why")
    name = registered_name(declaration.spec.name, target)
    with model_lock(home, name):
        current = alias_version(client, name, PRODUCTION)
        if current is None:
            raise ReleaseError(f"{name} has no production version to roll back")
        history = json.loads(client.get_registered_model(name).tags.get(HISTORY_TAG, "[]"))
        earlier = [h["version"] for h in history if h["version"] != current]
        to = str(to) if to else (earlier[-1] if earlier else None)
        if to is None:
            raise ReleaseError(f"{name}: no earlier production version to roll back to (current v{current})")
        model_version(client, name, to)
        run_id = record_release_decision(
            client,
            declaration,
            name,
            "rollback",
            to,
            previous=current,
            decision="rolled back",
            reason=reason,
            numbers={},
            gate_states={},
        )
        history.append({"version": to, "at": time.time(), "action": "rollback", "run": run_id, "reason": reason[:500]})
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-50:]))
        _append_card_history(
            client,
            name,
            current,
            home,
            {
                "kind": "release",
                "action": "rollback",
                "target": target,
                "version": to,
                "previous": current,
                "reviewer": who or getpass.getuser(),
                "reason": reason,
                "mlflow_run": run_id,
            },
        )
        client.set_registered_model_alias(name, PRODUCTION, to)
        return ReleaseOutcome(model=name, version=to, previous=current, decision="rolled back", mlflow_run_id=run_id)


def status(client: MlflowClient, declaration: Declaration, home: Path, cards_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for target in declaration.spec.targets:
        name = registered_name(declaration.spec.name, target.name)
        latest = _latest_version(client, name)
        row: dict[str, Any] = {
            "target": target.name,
            "model": name,
            "production": alias_version(client, name, PRODUCTION),
            "candidate": latest,
            "gates": {},
        }
        if declaration.spec.delivery.fleet:
            from edgeops.delivery import fleet_status

            row["devices"] = fleet_status(declaration, target.name)
        if latest and latest != row["production"]:
            row["gates"] = {
                k: {"passed": ok, "detail": text}
                for k, (ok, text) in gates(client, declaration, target.name, latest, home, cards_dir).items()
            }
        rows.append(row)
    return rows


def lineage(client: MlflowClient, ref: str) -> dict[str, Any]:
    """The lineage of a model version (name/version or models:/name/version), an artifact sha256, or a card id
    (pipeline/version), as JSON: see edgeops/trace.py."""
    from edgeops.trace import trace

    return trace(client, ref).model_dump()
