"""The card as Markdown with Hugging Face front matter (card.md)."""

from __future__ import annotations

from typing import Any

import yaml

from edgeops.cards.render import lineage_rows, value_text


def front_matter(card: dict[str, Any]) -> dict[str, Any]:
    results: list[dict[str, Any]] = [
        {
            "task": {"type": "image-classification"},
            "dataset": {
                "name": card["training_data"]["source"],
                "type": card["pipeline"],
                "split": "test",
                "revision": card["evaluation_data"]["digest"][:16],
            },
            "metrics": [
                {
                    "type": "accuracy",
                    "value": round(card["metrics"]["dp_model"]["test_accuracy"]["value"], 4),
                    "name": "DP model",
                }
            ],
        }
    ]
    for target in card["targets"]:
        if target.get("accuracy"):
            results[0]["metrics"].append(
                {
                    "type": "accuracy",
                    "value": round(target["accuracy"]["value"], 4),
                    "name": f"{target['name']} ({target['precision']})",
                }
            )
    return {
        "license": card["model_details"]["license"],
        "library_name": "onnx",
        "tags": ["edgeops", "differential-privacy", "on-device", "onnx"],
        "datasets": [card["training_data"]["source"]],
        "metrics": ["accuracy"],
        "pipeline_tag": "image-classification",
        "model-index": [{"name": f"{card['pipeline']}-{card['version']}", "results": results}],
    }


