"""Builds a model card from the pipeline's recorded results. Nothing in it is typed by hand.

Every number that matters is read back from MLflow and carried with its source
(`{"value": 0.91, "mlflow_run_id": "...", "metric": "test_accuracy"}`), so an auditor, or a test, can walk the card
and check each one against the tracking server.
"""

from __future__ import annotations

import datetime as dt
import json
from importlib import metadata
from pathlib import Path

import yaml

from edgeops.errors import EdgeopsError
from edgeops.spec import Declaration

CARD_SCHEMA_VERSION = "edgeops.card/1.0"
CLASSIFICATIONS = ("supported", "partial", "attestation", "not_applicable")
SOFTWARE = ("torch", "opacus", "diffprivlib", "dp-accounting", "onnx", "onnxruntime", "torch-pruning", "great-expectations",
            "mlflow", "dagster", "scikit-learn", "numpy")


class CardError(EdgeopsError):
    pass


def _pretrained_base(dp_model: dict) -> str:
    pretrain = dp_model.get("pretrain")
    if not pretrain:
        return "none: DP-SGD from random weights"
    return (f"pre-trained without DP on {pretrain['samples']} public synthetic digits ({pretrain['source']}, seed {pretrain['seed']}, "
            f"{pretrain['epochs']} epochs; test accuracy {100 * pretrain['test_accuracy_before_dp']:.1f}% before DP-SGD), then DP-SGD on the "
            "private training split; the pre-training read no private data and cost no privacy")


class MlflowEvidence:
    """Reads metrics and params of MLflow runs once each, and wraps values with where they came from."""

    def __init__(self, client):
        self.client = client
        self._runs: dict[str, object] = {}

    def run(self, run_id: str):
        if run_id not in self._runs:
            try:
                self._runs[run_id] = self.client.get_run(run_id)
            except Exception as err:
                raise CardError(f"evidence missing from MLflow: run {run_id} cannot be read ({type(err).__name__})") from None
        return self._runs[run_id]

    def metric(self, run_id: str, key: str, required: bool = True) -> dict | None:
        metrics = self.run(run_id).data.metrics
        if key not in metrics:
            if required:
                raise CardError(f"evidence missing from MLflow: run {run_id} has no metric {key!r}")
            return None
        return {"value": metrics[key], "mlflow_run_id": run_id, "metric": key}

    def param(self, run_id: str, key: str) -> str | None:
        return self.run(run_id).data.params.get(key)


def _value(item):
    return item["value"] if isinstance(item, dict) and "value" in item else item


def _lookup(card: dict, path: str):
    node = card
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def _present(value) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, (list, dict, str)) and not value:
        return False
    return True


def load_catalogue(cards_dir: Path) -> list[dict]:
    catalogue = json.loads((cards_dir / "nist_ai_rmf_1_0.json").read_text())
    return [sub for function in catalogue["functions"] for category in function["categories"] for sub in category["subcategories"]]


def load_rules(cards_dir: Path, known_ids: set[str]) -> dict:
    path = cards_dir / "nist_mapping.yaml"
    rules = (yaml.safe_load(path.read_text()) or {}).get("rules", {})
    unknown = sorted(set(rules) - known_ids)
    if unknown:
        raise CardError(f"{path}: unknown NIST AI RMF subcategory id(s) {unknown}")
    return rules


def load_attestations(declaration: Declaration, known_ids: set[str]) -> list[dict]:
    if not declaration.spec.card.attestations:
        return []
    path = declaration.resolve(declaration.spec.card.attestations)
    entries = (yaml.safe_load(path.read_text()) or {}).get("attestations", [])
    for index, entry in enumerate(entries):
        for field in ("subcategory", "signer", "role", "date", "statement"):
            if not entry.get(field):
                raise CardError(f"{path}: attestations.{index}.{field} is missing (an attestation needs subcategory, signer, role, date and statement)")
        if entry["subcategory"] not in known_ids:
            raise CardError(f"{path}: attestations.{index}.subcategory {entry['subcategory']!r} is not a NIST AI RMF 1.0 subcategory")
        entry["date"] = str(entry["date"])
    return entries


