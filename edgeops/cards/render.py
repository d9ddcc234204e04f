"""Card formats: Markdown with Hugging Face front matter, a self-contained HTML page (charts inlined), and an
export to Google's Model Card Toolkit schema (validated against the copy in model_cards/)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import yaml


def _v(item, digits: int = 4):
    value = item["value"] if isinstance(item, dict) and "value" in item else item
    if value is None:
        return "not measured"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def pareto_png(card: dict) -> bytes | None:
    """Accuracy against latency p50 (marker size ~ file size), one point per measured target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(t["name"], t["latency_p50_ms"]["value"], t["accuracy"]["value"], t["size_bytes"]["value"] / 1024)
              for t in card["targets"] if t.get("latency_p50_ms") and t.get("accuracy")]
    if not points:
        return None
    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    for name, latency, accuracy, size_kb in points:
        axis.scatter(latency * 1000, accuracy * 100, s=20 + 4 * size_kb, alpha=0.7)
        axis.annotate(f"{name} ({size_kb:.1f} KB)", (latency * 1000, accuracy * 100), textcoords="offset points", xytext=(5, 5), fontsize=8)
    axis.set_xlabel("latency p50 at batch 1 (µs, measured on the declared device)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title(f"{card['pipeline']} {card['version']}: accuracy vs latency (marker area ~ size)")
    axis.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def front_matter(card: dict) -> dict:
    results = [{"task": {"type": "image-classification"}, "dataset": {"name": card["training_data"]["source"], "type": card["pipeline"],
                                                                      "split": "test", "revision": card["evaluation_data"]["digest"][:16]},
                "metrics": [{"type": "accuracy", "value": round(card["metrics"]["dp_model"]["test_accuracy"]["value"], 4), "name": "DP model"}]}]
    for target in card["targets"]:
        if target.get("accuracy"):
            results[0]["metrics"].append({"type": "accuracy", "value": round(target["accuracy"]["value"], 4), "name": f"{target['name']} ({target['precision']})"})
    return {"license": card["model_details"]["license"], "library_name": "onnx", "tags": ["edgeops", "differential-privacy", "on-device", "onnx"],
            "datasets": [card["training_data"]["source"]], "metrics": ["accuracy"], "pipeline_tag": "image-classification",
            "model-index": [{"name": f"{card['pipeline']}-{card['version']}", "results": results}]}


def to_markdown(card: dict) -> str:
    privacy = card["privacy"]
    lines = ["---", yaml.safe_dump(front_matter(card), sort_keys=False).strip(), "---", "",
             f"# Model card: {card['pipeline']} {card['version']}", "",
             f"Review status: **{card['review']['status']}** · generated {card['generated_at']} · schema {card['schema_version']}", "",
             f"{card['model_details']['overview']}", "", "## Intended use",
             *[f"- {u}" for u in card["intended_use"]["primary_uses"]], "", "Out of scope:", *[f"- {u}" for u in card["intended_use"]["out_of_scope"]],
             "", "## Privacy", "", privacy["dp_statement"]["text"], "",
             f"- accountant {privacy['dp_statement']['accountant']}, {privacy['dp_statement']['sampling']}, {privacy['dp_statement']['clipping']}, "
             f"noise multiplier {privacy['dp_statement']['noise_multiplier']:.3f}, {privacy['dp_statement']['steps']} steps",
             f"- independent re-derivation: {privacy['rederivation']['summary']}",
             f"- empirical audit: {privacy['membership_inference'].get('summary', 'not run')}",
             f"- protected: {'; '.join(privacy['protected'])}", f"- not protected: {'; '.join(privacy['not_protected'])}", "",
             "## Metrics (test split)", "",
             "| model | test accuracy |", "|---|---|",
             f"| DP model (released) | {_v(card['metrics']['dp_model']['test_accuracy'])} |",
             f"| DP baseline ({card['metrics']['dp_baseline'].get('model', 'skipped')}) | {_v(card['metrics']['dp_baseline'].get('test_accuracy'))} |",
             f"| non-private reference (never released) | {_v(card['metrics']['nonprivate_reference']['test_accuracy'])} |", "",
             f"Expected calibration error of the DP model: {_v(card['metrics']['dp_model']['test_ece'])}.", "",
             "## Targets", "", "| target | device | recipe | size (bytes) | accuracy | drop (points) | latency p50 / p95 (ms) | memory (KB) | energy | checks |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for t in card["targets"]:
        recipe = " + ".join(step["step"] for step in t["recipe"]) or "float"
        checks = ", ".join(f"{k}: {v['status']}" for k, v in t["checks"].items())
        lines.append(f"| {t['name']} | {t['device']} | {recipe} | {_v(t.get('size_bytes'))} | {_v(t.get('accuracy'))} | {_v(t.get('accuracy_drop_points'))} | "
                     f"{_v(t.get('latency_p50_ms'))} / {_v(t.get('latency_p95_ms'))} | {_v(t.get('memory_kb'))} | {t.get('energy', 'not measured')} | {checks} |")
    adversarial = card.get("robustness", {}).get("adversarial")
    if adversarial:
        budgets = [b["epsilon_fraction_of_span"] for b in next(iter(adversarial["per_target"].values()))["budgets"]]
        lines += ["", "## Adversarial robustness", "", f"{adversarial['method']}; {adversarial['rows']} test rows. Budgets are fractions of "
                  "each feature's span.", "", "| target | clean | " + " | ".join(f"FGSM {e:g} | PGD {e:g}" for e in budgets) + " |",
                  "|---|---|" + "---|---|" * len(budgets)]
        for name, entry in adversarial["per_target"].items():
            cells = " | ".join(f"{_v(b['fgsm_accuracy'], 3)} | {_v(b['pgd_accuracy'], 3)}" for b in entry["budgets"])
            lines.append(f"| {name} | {_v(entry['clean_accuracy'], 3)} | {cells} |")
    lines += ["", "## Per-class accuracy", "", "| class | " + " | ".join(card["quantitative_analyses"]["per_class"]) + " |",
              "|---|" + "---|" * len(card["quantitative_analyses"]["per_class"])]
    classes = list(card["quantitative_analyses"]["per_class"]["dp_model"])
    for c in classes:
        row = [_v((card["quantitative_analyses"]["per_class"][m] or {}).get(c), 3) for m in card["quantitative_analyses"]["per_class"]]
        lines.append(f"| {c} | " + " | ".join(row) + " |")
    lines += ["", "## Data validation", "", *[f"- {name}: {summary}" for name, summary in card["data_validation"]["checks"].items()], "",
              "## Limitations (derived from the numbers)", "", *[f"- {n}" for n in card["caveats_and_recommendations"]["limitations"]], "",
              "## NIST AI RMF 1.0", "", f"{card['compliance_claim']}.", "",
              "Summary: " + ", ".join(f"{k}: {v}" for k, v in card["nist_summary"].items()), "", "| id | classification | evidence / reason |", "|---|---|---|"]
    for item in card["nist_ai_rmf"]:
        reason = ", ".join(item["evidence"]) or item["why"]
        if item.get("attestations"):
            reason += " · attested by " + "; ".join(f"{a['signer']} ({a['role']}, {a['date']})" for a in item["attestations"])
        lines.append(f"| {item['id']} | {item['classification']} | {reason} |")
    lines += ["", "## Lineage", "", "```json", json.dumps(card["lineage"], indent=1), "```", ""]
    return "\n".join(lines)


def to_html(card: dict, markdown_text: str, chart: bytes | None) -> str:
    """Self-contained: no scripts, no external assets; the chart is inlined as a data URI."""
    body = []
    in_table = False
    for line in markdown_text.split("\n---\n", 2)[-1].splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
            if line == "## Targets" and chart:
                body.append(f'<img alt="Pareto chart" src="data:image/png;base64,{base64.b64encode(chart).decode()}">')
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip() and not line.startswith("```"):
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:1em 0}"
             "td{border:1px solid #ccc;padding:3px 6px;font-size:13px}tr:first-child td{font-weight:bold;background:#f3f3f3}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Model card {html.escape(card['card_id'])}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")


