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
             *([f"- {u}" for u in card["intended_use"]["primary_uses"]] or ["Not declared (`card.intended_use` in the declaration)."]),
             *(["", "Out of scope:", *[f"- {u}" for u in card["intended_use"]["out_of_scope"]]] if card["intended_use"]["out_of_scope"] else []),
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
    lines += ["", "## Lineage", "", "| what | kind | digest or id |", "|---|---|---|"]
    lines += [f"| {what} | {kind} | `{value}` |" for what, kind, value, _ in lineage_rows(card, None)]
    lines += ["", "Software: " + ", ".join(f"{k} {v}" for k, v in card["lineage"].get("software", {}).items()), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ HTML
# Built from the card document itself (not from the Markdown), so no Markdown syntax reaches the page. Sections the
# renderer knows get a designed layout; any other top-level section (or sub-section of privacy) is rendered
# generically, so a section added to the card data appears without a change here.

KNOWN_SECTIONS = {"schema_version", "card_id", "pipeline", "version", "generated_at", "model_details", "intended_use", "factors", "metrics",
                  "evaluation_data", "training_data", "data_validation", "quantitative_analyses", "privacy", "targets", "energy",
                  "robustness", "drift", "ethical_considerations", "caveats_and_recommendations", "lineage", "review", "attestations",
                  "nist_ai_rmf", "nist_summary", "compliance_claim", "evidence_manifest", "mlflow_run_id", "signature_fingerprint"}
OUTCOMES = ("passed", "failed", "not measured")

STYLE = """
:root{--ok:#1a7f37;--bad:#cf222e;--nm:#9a6700;--muted:#57606a;--line:#d0d7de}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1120px;margin:1.5em auto;padding:0 1em;color:#1f2328;
 font-size:14px;line-height:1.45}
h1{font-size:24px;margin:0 0 .2em}h2{font-size:18px;margin:1.6em 0 .5em;padding-bottom:.2em;border-bottom:1px solid var(--line)}
h3{font-size:15px;margin:1.1em 0 .4em}
.meta{color:var(--muted);font-size:12px}
table{border-collapse:collapse;margin:.5em 0 1em;width:100%}
th,td{border:1px solid var(--line);padding:3px 6px;font-size:12.5px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
code,.digest{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:11.5px}
.digest{word-break:break-all}
.chip{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600;border:1px solid;white-space:nowrap}
.chip.passed,.chip.approved{color:var(--ok);border-color:var(--ok);background:#dafbe1}
.chip.failed,.chip.rejected{color:var(--bad);border-color:var(--bad);background:#ffebe9}
.chip.not-measured,.chip.pending{color:var(--nm);border-color:var(--nm);background:#fff8c5}
.summary{border:2px solid #1f2328;border-radius:8px;padding:12px 16px;margin:1em 0}
.summary h2{margin-top:.2em;border:0}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:6px 24px}
.grid>div>h3{margin-top:.3em}
.why{color:var(--muted);font-size:12px}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:.4em 0}
dl.kv dt{font-weight:600}dl.kv dd{margin:0}
ul{margin:.3em 0 .6em;padding-left:1.3em}
figure{margin:.5em 0}
img.chart{max-width:600px;width:100%}
svg.chain{width:100%;height:auto}
svg.chain text{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11px}
svg.chain .title{font-family:system-ui,Helvetica,Arial,sans-serif;font-size:12px;font-weight:600}
a{color:#0969da}
@page{size:A4;margin:14mm 12mm 16mm}
@media print{
 body{max-width:none;margin:0;padding:0;font-size:10pt}
 .summary{break-after:page;border-width:1.5px}
 h2,h3{break-after:avoid}
 tr,td,th,.chip,dl.kv,figure,svg,li{break-inside:avoid}
 thead{display:table-header-group}
 section{break-inside:auto}
 a{color:inherit;text-decoration:none}
 th,td{font-size:8.5pt}
}
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _num(item, digits: int = 4) -> str:
    value = item["value"] if isinstance(item, dict) and "value" in item else item
    if value is None:
        return "not measured"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"
    return str(value)


def _pct(item) -> str:
    value = item["value"] if isinstance(item, dict) and "value" in item else item
    return "not measured" if value is None else f"{100 * float(value):.2f}%"


ACRONYMS = {"dp": "DP", "mlflow": "MLflow", "nist": "NIST", "onnx": "ONNX", "id": "ID", "auc": "AUC", "tpr": "TPR", "fpr": "FPR",
            "ece": "ECE", "mia": "MIA", "sha256": "sha256", "kb": "KB"}


def _title(key: str) -> str:
    words = key.replace("_", " ").strip().split(" ")
    words = [ACRONYMS.get(w.lower(), w) for w in words]
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]]) if words and words[0] else key


def _chip(outcome: str) -> str:
    return f'<span class="chip {outcome.replace(" ", "-")}">{_e(outcome)}</span>'


def _cited(item, text: str) -> str:
    """A number with the MLflow run and metric it came from, shown on hover and in print as a footnote-free title."""
    if isinstance(item, dict) and item.get("mlflow_run_id"):
        return f'<span title="MLflow run {_e(item["mlflow_run_id"])}, metric {_e(item.get("metric"))}">{_e(text)}</span>'
    return _e(text)


def target_outcome(target: dict) -> tuple[str, list[str]]:
    """One word per target, from its checks: failed if any failed, else not measured if any check (or the benchmark)
    was not measured, else passed. With the reasons behind it."""
    checks = target.get("checks") or {}
    failed = [f"{name}: {c.get('detail', '')}" for name, c in checks.items() if c.get("status") == "failed"]
    if failed:
        return "failed", failed
    unmeasured = [f"{name}: {c.get('detail', '')}" for name, c in checks.items() if c.get("status") == "not measured"]
    if target.get("latency_p95_ms") is None and target.get("not_measured_reason"):
        unmeasured.append(f"latency and memory: {target['not_measured_reason']}")
    if unmeasured:
        return "not measured", unmeasured
    return "passed", [f"{name}: {c.get('detail', '')}" for name, c in checks.items()]


def review_state(card: dict, history: list[dict] | None) -> dict:
    """The review as of the signed history (card.json itself is signed before any review, so it always says pending)."""
    reviews = [entry for entry in (history or []) if entry.get("kind") == "review"]
    if not reviews:
        return {"status": card.get("review", {}).get("status", "pending"), "gates": card.get("review", {}).get("gates", [])}
    last = reviews[-1]
    return {"status": "approved" if last.get("decision") == "approve" else "rejected", "reviewer": last.get("reviewer"), "at": last.get("at"),
            "comment": last.get("comment"), "reviews": len(reviews), "gates": card.get("review", {}).get("gates", [])}


def _generic(value, depth: int = 0) -> str:
    """Any card value as HTML: cited numbers, key/value lists, tables for lists of records, lists, text."""
    if value is None:
        return '<span class="why">none</span>'
    if isinstance(value, dict) and {"value", "mlflow_run_id"} <= set(value):
        return _cited(value, _num(value))
    if isinstance(value, dict):
        if not value:
            return '<span class="why">none</span>'
        if depth >= 3:
            return f"<code>{_e(json.dumps(value, default=str))}</code>"
        return '<dl class="kv">' + "".join(f"<dt>{_e(_title(str(k)))}</dt><dd>{_generic(v, depth + 1)}</dd>" for k, v in value.items()) + "</dl>"
    if isinstance(value, list):
        if not value:
            return '<span class="why">none</span>'
        if all(isinstance(v, dict) for v in value):
            columns = list(dict.fromkeys(k for v in value for k in v))
            head = "".join(f"<th>{_e(_title(str(c)))}</th>" for c in columns)
            rows = "".join("<tr>" + "".join(f"<td>{_generic(v.get(c), depth + 1)}</td>" for c in columns) + "</tr>" for v in value)
            return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
        if all(not isinstance(v, (dict, list)) for v in value) and sum(len(str(v)) for v in value) < 120:
            return _e(", ".join(str(v) for v in value))
        return "<ul>" + "".join(f"<li>{_generic(v, depth + 1)}</li>" for v in value) + "</ul>"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return _e(f"{value:.4g}")
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return f'<span class="digest">{_e(value)}</span>'
    return _e(value)


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    """Cells are HTML already (escape before)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _summary(card: dict, review: dict) -> str:
    privacy = card["privacy"]["dp_statement"]
    uses = card["intended_use"].get("primary_uses") or []
    out_of_scope = card["intended_use"].get("out_of_scope") or []
    purpose = [f"<p>{_e(card['model_details'].get('overview'))}</p>"]
    purpose.append("<p><b>Intended use:</b> " + ("; ".join(_e(u) for u in uses) if uses else
                                                 '<span class="why">not declared (card.intended_use in the declaration)</span>') + "</p>")
    if out_of_scope:
        purpose.append("<p><b>Out of scope:</b> " + "; ".join(_e(u) for u in out_of_scope) + "</p>")
    dp = card["metrics"]["dp_model"]
    guarantee = [f"<p>{_e(privacy['text'])}</p>",
                 f'<p>epsilon = {_cited(privacy["epsilon"], _num(privacy["epsilon"]))}, delta = {_e(privacy["delta"])} '
                 f"({_e(privacy['accountant'])} accountant; unit: {_e(privacy.get('unit'))}); independent re-derivation: "
                 f"{_e(card['privacy'].get('rederivation', {}).get('summary', 'not run'))}</p>",
                 f"<p>DP model test accuracy {_cited(dp['test_accuracy'], _pct(dp['test_accuracy']))} on {_e(card['evaluation_data']['rows'])} "
                 f"held-out rows.</p>"]
    rows = []
    counts = {o: 0 for o in OUTCOMES}
    for target in card["targets"]:
        outcome, reasons = target_outcome(target)
        counts[outcome] += 1
        shown = reasons if outcome != "passed" else []
        rows.append([f'<a href="#target-{_e(target["name"])}">{_e(target["name"])}</a>', f"{_e(target.get('runtime'))} on {_e(target['device'])}",
                     _chip(outcome), "<br>".join(f'<span class="why">{_e(r)}</span>' for r in shown[:4]) or '<span class="why">every check passed</span>'])
    status = review["status"]
    who = f" by {_e(review['reviewer'])} on {_e(review['at'])}" if review.get("reviewer") else ""
    comment = f'<p class="why">"{_e(review["comment"])}"</p>' if review.get("comment") else ""
    gates = "".join(f"<li>{_e(g)}</li>" for g in review.get("gates", []))
    return (f'<section class="summary" id="summary"><h2>Summary</h2><div class="grid">'
            f'<div><h3>What it is for</h3>{"".join(purpose)}</div>'
            f'<div><h3>Privacy guarantee</h3>{"".join(guarantee)}</div></div>'
            f"<h3>Targets: {counts['passed']} passed, {counts['failed']} failed, {counts['not measured']} not measured</h3>"
            + _table(["target", "runtime and device", "outcome", "why"], rows) +
            f"<h3>Review</h3><p>{_chip(status)}{who}</p>{comment}<p class=\"why\">Release needs:</p><ul>{gates}</ul></section>")


def _privacy(card: dict) -> str:
    privacy = card["privacy"]
    statement = privacy["dp_statement"]
    parts = [f"<p>{_e(statement['text'])}</p>",
             _table(["accountant", "sampling", "clipping", "noise multiplier", "steps", "unit"],
                    [[_e(statement.get("accountant")), _e(statement.get("sampling")), _e(statement.get("clipping")),
                      _e(_num(statement.get("noise_multiplier"))), _e(statement.get("steps")), _e(statement.get("unit"))]])]
    for key, value in privacy.items():
        if key == "dp_statement":
            continue
        parts.append(f"<h3>{_e(_title(key))}</h3>" + (_e(value["summary"]) if isinstance(value, dict) and "summary" in value and key == "rederivation"
                                                      else _generic(value)))
    return "".join(parts)


def _metrics(card: dict) -> str:
    metrics = card["metrics"]
    rows = [["DP model (released)", _cited(metrics["dp_model"]["test_accuracy"], _pct(metrics["dp_model"]["test_accuracy"]))]]
    baseline = metrics.get("dp_baseline", {})
    rows.append([f"DP baseline ({_e(baseline.get('model', 'skipped'))})",
                 _cited(baseline.get("test_accuracy"), _pct(baseline.get("test_accuracy"))) if baseline.get("test_accuracy") else _e(baseline.get("skipped") or "skipped")])
    rows.append(["non-private reference (never released)", _cited(metrics["nonprivate_reference"]["test_accuracy"], _pct(metrics["nonprivate_reference"]["test_accuracy"]))])
    return (_table(["model", "test accuracy"], rows) +
            f"<p>Expected calibration error of the DP model: {_cited(metrics['dp_model']['test_ece'], _num(metrics['dp_model']['test_ece']))}. "
            f"Cost of privacy against the non-private reference: {_e(metrics.get('utility_gap_points'))} points.</p>")


def _targets(card: dict, chart: bytes | None) -> str:
    rows, checks = [], []
    for t in card["targets"]:
        outcome, _ = target_outcome(t)
        recipe = " + ".join(step["step"] for step in t.get("recipe", [])) or "float"
        size = t.get("size_bytes")
        energy = t.get("energy", "not measured")
        rows.append([f'<b id="target-{_e(t["name"])}">{_e(t["name"])}</b><br>{_chip(outcome)}', f"{_e(t.get('runtime'))}<br>{_e(t['device'])}", _e(recipe),
                     _cited(size, f"{size['value'] / 1024:.1f} KB") if size else "not built",
                     _cited(t.get("accuracy"), _pct(t.get("accuracy"))) + (f"<br><span class=\"why\">drop {_e(_num(t.get('accuracy_drop_points')))} pt</span>"
                                                                           if t.get("accuracy_drop_points") is not None else ""),
                     _cited(t.get("latency_p50_ms"), _num(t.get("latency_p50_ms"))) + " / " + _cited(t.get("latency_p95_ms"), _num(t.get("latency_p95_ms"))),
                     _cited(t.get("memory_kb"), _num(t.get("memory_kb"))), _e(energy if energy == "measured" else "not measured")])
        for name, check in t["checks"].items():
            checks.append([_e(t["name"]), _e(name), _chip(check["status"]), _e(check.get("detail"))])
        if t.get("latency_p95_ms") is None and t.get("not_measured_reason"):
            checks.append([_e(t["name"]), "latency and memory", _chip("not measured"), _e(t["not_measured_reason"])])
    parts = [_table(["target", "runtime, device", "recipe", "size", "accuracy", "latency p50 / p95 (ms)", "memory (KB)", "energy"], rows)]
    if not (card.get("energy") or {}).get("measured", True):
        parts.append(f'<p class="why">Energy not measured: {_e(card["energy"].get("reason"))}</p>')
    parts.append("<h3>Checks per target</h3>" + _table(["target", "check", "outcome", "measured against the budget"], checks))
    if chart:
        parts.append(f'<figure><img class="chart" alt="Pareto chart: accuracy against latency per target" '
                     f'src="data:image/png;base64,{base64.b64encode(chart).decode()}"></figure>')
    return "".join(parts)


def _robustness(card: dict) -> str:
    adversarial = (card.get("robustness") or {}).get("adversarial")
    if not adversarial:
        return '<p class="why">Not measured for this version.</p>'
    budgets = [b["epsilon_fraction_of_span"] for b in next(iter(adversarial["per_target"].values()))["budgets"]]
    rows = [[_e(name), _cited(entry["clean_accuracy"], _num(entry["clean_accuracy"], 3))] +
            [cell for b in entry["budgets"] for cell in (_cited(b["fgsm_accuracy"], _num(b["fgsm_accuracy"], 3)), _cited(b["pgd_accuracy"], _num(b["pgd_accuracy"], 3)))]
            for name, entry in adversarial["per_target"].items()]
    return (f"<p>{_e(adversarial['method'])}; {_e(adversarial['rows'])} test rows. Budgets are fractions of each feature's span.</p>" +
            _table(["target", "clean"] + [h for e in budgets for h in (f"FGSM {e:g}", f"PGD {e:g}")], rows))


def _per_class(card: dict) -> str:
    per_class = card["quantitative_analyses"]["per_class"]
    models = list(per_class)
    classes = list(per_class["dp_model"])
    return _table(["class"] + [_e(m) for m in models], [[_e(c)] + [_e(_num((per_class[m] or {}).get(c), 3)) for m in models] for c in classes])


def _nist(card: dict) -> str:
    rows = []
    for item in card["nist_ai_rmf"]:
        reason = ", ".join(item["evidence"]) or item["why"]
        if item.get("attestations"):
            reason += " · attested by " + "; ".join(f"{a['signer']} ({a['role']}, {a['date']})" for a in item["attestations"])
        rows.append([_e(item["id"]), _e(item["classification"]), _e(reason)])
    summary = ", ".join(f"{_e(k)}: {_e(v)}" for k, v in card["nist_summary"].items())
    return f"<p>{_e(card['compliance_claim'])}.</p><p>{summary}</p>" + _table(["id", "classification", "evidence / reason"], rows)


def _link(url: str | None, text: str) -> str:
    return f'<a href="{_e(url)}">{text}</a>' if url else text


def lineage_rows(card: dict, mlflow_ui: str | None) -> list[tuple[str, str, str, str | None]]:
    """(what, kind, digest or id, link) for every link of the chain the card records: declaration, data splits, DP
    model, each target's artifact and registered version, MLflow runs, the Dagster run."""
    lineage = card.get("lineage", {})
    run_url = (lambda run: f"{mlflow_ui}/#/runs/{run}") if mlflow_ui else (lambda run: None)
    runs = lineage.get("mlflow_runs", {})
    rows = [("declaration", "sha256", lineage.get("spec_sha256", ""), None)]
    for split, digest in lineage.get("dataset_digests", {}).items():
        rows.append((f"dataset: {split}", "sha256", digest, None))
    rows.append(("DP model weights", "sha256", lineage.get("weights_sha256", ""), run_url(runs["dp_model"]) if runs.get("dp_model") else None))
    for name, digest in lineage.get("artifact_sha256", {}).items():
        stage = "dp_model" if name.startswith("dp_model.") else f"compressed_model[{name.rsplit('.', 1)[0]}]"
        rows.append((f"file {name}", "sha256", digest, run_url(runs[stage]) if runs.get(stage) else None))
    for target, registered in lineage.get("registered_models", {}).items():
        if registered.get("name"):
            url = f"{mlflow_ui}/#/models/{registered['name']}/versions/{registered['version']}" if mlflow_ui else None
            rows.append((f"registered version ({target})", "MLflow model version", f"{registered['name']} v{registered['version']}", url))
    for stage, run in runs.items():
        if run:
            rows.append((f"stage run {stage}", "MLflow run", run, run_url(run)))
    if lineage.get("dagster_run_id"):
        rows.append(("card's Dagster run", "Dagster run", lineage["dagster_run_id"], None))
    if card.get("mlflow_run_id"):
        rows.append(("card run", "MLflow run", card["mlflow_run_id"], run_url(card["mlflow_run_id"])))
    return rows


def _chain_svg(card: dict) -> str:
    """The chain drawn: declaration -> data -> DP model -> each target's artifact -> its registered version -> card."""
    lineage = card.get("lineage", {})
    targets = [t for t in card["targets"]]
    lanes = max(1, len(targets))
    lane_h, box_h, box_w = 46, 36, 158
    height = lanes * lane_h + 34
    mid = 24 + (lanes * lane_h) / 2 - box_h / 2
    columns = [14, 190, 366, 542, 718, 894]

    def box(x, y, title, detail, anchor=None, state=None):
        colour = {"failed": "#cf222e", "not measured": "#9a6700", "passed": "#1a7f37"}.get(state, "#57606a")
        inner = (f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="6" fill="#f6f8fa" stroke="{colour}" stroke-width="1.5"/>'
                 f'<text class="title" x="{x + 8}" y="{y + 15}">{_e(title)}</text><text x="{x + 8}" y="{y + 29}">{_e(detail)}</text>')
        return f'<a href="#{anchor}">{inner}</a>' if anchor else inner

    def arrow(x1, y1, x2, y2):
        return f'<path d="M{x1},{y1} C{(x1 + x2) / 2},{y1} {(x1 + x2) / 2},{y2} {x2 - 6},{y2}" fill="none" stroke="#57606a" marker-end="url(#arrow)"/>'

    def short(digest):
        return (digest or "")[:16]

    parts = ['<defs><marker id="arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" orient="auto">'
             '<path d="M0,0 L8,4 L0,8 z" fill="#57606a"/></marker></defs>']
    for x, text in zip(columns, ("declaration", "data splits", "DP model", "target artifacts", "registry", "card")):
        parts.append(f'<text class="title" x="{x}" y="14" fill="#57606a">{text}</text>')
    parts.append(box(columns[0], mid, "spec sha256", short(lineage.get("spec_sha256")), "lineage-table"))
    parts.append(box(columns[1], mid, "combined digest", short(lineage.get("dataset_digests", {}).get("combined")), "lineage-table"))
    parts.append(box(columns[2], mid, "weights sha256", short(lineage.get("weights_sha256")), "lineage-table"))
    parts.append(box(columns[5], mid, "card", card.get("card_id", ""), "summary"))
    parts.append(arrow(columns[0] + box_w, mid + box_h / 2, columns[1], mid + box_h / 2))
    parts.append(arrow(columns[1] + box_w, mid + box_h / 2, columns[2], mid + box_h / 2))
    for index, target in enumerate(targets):
        y = 24 + index * lane_h + (lane_h - box_h) / 2
        outcome, _ = target_outcome(target)
        registered = (lineage.get("registered_models", {}).get(target["name"]) or {})
        parts.append(box(columns[3], y, target["name"], short(target.get("sha256")) or "not built", f"target-{target['name']}", outcome))
        parts.append(box(columns[4], y, registered.get("name") or "not registered",
                         f"version {registered['version']}" if registered.get("version") else "-", "lineage-table"))
        parts.append(arrow(columns[2] + box_w, mid + box_h / 2, columns[3], y + box_h / 2))
        parts.append(arrow(columns[3] + box_w, y + box_h / 2, columns[4], y + box_h / 2))
        parts.append(arrow(columns[4] + box_w, y + box_h / 2, columns[5], mid + box_h / 2))
    return (f'<svg class="chain" role="img" aria-label="lineage chain" viewBox="0 0 1060 {height}" xmlns="http://www.w3.org/2000/svg">'
            + "".join(parts) + "</svg>")


def _lineage(card: dict, mlflow_ui: str | None) -> str:
    rows = [[_e(what), _e(kind), _link(url, f'<span class="digest">{_e(value)}</span>')] for what, kind, value, url in lineage_rows(card, mlflow_ui)]
    software = card.get("lineage", {}).get("software", {})
    extra = {k: v for k, v in card.get("lineage", {}).items()
             if k not in {"dataset_digests", "mlflow_runs", "registered_models", "dagster_run_id", "weights_sha256", "spec_sha256", "artifact_sha256", "software"}}
    note = (f'<p class="why">Links open the MLflow UI at {_e(mlflow_ui)} (<code>make ui</code>); the card itself fetches nothing.</p>' if mlflow_ui else "")
    manifest = [[_e(item.get("kind")), f'<span class="digest">{_e(item.get("path"))}</span>', f'<span class="digest">{_e(item.get("sha256"))}</span>',
                 _link(f"{mlflow_ui}/#/runs/{item['mlflow_run_id']}" if mlflow_ui and item.get("mlflow_run_id") else None, _e(item.get("mlflow_run_id")))]
                for item in card.get("evidence_manifest", [])]
    return ("<figure>" + _chain_svg(card) + "</figure>" + note +
            f'<div id="lineage-table">{_table(["what", "kind", "digest or id"], rows)}</div>'
            + (f"<h3>Other lineage records</h3>{_generic(extra)}" if extra else "")
            + "<h3>Evidence manifest (re-hashed by card verify)</h3>" + _table(["kind", "path", "sha256", "MLflow run"], manifest)
            + "<h3>Software</h3>" + _table(["package", "version"], [[_e(k), _e(v)] for k, v in software.items()]))


def to_html(card: dict, chart: bytes | None, history: list[dict] | None = None, mlflow_ui: str | None = None) -> str:
    """Self-contained: no scripts, no external assets (the chart is a data URI, the chain inline SVG); links point to
    anchors in the page or to the MLflow UI, and are fetched only when followed. Prints to paginated PDF."""
    review = review_state(card, history)
    details = card["model_details"]
    sections = [
        ("Privacy", _privacy(card)),
        ("Metrics (test split)", _metrics(card)),
        ("Targets", _targets(card, chart)),
        ("Adversarial robustness", _robustness(card)),
        ("Per-class accuracy", _per_class(card)),
        ("Model details", _generic({k: v for k, v in details.items() if k != "overview"})),
        ("Data", _generic({"training data": card.get("training_data"), "evaluation data": card.get("evaluation_data"), "factors": card.get("factors")})),
        ("Data validation", _generic(card["data_validation"]["checks"])),
        ("Monitoring", _generic(card.get("drift"))),
        ("Energy", _generic(card.get("energy"))),
        ("Limitations (derived from the numbers)", "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in card["caveats_and_recommendations"]["limitations"]) + "</ul>"),
        ("Recommendations", _generic(card["caveats_and_recommendations"].get("recommendations", []))),
        ("Ethical considerations", _generic(card.get("ethical_considerations", []))),
    ]
    if review.get("reviews"):
        sections.append(("Review history", f"<p>{_e(review['reviews'])} signed review(s) in history.json; the latest: {_e(review['status'])}.</p>"))
    if card.get("attestations"):
        sections.append(("Attestations", _generic(card["attestations"])))
    for key, value in card.items():  # sections this renderer does not know (added to the card data later)
        if key not in KNOWN_SECTIONS:
            sections.append((_title(key), _generic(value)))
    sections += [("NIST AI RMF 1.0", _nist(card)), ("Lineage", _lineage(card, mlflow_ui))]
    body = "".join(f'<section id="{_e(title.lower().split(" (")[0].replace(" ", "-"))}"><h2>{_e(title)}</h2>{content}</section>' for title, content in sections)
    header = (f"<header><h1>Model card: {_e(card['pipeline'])} {_e(card['version'])}</h1>"
              f'<p class="meta">card {_e(card["card_id"])} · generated {_e(card["generated_at"])} · schema {_e(card["schema_version"])} · '
              f"owners {_e(', '.join(details.get('owners', [])))} · license {_e(details.get('license'))} · signed by key "
              f"{_e(card.get('signature_fingerprint', 'unsigned'))}</p></header>")
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Model card {_e(card['card_id'])}</title>"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{STYLE}</style></head>"
            f"<body>{header}{_summary(card, review)}{body}</body></html>")


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