def classify_nist(card: dict, cards_dir: Path, attestations: list[dict]) -> list[dict]:
    catalogue = load_catalogue(cards_dir)
    rules = load_rules(cards_dir, {s["id"] for s in catalogue})
    attested = {}
    for entry in attestations:
        attested.setdefault(entry["subcategory"], []).append(entry)
    out = []
    for sub in catalogue:
        rule = rules.get(sub["id"])
        item = {"id": sub["id"], "statement": sub["statement"], "classification": "attestation", "evidence": [], "why": ""}
        if rule and "not_applicable_when" in rule:
            field, _, expected = rule["not_applicable_when"].partition(" is ")
            if str(_lookup(card, field)) == expected:
                item.update(classification="not_applicable", why=rule["why"])
        elif rule:
            present = [path for path in rule["evidence"] if _present(_value(_lookup(card, path)))]
            item["evidence"] = present
            item["why"] = rule["why"]
            if present and len(present) == len(rule["evidence"]) and rule.get("max") == "supported":
                item["classification"] = "supported"
            elif present:
                item["classification"] = "partial"
            else:
                item["why"] = f"no evidence in this card yet ({', '.join(rule['evidence'])}); {rule['why']}"
        if item["classification"] == "attestation":
            item["attestations"] = attested.get(sub["id"], [])
            item["why"] = item["why"] or "an organisational outcome: a person must attest it"
        out.append(item)
    return out


def _software() -> dict:
    versions = {}
    for name in SOFTWARE:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _limitations(card: dict) -> list[str]:
    """Limitations derived from the numbers, never written by hand."""
    notes = []
    per_class = card["quantitative_analyses"]["per_class"]["dp_model"]
    worst = min((c for c in per_class if per_class[c] is not None), key=lambda c: per_class[c])
    notes.append(f"Weakest class of the DP model: {worst} at {100 * per_class[worst]:.1f}% test accuracy.")
    gap = card["metrics"].get("utility_gap_points")
    if gap is not None:
        notes.append(f"Differential privacy costs {gap:.1f} accuracy points against the non-private reference (never released).")
    for target in card["targets"]:
        drops = target.get("per_class_drop") or {}
        if drops:
            cls = max(drops, key=lambda c: drops[c])
            if drops[cls] > 0:
                notes.append(f"Target {target['name']}: class {cls} loses the most after compression ({100 * drops[cls]:.1f} points).")
        failed = [name for name, state in target["checks"].items() if state["status"] == "failed"]
        if failed:
            notes.append(f"Target {target['name']} misses its budgets: {', '.join(failed)} (see the per-target table).")
        if target["latency_p95_ms"] is None:
            notes.append(f"Target {target['name']}: latency and memory not measured ({target['not_measured_reason']}).")
    if not card["energy"]["measured"]:
        notes.append(f"Energy was not measured: {card['energy']['reason']}")
    ece = _value(card["metrics"]["dp_model"]["test_ece"])
    if ece > 0.05:
        notes.append(f"Confidence is not well calibrated (expected calibration error {ece:.3f}); do not read scores as probabilities.")
    notes.append(f"Evaluated on {card['evaluation_data']['rows']} held-out rows of the same source; performance on other scanners or "
                 "handwriting populations is unknown.")
    return notes


def drift_status(reports: list[dict], weights_sha256: str) -> dict:
    """What monitoring has seen for this model version (drift reports are made with the released weights)."""
    mine = [r for r in reports if r.get("model_weights_sha256") == weights_sha256 or r.get("status") == "quarantined"]
    if not mine:
        return {"status": None, "note": "no incoming batch has been monitored for this version yet"}
    checked = [r for r in mine if r.get("status") == "checked"]
    drifted = [r["key"] for r in checked if r.get("drift_detected")]
    return {"status": "drift detected" if drifted else "no drift", "batches_checked": len(checked), "batches_with_drift": drifted[:20],
            "batches_quarantined": [r["key"] for r in mine if r.get("status") == "quarantined"][:20],
            "mlflow_runs": [r["mlflow_run_id"] for r in checked][:20]}