def to_mct(card: dict) -> dict:
    metrics = [{"type": "accuracy", "value": _v(card["metrics"]["dp_model"]["test_accuracy"]), "slice": "test, DP model"}]
    for t in card["targets"]:
        if t.get("accuracy"):
            metrics.append({"type": "accuracy", "value": _v(t["accuracy"]), "slice": f"test, target {t['name']}"})
        if t.get("latency_p95_ms"):
            metrics.append({"type": "latency_p95_ms", "value": _v(t["latency_p95_ms"]), "slice": f"batch 1, {t['device']}, target {t['name']}"})
    return {
        "schema_version": "0.0.2",
        "model_details": {"name": card["pipeline"], "overview": card["model_details"]["overview"],
                          "owners": [{"name": o, "contact": o} for o in card["model_details"]["owners"]],
                          "version": {"name": card["version"], "date": card["generated_at"]},
                          "licenses": [{"identifier": card["model_details"]["license"]}]},
        "model_parameters": {"model_architecture": json.dumps(card["model_details"]["architecture"]),
                             "data": [{"name": f"training split {card['training_data']['digest'][:16]}", "sensitive": {"sensitive_data": ["private training rows (DP-SGD)"]}},
                                      {"name": f"test split {card['evaluation_data']['digest'][:16]}"}],
                             "input_format": card["model_details"]["architecture"]["input"], "output_format": card["model_details"]["architecture"]["output"]},
        "quantitative_analysis": {"performance_metrics": metrics},
        "considerations": {"use_cases": [{"description": u} for u in card["intended_use"]["primary_uses"]],
                           "limitations": [{"description": n} for n in card["caveats_and_recommendations"]["limitations"]],
                           "ethical_considerations": card["ethical_considerations"]},
    }


def validate_mct(document: dict, cards_dir: Path) -> None:
    import jsonschema

    schema = json.loads((cards_dir / "mct_model_card.schema.json").read_text())
    jsonschema.validate(document, schema)
