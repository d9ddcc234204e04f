"""The card as one self-contained HTML page (card.html).

Built from the card document itself (not from the Markdown), so no Markdown syntax reaches the page. Sections the
renderer knows get a designed layout; any other top-level section (or sub-section of privacy) is rendered
generically, so a section added to the card data appears without a change here.

This module assembles the page (header, summary, sections in order, unknown sections); its parts live beside it:
html_style (the CSS), html_parts (escaping, formats, chips, tables, the generic renderer, target_outcome),
html_sections (the designed sections) and html_lineage (the chain SVG and the lineage tables). Their names stay
importable from here, as before the split.
"""

from __future__ import annotations

from typing import Any

from edgeops.cards.html_lineage import _chain_svg as _chain_svg
from edgeops.cards.html_lineage import _lineage
from edgeops.cards.html_parts import ACRONYMS as ACRONYMS
from edgeops.cards.html_parts import _chip, _cited, _e, _generic, _num, _pct, _table, _title, target_outcome
from edgeops.cards.html_parts import _link as _link
from edgeops.cards.html_sections import _metrics, _nist, _per_class, _privacy, _robustness, _targets
from edgeops.cards.html_style import STYLE

KNOWN_SECTIONS = {
    "schema_version",
    "card_id",
    "pipeline",
    "version",
    "generated_at",
    "model_details",
    "intended_use",
    "factors",
    "metrics",
    "evaluation_data",
    "training_data",
    "data_validation",
    "quantitative_analyses",
    "privacy",
    "targets",
    "energy",
    "robustness",
    "drift",
    "ethical_considerations",
    "caveats_and_recommendations",
    "lineage",
    "review",
    "attestations",
    "nist_ai_rmf",
    "nist_summary",
    "compliance_claim",
    "evidence_manifest",
    "mlflow_run_id",
    "signature_fingerprint",
}


OUTCOMES = ("passed", "failed", "not measured")


