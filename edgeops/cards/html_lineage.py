"""The lineage section of card.html: the chain from declaration to card drawn as inline SVG, the table of digests
and ids (linked to the MLflow UI when one is given), other lineage records, the evidence manifest and the software
versions.
"""

from __future__ import annotations

from typing import Any

from edgeops.cards.html_parts import _e, _generic, _link, _table, target_outcome
from edgeops.cards.render import lineage_rows


def _chain_svg(card: dict[str, Any]) -> str:
    """The chain drawn: declaration -> data -> DP model -> each target's artifact -> its registered version -> card."""
    lineage = card.get("lineage", {})
    targets = [t for t in card["targets"]]
    lanes = max(1, len(targets))
    lane_h, box_h, box_w = 46, 36, 158
    height = lanes * lane_h + 34
    mid = 24 + (lanes * lane_h) / 2 - box_h / 2
    columns = [14, 190, 366, 542, 718, 894]

    def box(x: float, y: float, title: Any, detail: Any, anchor: str | None = None, state: Any = None) -> str:
        colour = {"failed": "#cf222e", "not measured": "#9a6700", "passed": "#1a7f37"}.get(state, "#57606a")
        inner = (
            f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="6" fill="#f6f8fa" stroke="{colour}" '
            'stroke-width="1.5"/>'
            f'<text class="title" x="{x + 8}" y="{y + 15}">{_e(title)}</text><text x="{x + 8}" '
            f'y="{y + 29}">{_e(detail)}</text>'
        )
        return f'<a href="#{anchor}">{inner}</a>' if anchor else inner

    def arrow(x1: float, y1: float, x2: float, y2: float) -> str:
        return (
            f'<path d="M{x1},{y1} C{(x1 + x2) / 2},{y1} {(x1 + x2) / 2},{y2} {x2 - 6},{y2}" fill="none" '
            'stroke="#57606a" marker-end="url(#arrow)"/>'
        )

    def short(digest: str | None) -> str:
        return (digest or "")[:16]

    parts = [
        '<defs><marker id="arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" orient="auto">'
        '<path d="M0,0 L8,4 L0,8 z" fill="#57606a"/></marker></defs>'
    ]
    for x, text in zip(
        columns, ("declaration", "data splits", "DP model", "target artifacts", "registry", "card"), strict=False
    ):
        parts.append(f'<text class="title" x="{x}" y="14" fill="#57606a">{text}</text>')
    parts.append(box(columns[0], mid, "spec sha256", short(lineage.get("spec_sha256")), "lineage-table"))
    parts.append(
        box(
            columns[1],
            mid,
            "combined digest",
            short(lineage.get("dataset_digests", {}).get("combined")),
            "lineage-table",
        )
    )
    parts.append(box(columns[2], mid, "weights sha256", short(lineage.get("weights_sha256")), "lineage-table"))
    parts.append(box(columns[5], mid, "card", card.get("card_id", ""), "summary"))
    parts.append(arrow(columns[0] + box_w, mid + box_h / 2, columns[1], mid + box_h / 2))
    parts.append(arrow(columns[1] + box_w, mid + box_h / 2, columns[2], mid + box_h / 2))
    for index, target in enumerate(targets):
        y = 24 + index * lane_h + (lane_h - box_h) / 2
        outcome, _ = target_outcome(target)
        registered = lineage.get("registered_models", {}).get(target["name"]) or {}
        parts.append(
            box(
                columns[3],
                y,
                target["name"],
                short(target.get("sha256")) or "not built",
                f"target-{target['name']}",
                outcome,
            )
        )
        parts.append(
            box(
                columns[4],
                y,
                registered.get("name") or "not registered",
                f"version {registered['version']}" if registered.get("version") else "-",
                "lineage-table",
            )
        )
        parts.append(arrow(columns[2] + box_w, mid + box_h / 2, columns[3], y + box_h / 2))
        parts.append(arrow(columns[3] + box_w, y + box_h / 2, columns[4], y + box_h / 2))
        parts.append(arrow(columns[4] + box_w, y + box_h / 2, columns[5], mid + box_h / 2))
    return (
        f'<svg class="chain" role="img" aria-label="lineage chain" viewBox="0 0 1060 {height}" xmlns="http://www.w3.org/2000/svg">'
        + "".join(parts)
        + "</svg>"
    )


def _lineage(card: dict[str, Any], mlflow_ui: str | None) -> str:
    rows = [
        [_e(what), _e(kind), _link(url, f'<span class="digest">{_e(value)}</span>')]
        for what, kind, value, url in lineage_rows(card, mlflow_ui)
    ]
    software = card.get("lineage", {}).get("software", {})
    extra = {
        k: v
        for k, v in card.get("lineage", {}).items()
        if k
        not in {
            "dataset_digests",
            "mlflow_runs",
            "registered_models",
            "dagster_run_id",
            "weights_sha256",
            "spec_sha256",
            "artifact_sha256",
            "software",
        }
    }
    note = (
        f'<p class="why">Links open the MLflow UI at {_e(mlflow_ui)} (<code>make ui</code>); the card itself fetches '
        "nothing.</p>"
        if mlflow_ui
        else ""
    )
    manifest = [
        [
            _e(item.get("kind")),
            f'<span class="digest">{_e(item.get("path"))}</span>',
            f'<span class="digest">{_e(item.get("sha256"))}</span>',
            _link(
                f"{mlflow_ui}/#/runs/{item['mlflow_run_id']}" if mlflow_ui and item.get("mlflow_run_id") else None,
                _e(item.get("mlflow_run_id")),
            ),
        ]
        for item in card.get("evidence_manifest", [])
    ]
    return (
        "<figure>"
        + _chain_svg(card)
        + "</figure>"
        + note
        + f'<div id="lineage-table">{_table(["what", "kind", "digest or id"], rows)}</div>'
        + (f"<h3>Other lineage records</h3>{_generic(extra)}" if extra else "")
        + "<h3>Evidence manifest (re-hashed by card verify)</h3>"
        + _table(["kind", "path", "sha256", "MLflow run"], manifest)
        + "<h3>Software</h3>"
        + _table(["package", "version"], [[_e(k), _e(v)] for k, v in software.items()])
    )