def _robustness_section(evidence: "MlflowEvidence", robustness: dict, current: dict) -> dict:
    """FGSM/PGD accuracy per target, every number cited from the robustness run; only for this version's artifacts."""
    from edgeops.robustness import metric_names

    per_target = {}
    for name, record in sorted(robustness.items()):
        if name not in current or record.get("artifact_sha256") != current[name]["sha256"]:
            continue  # skipped, or measured on another artifact of this target: not evidence for this version
        run_id = record["mlflow_run_id"]
        budgets = []
        for budget in record["budgets"]:
            fgsm, pgd = metric_names(budget["epsilon_fraction_of_span"])
            budgets.append({"epsilon_fraction_of_span": budget["epsilon_fraction_of_span"], "fgsm_accuracy": evidence.metric(run_id, fgsm),
                            "pgd_accuracy": evidence.metric(run_id, pgd)})
        per_target[name] = {"clean_accuracy": evidence.metric(run_id, "clean_accuracy"), "budgets": budgets}
    if not per_target:
        return {}
    first = next(r for n, r in sorted(robustness.items()) if n in per_target)
    return {"adversarial": {"method": f"FGSM and PGD ({first['pgd_steps']} steps), {first['norm']}, {first['attacks']}",
                            "rows": first["rows"], "per_target": per_target}}


