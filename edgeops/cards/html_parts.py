"""The building blocks of card.html that every section uses: escaping (`_e`), number and percentage formats, titles
from card keys (with ACRONYMS), outcome chips, numbers cited with their MLflow run and metric, tables, links, the
generic renderer for any card value, and `target_outcome` (one word per target, with its reasons).
"""

from __future__ import annotations

import html
import json
from typing import Any


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _num(item: Any, digits: int = 4) -> str:
    value = item["value"] if isinstance(item, dict) and "value" in item else item
    if value is None:
        return "not measured"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"
    return str(value)


def _pct(item: Any) -> str:
    value = item["value"] if isinstance(item, dict) and "value" in item else item
    return "not measured" if value is None else f"{100 * float(value):.2f}%"


ACRONYMS = {
    "dp": "DP",
    "mlflow": "MLflow",
    "nist": "NIST",
    "onnx": "ONNX",
    "id": "ID",
    "auc": "AUC",
    "tpr": "TPR",
    "fpr": "FPR",
    "ece": "ECE",
    "mia": "MIA",
    "sha256": "sha256",
    "kb": "KB",
}


def _title(key: str) -> str:
    words = key.replace("_", " ").strip().split(" ")
    words = [ACRONYMS.get(w.lower(), w) for w in words]
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]]) if words and words[0] else key


def _chip(outcome: str) -> str:
    return f'<span class="chip {outcome.replace(" ", "-")}">{_e(outcome)}</span>'


def _cited(item: Any, text: str) -> str:
    """A number with the MLflow run and metric it came from, shown on hover and in print as a footnote-free title."""
    if isinstance(item, dict) and item.get("mlflow_run_id"):
        return (
            f'<span title="MLflow run {_e(item["mlflow_run_id"])}, metric {_e(item.get("metric"))}">{_e(text)}</span>'
        )
    return _e(text)


def target_outcome(target: dict[str, Any]) -> tuple[str, list[str]]:
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


def _generic(value: Any, depth: int = 0) -> str:
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
        return (
            '<dl class="kv">'
            + "".join(f"<dt>{_e(_title(str(k)))}</dt><dd>{_generic(v, depth + 1)}</dd>" for k, v in value.items())
            + "</dl>"
        )
    if isinstance(value, list):
        if not value:
            return '<span class="why">none</span>'
        if all(isinstance(v, dict) for v in value):
            columns = list(dict.fromkeys(k for v in value for k in v))
            head = "".join(f"<th>{_e(_title(str(c)))}</th>" for c in columns)
            rows = "".join(
                "<tr>" + "".join(f"<td>{_generic(v.get(c), depth + 1)}</td>" for c in columns) + "</tr>" for v in value
            )
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


def _link(url: str | None, text: str) -> str:
    return f'<a href="{_e(url)}">{text}</a>' if url else text