def to_markdown(card: dict[str, Any]) -> str:
    privacy = card["privacy"]
    lines = [
        "---",
        yaml.safe_dump(front_matter(card), sort_keys=False).strip(),
        "---",
        "",
        f"# Model card: {card['pipeline']} {card['version']}",
        "",
        f"Review status: **{card['review']['status']}** · generated {card['generated_at']} · schema "
        f"{card['schema_version']}",
        "",
        f"{card['model_details']['overview']}",
        "",
        "## Intended use",
        *(
            [f"- {u}" for u in card["intended_use"]["primary_uses"]]
            or ["Not declared (`card.intended_use` in the declaration)."]
        ),
        *(
            ["", "Out of scope:", *[f"- {u}" for u in card["intended_use"]["out_of_scope"]]]
            if card["intended_use"]["out_of_scope"]
            else []
        ),
        "",
        "## Privacy",
        "",
        privacy["dp_statement"]["text"],
        "",
        f"- accountant {privacy['dp_statement']['accountant']}, {privacy['dp_statement']['sampling']}, "
        f"{privacy['dp_statement']['clipping']}, "
        f"noise multiplier {privacy['dp_statement']['noise_multiplier']:.3f}, {privacy['dp_statement']['steps']} steps",
        f"- independent re-derivation: {privacy['rederivation']['summary']}",
        f"- privacy audit: {privacy.get('canary_audit', {}).get('summary', 'not run')}",
        f"- membership inference: {privacy['membership_inference'].get('summary', 'not run')}",
        f"- protected: {'; '.join(privacy['protected'])}",
        f"- not protected: {'; '.join(privacy['not_protected'])}",
        *[f"- {t['name']}: {t['guarantee']['text']}" for t in card["targets"] if t.get("guarantee")],
        *_ledger_lines(privacy.get("ledger")),
        "",
        "## Metrics (test split)",
        "",
        "| model | test accuracy |",
        "|---|---|",
        f"| DP model (released) | {value_text(card['metrics']['dp_model']['test_accuracy'])} |",
        f"| DP baseline ({card['metrics']['dp_baseline'].get('model', 'skipped')}) | "
        f"{value_text(card['metrics']['dp_baseline'].get('test_accuracy'))} |",
        f"| non-private reference (never released) | "
        f"{value_text(card['metrics']['nonprivate_reference']['test_accuracy'])} |",
        "",
        f"Expected calibration error of the DP model: {value_text(card['metrics']['dp_model']['test_ece'])}.",
        "",
        "## Targets",
        "",
        "| target | device | recipe | size (bytes) | accuracy | drop (points) | latency p50 / p95 (ms) | memory (KB) "
        "| energy | checks |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in card["targets"]:
        recipe = " + ".join(step["step"] for step in t["recipe"]) or "float"
        checks = ", ".join(f"{k}: {v['status']}" for k, v in t["checks"].items())
        lines.append(
            f"| {t['name']} | {t['device']} | {recipe} | {value_text(t.get('size_bytes'))} | "
            f"{value_text(t.get('accuracy'))} | {value_text(t.get('accuracy_drop_points'))} | "
            f"{value_text(t.get('latency_p50_ms'))} / {value_text(t.get('latency_p95_ms'))} | "
            f"{value_text(t.get('memory_kb'))} | {t.get('energy', 'not measured')} | {checks} |"
        )
    adversarial = card.get("robustness", {}).get("adversarial")
    if adversarial:
        budgets = [b["epsilon_fraction_of_span"] for b in next(iter(adversarial["per_target"].values()))["budgets"]]
        lines += [
            "",
            "## Adversarial robustness",
            "",
            f"{adversarial['method']}; {adversarial['rows']} test rows. Budgets are fractions of each feature's span.",
            "",
            "| target | clean | " + " | ".join(f"FGSM {e:g} | PGD {e:g}" for e in budgets) + " |",
            "|---|---|" + "---|---|" * len(budgets),
        ]
        for name, entry in adversarial["per_target"].items():
            cells = " | ".join(
                f"{value_text(b['fgsm_accuracy'], 3)} | {value_text(b['pgd_accuracy'], 3)}" for b in entry["budgets"]
            )
            lines.append(f"| {name} | {value_text(entry['clean_accuracy'], 3)} | {cells} |")
    lines += [
        "",
        "## Per-class accuracy",
        "",
        "| class | " + " | ".join(card["quantitative_analyses"]["per_class"]) + " |",
        "|---|" + "---|" * len(card["quantitative_analyses"]["per_class"]),
    ]
    classes = list(card["quantitative_analyses"]["per_class"]["dp_model"])
    for c in classes:
        row = [
            value_text((card["quantitative_analyses"]["per_class"][m] or {}).get(c), 3)
            for m in card["quantitative_analyses"]["per_class"]
        ]
        lines.append(f"| {c} | " + " | ".join(row) + " |")
    lines += [
        "",
        "## Data validation",
        "",
        *[f"- {name}: {summary}" for name, summary in card["data_validation"]["checks"].items()],
        "",
        "## Limitations (derived from the numbers)",
        "",
        *[f"- {n}" for n in card["caveats_and_recommendations"]["limitations"]],
        "",
        "## NIST AI RMF 1.0",
        "",
        f"{card['compliance_claim']}.",
        "",
        "Summary: " + ", ".join(f"{k}: {v}" for k, v in card["nist_summary"].items()),
        "",
        "| id | classification | evidence / reason |",
        "|---|---|---|",
    ]
    for item in card["nist_ai_rmf"]:
        reason = ", ".join(item["evidence"]) or item["why"]
        if item.get("attestations"):
            reason += " · attested by " + "; ".join(
                f"{a['signer']} ({a['role']}, {a['date']})" for a in item["attestations"]
            )
        lines.append(f"| {item['id']} | {item['classification']} | {reason} |")
    lines += ["", "## Lineage", "", "| what | kind | digest or id |", "|---|---|---|"]
    lines += [f"| {what} | {kind} | `{value}` |" for what, kind, value, _ in lineage_rows(card, None)]
    lines += ["", "Software: " + ", ".join(f"{k} {v}" for k, v in card["lineage"].get("software", {}).items()), ""]
    return "\n".join(lines)


def _ledger_lines(ledger: dict[str, Any] | None) -> list[str]:
    """The ledger in Markdown: totals, rule, and one line per entry with its second accountant's figure."""
    if not ledger or "totals" not in ledger:
        return []
    totals, pld = ledger["totals"], ledger.get("pld_composition")
    lines = [
        f"- ledger: spent ({totals['epsilon']:g}, {totals['delta']:g}) of ({totals['budget_epsilon']:g}, "
        f"{totals['budget_delta']:g}); "
        f"{ledger['composition']}"
        + (f"; PLD composition of every entry: epsilon {pld['epsilon']:.3f} at delta {pld['delta']:g}" if pld else "")
    ]
    for entry in ledger["entries"]:
        second = entry.get("second_accountant")
        lines.append(
            f"  - entry {entry['id']} {entry['mechanism']} ({entry['status']}): ({entry['epsilon']:.4g}, "
            f"{entry['delta']:g})" + (f"; {second['method']}: epsilon {second['epsilon']:.4g}" if second else "")
        )
    return lines
