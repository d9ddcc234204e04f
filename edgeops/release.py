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
from contextlib import contextmanager
from pathlib import Path

from edgeops.errors import EdgeopsError
from edgeops.registry import registered_name
from edgeops.spec import Declaration

PRODUCTION, CANDIDATE = "production", "candidate"
HISTORY_TAG = "edgeops.production_history"


class ReleaseError(EdgeopsError):
    pass


@contextmanager
def model_lock(home: Path, name: str):
    """One promotion or rollback per registered model at a time (also across processes on this host)."""
    path = home / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _alias_version(client, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception:
        return None


def _latest_version(client, name: str) -> str | None:
    versions = client.search_model_versions(f"name = '{name}'")
    return str(max(int(v.version) for v in versions)) if versions else None  # versions are ints in some stores, strings in others


def _version(client, name: str, version: str):
    try:
        return client.get_model_version(name, str(version))
    except Exception:
        raise ReleaseError(f"{name} has no version {version}") from None


def gates(client, declaration: Declaration, target: str, version: str, home: Path, cards_dir: Path) -> dict[str, tuple[bool, str]]:
    """The state of every gate except the side-by-side comparison (which needs the device)."""
    from edgeops.cards.store import review_status, verify_card

    name = registered_name(declaration.spec.name, target)
    mv = _version(client, name, version)
    tags = mv.tags
    result: dict[str, tuple[bool, str]] = {}
    checks = {k.removeprefix("edgeops.check."): v for k, v in tags.items() if k.startswith("edgeops.check.")}
    problems = [f"{k}={checks[k]}" for k in sorted(checks) if checks[k] != "passed"]
    problems += [f"no {needed} benchmark recorded on this version (run hil_benchmark)" for needed in ("latency", "memory") if needed not in checks]
    result["checks"] = (not problems, "not passed: " + ", ".join(problems) if problems else "all passed: " + ", ".join(sorted(checks)))
    card_folder = tags.get("edgeops.card_folder")
    if not card_folder or not Path(card_folder).exists():
        result["card"] = (False, "no card for this version (run model_card)")
        result["review"] = (False, "no card to review")
        return result
    problems = verify_card(card_folder, home, client)
    result["card"] = (not problems, "card verifies" if not problems else "card does not verify: " + "; ".join(problems)[:400])
    status = review_status(Path(card_folder))
    result["review"] = (status == "approved", f"review {status}" + ("" if status == "approved" else ": run edgeops card review"))
    return result


def side_by_side(declaration: Declaration, target: str, candidate, production, client, dataset: dict) -> tuple[bool, str, dict]:
    """Benchmark both artifacts on the declared device now, alternately, and compare within the tolerances."""
    from edgeops.hil.bench import benchmark_target

    spec = declaration.spec
    target_spec = spec.target(target)
    tolerances = spec.release
    numbers = {}
    for label, mv in (("candidate", candidate), ("production", production)):
        record = _artifact_record(client, mv)
        numbers[label] = record
    rounds = 4
    measured = {"candidate": [], "production": []}
    for _ in range(rounds):  # A B A B ...: both see the same device conditions
        for label in ("candidate", "production"):
            measured[label].append(benchmark_target(spec, target_spec, numbers[label], dataset, max_seconds=0.5))
    if not all(m.get("measured") for runs in measured.values() for m in runs):
        reason = next(m["reason"] for runs in measured.values() for m in runs if not m.get("measured"))
        return False, f"side-by-side comparison not measured: {reason}", {}

    def summary(runs):
        p95s = sorted(r["latency"]["1"]["p95_ms"] for r in runs)
        return {"accuracy": runs[0]["accuracy_on_device"], "latency_p95_ms": (p95s[len(p95s) // 2 - 1] + p95s[len(p95s) // 2]) / 2,
                "latency_p95_rounds": p95s, "memory_kb": sorted(r["peak_rss_beyond_baseline_kb"] for r in runs)[len(runs) // 2]}

    cand, prod = summary(measured["candidate"]), summary(measured["production"])
    accuracy_drop = 100 * (prod["accuracy"] - cand["accuracy"])
    latency_growth = 100 * (cand["latency_p95_ms"] / prod["latency_p95_ms"] - 1)
    memory_growth = 100 * (cand["memory_kb"] / max(prod["memory_kb"], 1) - 1)
    # A latency regression must be both larger than the tolerance (medians) and real: every candidate round slower than
    # every production round. With 4 interleaved rounds each, two identical artifacts separate by chance 1 time in 70.
    separated = min(cand["latency_p95_rounds"]) > max(prod["latency_p95_rounds"])
    problems = []
    if accuracy_drop > tolerances.max_accuracy_regression_points:
        problems.append(f"accuracy {accuracy_drop:.2f} points below production (tolerance {tolerances.max_accuracy_regression_points:g})")
    if latency_growth > tolerances.max_latency_regression_pct and separated:
        problems.append(f"latency p95 +{latency_growth:.1f}% in every one of {rounds} interleaved rounds (tolerance {tolerances.max_latency_regression_pct:g}%)")
    if memory_growth > tolerances.max_memory_regression_pct:
        problems.append(f"memory +{memory_growth:.1f}% (tolerance {tolerances.max_memory_regression_pct:g}%)")
    numbers = {"candidate": cand, "production": prod, "accuracy_drop_points": accuracy_drop, "latency_growth_pct": latency_growth,
               "memory_growth_pct": memory_growth}
    text = "no regression against production" if not problems else "regresses: " + "; ".join(problems)
    return not problems, text, numbers


def _artifact_record(client, mv) -> dict:
    """Download a version's artifact from MLflow and check its sha256 against the version's tag."""
    import hashlib
    import tempfile

    from mlflow.artifacts import download_artifacts

    folder = Path(tempfile.mkdtemp(prefix="edgeops-release-"))
    local = Path(download_artifacts(artifact_uri=f"{mv.source}/{mv.tags.get('edgeops.artifact_file', 'model.onnx')}", dst_path=str(folder), tracking_uri=client.tracking_uri))
    sha = hashlib.sha256(local.read_bytes()).hexdigest()
    if sha != mv.tags.get("edgeops.sha256"):
        raise ReleaseError(f"{mv.name} v{mv.version}: artifact in MLflow has sha256 {sha[:16]}, the version records {mv.tags.get('edgeops.sha256', '')[:16]}")
    return {"artifact_path": str(local), "sha256": sha, "macs": None}


def _record_decision(client, declaration: Declaration, name: str, action: str, version: str, previous: str | None, decision: str,
                     reason: str, numbers: dict, gate_states: dict) -> str:
    experiment = client.get_experiment_by_name(declaration.spec.name)
    if experiment is None:  # the versions being released were logged there: its absence means the wrong tracking server
        raise ReleaseError(f"MLflow at {client.tracking_uri} has no experiment {declaration.spec.name!r}")
    run = client.create_run(experiment.experiment_id, run_name=f"release:{action}", tags={
        "edgeops.stage": "release", "edgeops.release.action": action, "edgeops.release.model": name, "edgeops.release.version": version,
        "edgeops.release.previous": previous or "", "edgeops.release.decision": decision, "edgeops.release.who": getpass.getuser(),
        "edgeops.release.reason": reason[:5000]})
    client.log_text(run.info.run_id, json.dumps({"gates": gate_states, "numbers": numbers}, indent=1, default=str), "release/decision.json")
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def _append_card_history(client, name: str, version: str, home: Path, entry: dict) -> None:
    from edgeops.cards.store import append_history

    folder = _version(client, name, version).tags.get("edgeops.card_folder")
    if folder and Path(folder).exists():
        append_history(Path(folder), home, entry)


def promote(client, declaration: Declaration, target: str, home: Path, cards_dir: Path, dataset: dict, version: str | None = None,
            who: str | None = None) -> dict:
    name = registered_name(declaration.spec.name, target)
    with model_lock(home, name):
        version = str(version or _latest_version(client, name) or "")
        if not version:
            raise ReleaseError(f"{name} has no registered version; run the pipeline first")
        candidate = _version(client, name, version)
        if candidate.tags.get("edgeops.target") not in (None, target) or not candidate.name.startswith(f"{declaration.spec.name}-"):
            raise ReleaseError(f"{name} v{version} belongs to another pipeline or target")
        current = _alias_version(client, name, PRODUCTION)
        if current == version:
            raise ReleaseError(f"{name} v{version} is already in production")
        states = gates(client, declaration, target, version, home, cards_dir)
        numbers: dict = {}
        if current is not None and all(ok for ok, _ in states.values()):
            ok, text, numbers = side_by_side(declaration, target, candidate, _version(client, name, current), client, dataset)
            states["no_regression"] = (ok, text)
        elif current is None:
            states["no_regression"] = (True, "no production version yet: nothing to regress against")
        refused = {k: text for k, (ok, text) in states.items() if not ok}
        decision = "refused" if refused else "promoted"
        reason = "; ".join(f"{k}: {v}" for k, v in refused.items()) if refused else "every gate passed"
        run_id = _record_decision(client, declaration, name, "promote", version, current, decision, reason, numbers,
                                  {k: {"passed": ok, "detail": text} for k, (ok, text) in states.items()})
        if refused:
            raise ReleaseError(f"{name} v{version} not promoted (decision recorded in MLflow run {run_id}):\n  "
                               + "\n  ".join(f"{k}: {v}" for k, v in refused.items()))
        from edgeops.delivery import write_release_bundle

        bundle_path = write_release_bundle(client, declaration, target, version, home)  # before the alias: no release without its bundle
        client.log_artifact(run_id, str(bundle_path), "release")
        history = json.loads(client.get_registered_model(name).tags.get(HISTORY_TAG, "[]"))
        history.append({"version": version, "at": time.time(), "action": "promote", "run": run_id})
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-50:]))
        _append_card_history(client, name, version, home, {"kind": "release", "action": "promote", "target": target, "version": version,
                                                            "previous": current or "", "reviewer": who or getpass.getuser(), "mlflow_run": run_id})
        client.set_registered_model_alias(name, PRODUCTION, version)  # last: the commit point
        return {"model": name, "version": version, "previous": current, "decision": decision, "mlflow_run_id": run_id, "numbers": numbers,
                "bundle": str(bundle_path)}


def rollback(client, declaration: Declaration, target: str, home: Path, reason: str, to: str | None = None, who: str | None = None) -> dict:
    if not reason or not reason.strip():
        raise ReleaseError("--reason is required: a rollback records why")
    name = registered_name(declaration.spec.name, target)
    with model_lock(home, name):
        current = _alias_version(client, name, PRODUCTION)
        if current is None:
            raise ReleaseError(f"{name} has no production version to roll back")
        history = json.loads(client.get_registered_model(name).tags.get(HISTORY_TAG, "[]"))
        earlier = [h["version"] for h in history if h["version"] != current]
        to = str(to) if to else (earlier[-1] if earlier else None)
        if to is None:
            raise ReleaseError(f"{name}: no earlier production version to roll back to (current v{current})")
        _version(client, name, to)
        run_id = _record_decision(client, declaration, name, "rollback", to, current, "rolled back", reason, {}, {})
        history.append({"version": to, "at": time.time(), "action": "rollback", "run": run_id, "reason": reason[:500]})
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-50:]))
        _append_card_history(client, name, current, home, {"kind": "release", "action": "rollback", "target": target, "version": to,
                                                            "previous": current, "reviewer": who or getpass.getuser(), "reason": reason,
                                                            "mlflow_run": run_id})
        client.set_registered_model_alias(name, PRODUCTION, to)
        return {"model": name, "from": current, "to": to, "mlflow_run_id": run_id}