def build_card(declaration: Declaration, cards_dir: Path, client, dataset: dict, dp_model: dict, baseline: dict, reference: dict,
               audit: dict, compressed: dict, benchmarks: dict, dagster_run_id: str, inputs_drift_reports: list[dict] | None = None,
               robustness: dict | None = None) -> dict:
    from edgeops.compression import budget_outcomes
    from edgeops.hil.bench import latency_memory_outcomes
    from edgeops.privacy import verify_claim

    spec = declaration.spec
    evidence = MlflowEvidence(client)
    dp_run = dp_model["mlflow_run_id"]
    version = dp_model["weights_sha256"][:12]
    current = {name: record for name, record in compressed.items() if record.get("parent_weights_sha256") == dp_model["weights_sha256"]}
    test_acc = evidence.metric(dp_run, "test_accuracy")
    reference_acc = reference["metrics"]["test"]["accuracy"]
    card: dict = {
        "schema_version": CARD_SCHEMA_VERSION,
        "card_id": f"{spec.name}/{version}",
        "pipeline": spec.name,
        "version": version,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model_details": {
            "name": spec.name, "overview": spec.description, "owners": spec.owners, "version": version, "license": spec.card.license,
            "architecture": {**spec.model.model_dump(mode="json"), "input": f"features (N, {len(dp_model['features'])}) float32, raw values within the declared bounds",
                             "output": f"logits (N, {len(dp_model['classes'])}) over classes {dp_model['classes']}"},
            "parameters": dp_model["parameters"], "framework": "PyTorch + Opacus; artifacts in each target's runtime format (targets[].runtime)", "pretrained_base": _pretrained_base(dp_model),
        },
        "intended_use": {"primary_uses": [spec.card.intended_use] if spec.card.intended_use else [], "out_of_scope": spec.card.out_of_scope},
        "factors": {"evaluated": "per-class accuracy over the declared classes", "classes": dp_model["classes"],
                    "not_evaluated": "no demographic or acquisition-device attributes exist in the data"},
        "metrics": {
            "primary": ["test accuracy", "per-class accuracy", "expected calibration error", "latency p50/p95", "peak memory", "file size",
                        "(epsilon, delta)"],
            "dp_model": {"test_accuracy": test_acc, "test_ece": evidence.metric(dp_run, "test_ece"),
                         "validation_accuracy": evidence.metric(dp_run, "validation_accuracy")},
            "dp_baseline": {"test_accuracy": evidence.metric(baseline["mlflow_run_id"], "baseline_test_accuracy"), "model": baseline.get("model"),
                            "epsilon": baseline.get("epsilon")} if baseline.get("mlflow_run_id") and "metrics" in baseline else {"skipped": baseline.get("skipped", "")},
            "nonprivate_reference": {"test_accuracy": evidence.metric(reference["mlflow_run_id"], "reference_test_accuracy"),
                                     "released": False, "note": "comparison only; never exported, registered or shipped"},
            "utility_gap_points": round(100 * (reference_acc - _value(test_acc)), 2),
        },
        "evaluation_data": {"split": "test", "digest": dataset["splits"]["test"]["digest"], "rows": dataset["splits"]["test"]["rows"],
                            "source": dataset["source"]},
        "training_data": {"source": dataset["source"], "digest": dataset["splits"]["train"]["digest"], "rows": dataset["splits"]["train"]["rows"],
                          "protection": f"differential privacy ({'DP-FedAvg, federated' if dp_model.get('training_mode') == 'federated' else 'DP-SGD'}), "
                                        f"unit: {dp_model['privacy']['unit']}"},
        "data_validation": {"checks": dataset.get("checks", {}), "passed": True, "dataset_digest": dataset["digest"]},
        "quantitative_analyses": {"per_class": {"dp_model": dp_model["metrics"]["test"]["per_class_accuracy"]}, "per_target": []},
    }
    privacy = dp_model["privacy"]
    card["privacy"] = {
        "dp_statement": {
            "epsilon": evidence.metric(dp_run, "epsilon"), "delta": privacy["delta"], "accountant": privacy["accountant"].upper(),
            "sampling": f"{privacy['sampling']}, rate {privacy['sample_rate']:.4f}",
            "clipping": f"{privacy['clipping']}, L2 norm {privacy.get('max_grad_norm', privacy.get('clipping_norm'))}",
            "noise_multiplier": privacy["noise_multiplier"], "steps": privacy["steps"], "epochs": privacy.get("epochs"),
            "unit": privacy["unit"], "training_mode": dp_model.get("training_mode", "central"),
            "text": f"The released model is ({_value(evidence.metric(dp_run, 'epsilon')):.3f}, {privacy['delta']:g})-differentially private "
                    + (f"with respect to one client's whole data, trained by federated averaging across {privacy.get('clients')} clients "
                       f"(Flower DP-FedAvg, {privacy['steps']} rounds, {privacy['accountant'].upper()} accountant"
                       + (", secure aggregation with SecAgg+)." if privacy.get("secure_aggregation") else ").")
                       if dp_model.get("training_mode") == "federated" else
                       f"with respect to one row of the training split ({privacy['accountant'].upper()} accountant)."),
        },
        "rederivation": verify_claim(privacy),
        "membership_inference": {k: audit[k] for k in ("dp_model", "nonprivate_reference", "consistent", "summary") if k in audit}
                                | {"mlflow_run_id": audit.get("mlflow_run_id")},
        "protected": ["training split (DP-SGD)", "pruning fine-tuning data where declared (DP-SGD, charged to the ledger)"],
        "not_protected": ["validation and test splits (used for evaluation and checks; their aggregate metrics are published without DP)",
                          "the non-private reference's aggregate metrics (never released as a model)",
                          "data validation reports (row ids of suspect rows are shown to the data owner only)"],
    }
    targets = []
    energy_reason = ""
    for target_spec in spec.targets:
        record = current.get(target_spec.name)
        bench = benchmarks.get(target_spec.name) or {}
        if bench.get("artifact_sha256") not in (None, record and record.get("sha256")):
            bench = {}  # a benchmark of an older artifact of this target: not evidence for this version
        entry = {"name": target_spec.name, "runtime": target_spec.runtime, "device": target_spec.device, "precision": target_spec.precision,
                 "recipe": [s.model_dump(mode="json") for s in target_spec.recipe], "budgets": target_spec.budgets.model_dump(mode="json"),
                 "checks": {}, "latency_p50_ms": None, "latency_p95_ms": None, "memory_kb": None}
        if record is None:
            entry.update(status="not built for this model version (its compression failed or did not run)")
            entry["checks"]["compression"] = {"status": "failed", "detail": "no artifact for this model version"}
            entry["not_measured_reason"] = "no artifact"
            targets.append(entry)
            continue
        run_id = record["mlflow_run_id"]
        entry.update({
            "sha256": record["sha256"], "registered_model": record.get("registered_model"), "registered_version": record.get("registered_version"),
            "size_bytes": {**evidence.metric(run_id, "size_bytes"), "unit": "bytes"}, "parameters": evidence.metric(run_id, "parameters"),
            "macs": evidence.metric(run_id, "macs"), "accuracy": evidence.metric(run_id, "accuracy", required=False),
            "accuracy_drop_points": evidence.metric(run_id, "accuracy_drop_points", required=False), "privacy": record["privacy"],
            "per_class_drop": {c: round(record["float_per_class_accuracy"][c] - record["per_class_accuracy"][c], 4)
                               for c in record.get("per_class_accuracy", {}) if record["per_class_accuracy"][c] is not None},
        })
        outcomes = budget_outcomes(record, target_spec)
        if bench:
            outcomes.update(latency_memory_outcomes(bench, target_spec))
        for name, (passed, text) in outcomes.items():
            entry["checks"][name] = {"status": "not measured" if passed is None else ("passed" if passed else "failed"), "detail": text}
        if bench.get("measured"):
            bench_run = bench["mlflow_run_id"]
            entry.update({"latency_p50_ms": evidence.metric(bench_run, "latency_b1_p50_ms"), "latency_p95_ms": evidence.metric(bench_run, "latency_b1_p95_ms"),
                          "memory_kb": evidence.metric(bench_run, "peak_rss_beyond_baseline_kb"),
                          "accuracy_on_device": evidence.metric(bench_run, "accuracy_on_device"),
                          "energy": "measured" if bench["energy"].get("measured") else f"not measured: {bench['energy']['reason']}",
                          "device_facts": {k: bench["device"].get(k) for k in ("cpu_model", "cores", "isa_flags", "runtime_version", "provider", "threads")}})
            energy_reason = energy_reason or bench["energy"].get("reason", "")
        else:
            entry["not_measured_reason"] = bench.get("reason", "benchmark did not run for this artifact")
            entry["energy"] = "not measured"
        card["quantitative_analyses"]["per_class"][target_spec.name] = record.get("per_class_accuracy")
        card["quantitative_analyses"]["per_target"].append({k: entry.get(k) for k in ("name", "accuracy", "accuracy_drop_points", "size_bytes", "latency_p50_ms", "latency_p95_ms", "memory_kb")})
        targets.append(entry)
    card["targets"] = targets
    measured_energy = any(t.get("energy") == "measured" for t in targets)
    card["energy"] = {"measured": measured_energy, "reason": "" if measured_energy else (energy_reason or "no benchmark measured energy")}
    card["robustness"] = _robustness_section(evidence, robustness or {}, current)
    card["drift"] = drift_status(inputs_drift_reports or [], dp_model["weights_sha256"])
    card["ethical_considerations"] = [
        {"name": "Privacy of the people whose handwriting or records form the training data",
         "mitigation_strategy": card["privacy"]["dp_statement"]["text"]},
        {"name": "Misuse outside the declared scope", "mitigation_strategy": "Out-of-scope uses are listed; release requires a human review of this card."},
    ]
    card["caveats_and_recommendations"] = {"limitations": _limitations(card),
                                           "recommendations": ["Review the per-target table before approving a release for a device.",
                                                               "Re-run the pipeline when drift is reported; retraining spends privacy budget."]}
    card["lineage"] = {
        "dataset_digests": {name: split["digest"] for name, split in dataset["splits"].items()} | {"combined": dataset["digest"]},
        "mlflow_runs": {"dp_model": dp_run, "privacy_audit": audit.get("mlflow_run_id"), "dp_baseline": baseline.get("mlflow_run_id"),
                        **{f"compressed_model[{n}]": r["mlflow_run_id"] for n, r in current.items()},
                        **{f"hil_benchmark[{n}]": b["mlflow_run_id"] for n, b in benchmarks.items() if b.get("mlflow_run_id") and n in current}},
        "registered_models": {n: {"name": r.get("registered_model"), "version": r.get("registered_version")} for n, r in current.items()},
        "dagster_run_id": dagster_run_id, "weights_sha256": dp_model["weights_sha256"], "spec_sha256": declaration.sha256,
        "artifact_sha256": {"dp_model.onnx": dp_model["onnx_sha256"], "dp_model.safetensors": dp_model["weights_file_sha256"],
                            **{f"{n}.onnx": r["sha256"] for n, r in current.items()}},
        "software": _software(),
    }
    card["review"] = {"status": "pending", "gates": ["every blocking check passed", "card signature verifies", "an approving review"]}
    attestations = load_attestations(declaration, {s["id"] for s in load_catalogue(cards_dir)})
    card["attestations"] = attestations
    card["nist_ai_rmf"] = classify_nist(card, cards_dir, attestations)
    card["nist_summary"] = {c: sum(1 for s in card["nist_ai_rmf"] if s["classification"] == c) for c in CLASSIFICATIONS}
    card["compliance_claim"] = "none: this card reports evidence for NIST AI RMF 1.0 subcategories; it does not claim compliance"
    card["evidence_manifest"] = _evidence_manifest(dp_model, current)
    return card