def review_state(card: dict[str, Any], history: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The review as of the signed history (card.json itself is signed before any review, so it always says pending)."""
    reviews = [entry for entry in (history or []) if entry.get("kind") == "review"]
    if not reviews:
        return {
            "status": card.get("review", {}).get("status", "pending"),
            "gates": card.get("review", {}).get("gates", []),
        }
    last = reviews[-1]
    return {
        "status": "approved" if last.get("decision") == "approve" else "rejected",
        "reviewer": last.get("reviewer"),
        "at": last.get("at"),
        "comment": last.get("comment"),
        "reviews": len(reviews),
        "gates": card.get("review", {}).get("gates", []),
    }


def _summary(card: dict[str, Any], review: dict[str, Any]) -> str:
    privacy = card["privacy"]["dp_statement"]
    uses = card["intended_use"].get("primary_uses") or []
    out_of_scope = card["intended_use"].get("out_of_scope") or []
    purpose = [f"<p>{_e(card['model_details'].get('overview'))}</p>"]
    purpose.append(
        "<p><b>Intended use:</b> "
        + (
            "; ".join(_e(u) for u in uses)
            if uses
            else '<span class="why">not declared (card.intended_use in the declaration)</span>'
        )
        + "</p>"
    )
    if out_of_scope:
        purpose.append("<p><b>Out of scope:</b> " + "; ".join(_e(u) for u in out_of_scope) + "</p>")
    dp = card["metrics"]["dp_model"]
    guarantee = [
        f"<p>{_e(privacy['text'])}</p>",
        f"<p>epsilon = {_cited(privacy['epsilon'], _num(privacy['epsilon']))}, delta = {_e(privacy['delta'])} "
        f"({_e(privacy['accountant'])} accountant; unit: {_e(privacy.get('unit'))}); independent re-derivation: "
        f"{_e(card['privacy'].get('rederivation', {}).get('summary', 'not run'))}</p>",
        f"<p>DP model test accuracy {_cited(dp['test_accuracy'], _pct(dp['test_accuracy']))} on "
        f"{_e(card['evaluation_data']['rows'])} "
        f"held-out rows.</p>",
    ]
    rows = []
    counts = {o: 0 for o in OUTCOMES}
    for target in card["targets"]:
        outcome, reasons = target_outcome(target)
        counts[outcome] += 1
        shown = reasons if outcome != "passed" else []
        rows.append(
            [
                f'<a href="#target-{_e(target["name"])}">{_e(target["name"])}</a>',
                f"{_e(target.get('runtime'))} on {_e(target['device'])}",
                _chip(outcome),
                "<br>".join(f'<span class="why">{_e(r)}</span>' for r in shown[:4])
                or '<span class="why">every check passed</span>',
            ]
        )
    status = review["status"]
    who = f" by {_e(review['reviewer'])} on {_e(review['at'])}" if review.get("reviewer") else ""
    comment = f'<p class="why">"{_e(review["comment"])}"</p>' if review.get("comment") else ""
    gates = "".join(f"<li>{_e(g)}</li>" for g in review.get("gates", []))
    return (
        f'<section class="summary" id="summary"><h2>Summary</h2><div class="grid">'
        f"<div><h3>What it is for</h3>{''.join(purpose)}</div>"
        f"<div><h3>Privacy guarantee</h3>{''.join(guarantee)}</div></div>"
        f"<h3>Targets: {counts['passed']} passed, {counts['failed']} failed, {counts['not measured']} not measured</h3>"
        + _table(["target", "runtime and device", "outcome", "why"], rows)
        + f'<h3>Review</h3><p>{_chip(status)}{who}</p>{comment}<p class="why">Release '
        f"needs:</p><ul>{gates}</ul></section>"
    )


def to_html(
    card: dict[str, Any], chart: bytes | None, history: list[dict[str, Any]] | None = None, mlflow_ui: str | None = None
) -> str:
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
        (
            "Data",
            _generic(
                {
                    "training data": card.get("training_data"),
                    "evaluation data": card.get("evaluation_data"),
                    "factors": card.get("factors"),
                }
            ),
        ),
        ("Data validation", _generic(card["data_validation"]["checks"])),
        ("Monitoring", _generic(card.get("drift"))),
        ("Energy", _generic(card.get("energy"))),
        (
            "Limitations (derived from the numbers)",
            "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in card["caveats_and_recommendations"]["limitations"]) + "</ul>",
        ),
        ("Recommendations", _generic(card["caveats_and_recommendations"].get("recommendations", []))),
        ("Ethical considerations", _generic(card.get("ethical_considerations", []))),
    ]
    if review.get("reviews"):
        sections.append(
            (
                "Review history",
                f"<p>{_e(review['reviews'])} signed review(s) in history.json; the latest: {_e(review['status'])}.</p>",
            )
        )
    if card.get("attestations"):
        sections.append(("Attestations", _generic(card["attestations"])))
    for key, value in card.items():  # sections this renderer does not know (added to the card data later)
        if key not in KNOWN_SECTIONS:
            sections.append((_title(key), _generic(value)))
    sections += [("NIST AI RMF 1.0", _nist(card)), ("Lineage", _lineage(card, mlflow_ui))]
    body = "".join(
        f'<section id="{_e(title.lower().split(" (")[0].replace(" ", "-"))}"><h2>{_e(title)}</h2>{content}</section>'
        for title, content in sections
    )
    header = (
        f"<header><h1>Model card: {_e(card['pipeline'])} {_e(card['version'])}</h1>"
        f'<p class="meta">card {_e(card["card_id"])} · generated {_e(card["generated_at"])} · schema '
        f"{_e(card['schema_version'])} · "
        f"owners {_e(', '.join(details.get('owners', [])))} · license {_e(details.get('license'))} · signed by key "
        f"{_e(card.get('signature_fingerprint', 'unsigned'))}</p></header>"
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Model card {_e(card["card_id"])}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
        f"<body>{header}{_summary(card, review)}{body}</body></html>"
    )