def status(client, declaration: Declaration, home: Path, cards_dir: Path) -> list[dict]:
    rows = []
    for target in declaration.spec.targets:
        name = registered_name(declaration.spec.name, target.name)
        latest = _latest_version(client, name)
        row = {"target": target.name, "model": name, "production": _alias_version(client, name, PRODUCTION), "candidate": latest, "gates": {}}
        if declaration.spec.delivery.fleet:
            from edgeops.delivery import fleet_status

            row["devices"] = fleet_status(declaration, target.name)
        if latest and latest != row["production"]:
            row["gates"] = {k: {"passed": ok, "detail": text} for k, (ok, text) in gates(client, declaration, target.name, latest, home, cards_dir).items()}
        rows.append(row)
    return rows


def lineage(client, ref: str) -> dict:
    """From MLflow records alone: a model version (name/version or models:/name/version), an artifact sha256, or a
    card id (pipeline/version). Back to the dataset digests; forward to benchmarks, cards and releases."""
    versions = []
    if len(ref) == 64 and all(c in "0123456789abcdef" for c in ref):
        versions = client.search_model_versions(f"tags.`edgeops.sha256` = '{ref}'")
    elif ref.count("/") == 1 and not ref.startswith("models:/") and ref.split("/")[1].isdigit():
        name, number = ref.split("/")
        versions = [_version(client, name, number)]
    elif ref.startswith("models:/"):
        name, number = ref.removeprefix("models:/").split("/")[:2]
        versions = [_version(client, name, number)]
    else:  # a card id
        versions = client.search_model_versions(f"tags.`edgeops.card_id` = '{ref}'")
    if not versions:
        raise ReleaseError(f"nothing in MLflow matches {ref!r} (a model version name/version, an artifact sha256, or a card id)")
    chains = []
    for mv in versions:
        compression_run = client.get_run(mv.run_id)
        parent = client.get_run(mv.tags["edgeops.parent_mlflow_run"]) if mv.tags.get("edgeops.parent_mlflow_run") else None
        experiment = compression_run.info.experiment_id
        dataset_run = client.search_runs([experiment], f"tags.`dataset.digest` = '{mv.tags.get('edgeops.dataset_digest', '')}'"
                                         f" and attributes.run_name = 'validated_dataset'", max_results=1)
        benchmarks = client.search_runs([experiment], f"tags.`edgeops.target` = '{mv.tags.get('edgeops.target', '')}'"
                                        " and tags.`edgeops.stage` = 'hil_benchmark'", max_results=50)
        benchmarks = [r for r in benchmarks if r.data.tags.get("edgeops.artifact_sha256") == mv.tags.get("edgeops.sha256")]
        releases = client.search_runs([experiment], f"tags.`edgeops.release.model` = '{mv.name}' and tags.`edgeops.release.version` = '{str(mv.version)}'",
                                      max_results=50)
        chains.append({
            "model_version": {"name": mv.name, "version": str(mv.version), "sha256": mv.tags.get("edgeops.sha256"), "aliases": list(mv.aliases),
                              "recipe": mv.tags.get("edgeops.recipe")},
            "compression_run": mv.run_id,
            "dp_model_run": parent.info.run_id if parent else None,
            "dp_model": {"weights_sha256": mv.tags.get("edgeops.parent_weights_sha256"),
                         "epsilon": parent.data.metrics.get("epsilon") if parent else None},
            "dataset": {"digest": mv.tags.get("edgeops.dataset_digest"),
                        "splits": {i.dataset.name: i.dataset.digest for r in dataset_run for i in r.inputs.dataset_inputs},
                        "validated_run": dataset_run[0].info.run_id if dataset_run else None},
            "benchmarks": [{"run": r.info.run_id, "p95_ms": r.data.metrics.get("latency_b1_p95_ms"), "device": r.data.params.get("device")} for r in benchmarks],
            "card": {"card_id": mv.tags.get("edgeops.card_id"), "review": mv.tags.get("edgeops.card_review", "pending")},
            "releases": [{"run": r.info.run_id, "action": r.data.tags.get("edgeops.release.action"), "decision": r.data.tags.get("edgeops.release.decision"),
                          "reason": r.data.tags.get("edgeops.release.reason")} for r in releases],
        })
    return {"ref": ref, "chains": chains}