def _evidence_manifest(dp_model: dict, compressed: dict) -> list[dict]:
    """Every artifact the card cites, with the sha256 recorded when it was made (checked by `card verify`)."""
    items = [{"kind": "file", "path": dp_model["onnx_path"], "sha256": dp_model["onnx_sha256"], "mlflow_run_id": dp_model["mlflow_run_id"],
              "mlflow_tag": "sha256.model/model.onnx"},
             {"kind": "file", "path": dp_model["weights_path"], "sha256": dp_model["weights_file_sha256"], "mlflow_run_id": dp_model["mlflow_run_id"],
              "mlflow_tag": "sha256.model/model.safetensors"}]
    for record in compressed.values():
        items.append({"kind": "file", "path": record["artifact_path"], "sha256": record["sha256"], "mlflow_run_id": record["mlflow_run_id"],
                      "mlflow_tag": f"sha256.model/{record.get('artifact_file', 'model.onnx')}"})
    return items


def generate_card(declaration: Declaration, settings, run, inputs: dict, dagster_run_id: str) -> dict:
    """The card stage: build from recorded results, write every format, sign, and log the files to MLflow."""
    import time

    from edgeops.cards.store import write_card

    started = time.perf_counter()
    drift_dir = settings.home / "assets" / declaration.spec.name / "drift_report"
    drift_reports = [json.loads(p.read_text()) for p in sorted(drift_dir.glob("*.json"))] if drift_dir.exists() else []
    card = build_card(declaration, settings.model_cards_dir, run.client, inputs["dataset"], inputs["dp_model"], inputs["dp_baseline"],
                      inputs["nonprivate_reference"], inputs["privacy_audit"], inputs["compressed"], inputs["benchmarks"], dagster_run_id,
                      drift_reports, inputs.get("robustness"))
    card["mlflow_run_id"] = run.run_id
    folder = write_card(card, settings.model_cards_dir, settings.home, mlflow_ui=run.ui_url.split("/#/")[0])
    seconds = time.perf_counter() - started
    for name in ("card.json", "card.sig.json", "card.md", "card.html", "card.mct.json", "pareto.png"):
        if (folder / name).exists():
            run.log_artifact(folder / name, "card")
    run.log_metrics({"card_generation_s": seconds, **{f"nist_{k}": v for k, v in card["nist_summary"].items()}})
    from edgeops.registry import tag_version

    for target in card["targets"]:
        if target.get("registered_model"):
            tag_version(run.client, target, {"edgeops.card_id": card["card_id"], "edgeops.card_folder": str(folder)})
    run.set_tags({"edgeops.card_id": card["card_id"], "edgeops.card_version": card["version"]})
    return {"folder": str(folder), "card_id": card["card_id"], "version": card["version"], "nist_summary": card["nist_summary"],
            "seconds": seconds, "limitations": card["caveats_and_recommendations"]["limitations"], "mlflow_run_id": run.run_id,
            "registered_models": card["lineage"]["registered_models"]}
