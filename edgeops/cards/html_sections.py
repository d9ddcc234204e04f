"""The designed sections of card.html, one renderer per card section: privacy (statement, guarantee per target,
ledger), metrics, targets (with their checks and the Pareto chart), adversarial robustness, per-class accuracy and
the NIST AI RMF classification. Each takes the card document and returns HTML.
"""

from __future__ import annotations

import base64
from typing import Any

from edgeops.cards.html_parts import _chip, _cited, _e, _generic, _num, _pct, _table, _title, target_outcome


def _privacy(card: dict[str, Any]) -> str:
    privacy = card["privacy"]
    statement = privacy["dp_statement"]
    parts = [
        f"<p>{_e(statement['text'])}</p>",
        _table(
            ["accountant", "sampling", "clipping", "noise multiplier", "steps", "unit"],
            [
                [
                    _e(statement.get("accountant")),
                    _e(statement.get("sampling")),
                    _e(statement.get("clipping")),
                    _e(_num(statement.get("noise_multiplier"))),
                    _e(statement.get("steps")),
                    _e(statement.get("unit")),
                ]
            ],
        ),
    ]
    guarantees = [t for t in card.get("targets", []) if t.get("guarantee")]
    if guarantees:
        parts.append(
            "<h3>Guarantee per target</h3>"
            + _table(
                ["target", "epsilon (basic sum)", "delta", "composed of", "PLD epsilon (same delta)"],
                [
                    [
                        _e(t["name"]),
                        _e(_num(t["guarantee"]["epsilon"], 3)),
                        _e(f"{t['guarantee']['delta']:g}"),
                        _e(
                            " + ".join(
                                f"{name} {part['epsilon']:.3f}" for name, part in t["guarantee"]["parts"].items()
                            )
                        ),
                        _e(
                            _num(t["guarantee"].get("pld_epsilon"), 3)
                            if t["guarantee"].get("pld_epsilon") is not None
                            else "-"
                        ),
                    ]
                    for t in guarantees
                ],
            )
        )
    ledger = privacy.get("ledger") or {}
    if "entries" in ledger:
        totals, pld = ledger["totals"], ledger.get("pld_composition")
        spent = f"({totals['epsilon']:g}, {totals['delta']:g})"
        budget = f"({totals['budget_epsilon']:g}, {totals['budget_delta']:g})"
        tighter = (
            f" PLD composition of every entry: epsilon {_num(pld['epsilon'], 3)} at delta {pld['delta']:g}."
            if pld
            else ""
        )
        parts.append(
            "<h3>Ledger</h3>"
            + f"<p>Spent {_e(spent)} of the declared {_e(budget)}; {_e(ledger['composition'])}.{_e(tighter)}</p>"
            + _table(
                ["entry", "mechanism", "status", "epsilon", "delta", "second accountant"],
                [
                    [
                        _e(e["id"]),
                        _e(e["mechanism"]),
                        _e(e["status"]),
                        _e(_num(e["epsilon"], 4)),
                        _e(f"{e['delta']:g}"),
                        _e(
                            f"{e['second_accountant']['method']}: {e['second_accountant']['epsilon']:.4g}"
                            if e.get("second_accountant")
                            else "-"
                        ),
                    ]
                    for e in ledger["entries"]
                ],
            )
        )
    for key, value in privacy.items():
        if key == "dp_statement" or (key == "ledger" and "entries" in value):
            continue
        parts.append(
            f"<h3>{_e(_title(key))}</h3>"
            + (
                _e(value["summary"])
                if isinstance(value, dict) and "summary" in value and key == "rederivation"
                else _generic(value)
            )
        )
    return "".join(parts)


def _metrics(card: dict[str, Any]) -> str:
    metrics = card["metrics"]
    rows = [
        [
            "DP model (released)",
            _cited(metrics["dp_model"]["test_accuracy"], _pct(metrics["dp_model"]["test_accuracy"])),
        ]
    ]
    baseline = metrics.get("dp_baseline", {})
    rows.append(
        [
            f"DP baseline ({_e(baseline.get('model', 'skipped'))})",
            _cited(baseline.get("test_accuracy"), _pct(baseline.get("test_accuracy")))
            if baseline.get("test_accuracy")
            else _e(baseline.get("skipped") or "skipped"),
        ]
    )
    rows.append(
        [
            "non-private reference (never released)",
            _cited(
                metrics["nonprivate_reference"]["test_accuracy"], _pct(metrics["nonprivate_reference"]["test_accuracy"])
            ),
        ]
    )
    return (
        _table(["model", "test accuracy"], rows) + "<p>Expected calibration error of the DP model: "
        f"{_cited(metrics['dp_model']['test_ece'], _num(metrics['dp_model']['test_ece']))}. "
        f"Cost of privacy against the non-private reference: {_e(metrics.get('utility_gap_points'))} points.</p>"
    )


def _targets(card: dict[str, Any], chart: bytes | None) -> str:
    rows, checks = [], []
    for t in card["targets"]:
        outcome, _ = target_outcome(t)
        recipe = " + ".join(step["step"] for step in t.get("recipe", [])) or "float"
        size = t.get("size_bytes")
        energy = t.get("energy", "not measured")
        rows.append(
            [
                f'<b id="target-{_e(t["name"])}">{_e(t["name"])}</b><br>{_chip(outcome)}',
                f"{_e(t.get('runtime'))}<br>{_e(t['device'])}",
                _e(recipe),
                _cited(size, f"{size['value'] / 1024:.1f} KB") if size else "not built",
                _cited(t.get("accuracy"), _pct(t.get("accuracy")))
                + (
                    f'<br><span class="why">drop {_e(_num(t.get("accuracy_drop_points")))} pt</span>'
                    if t.get("accuracy_drop_points") is not None
                    else ""
                ),
                _cited(t.get("latency_p50_ms"), _num(t.get("latency_p50_ms")))
                + " / "
                + _cited(t.get("latency_p95_ms"), _num(t.get("latency_p95_ms"))),
                _cited(t.get("memory_kb"), _num(t.get("memory_kb"))),
                _e(energy if energy == "measured" else "not measured"),
            ]
        )
        for name, check in t["checks"].items():
            checks.append([_e(t["name"]), _e(name), _chip(check["status"]), _e(check.get("detail"))])
        if t.get("latency_p95_ms") is None and t.get("not_measured_reason"):
            checks.append([_e(t["name"]), "latency and memory", _chip("not measured"), _e(t["not_measured_reason"])])
    parts = [
        _table(
            [
                "target",
                "runtime, device",
                "recipe",
                "size",
                "accuracy",
                "latency p50 / p95 (ms)",
                "memory (KB)",
                "energy",
            ],
            rows,
        )
    ]
    if not (card.get("energy") or {}).get("measured", True):
        parts.append(f'<p class="why">Energy not measured: {_e(card["energy"].get("reason"))}</p>')
    parts.append(
        "<h3>Checks per target</h3>" + _table(["target", "check", "outcome", "measured against the budget"], checks)
    )
    if chart:
        parts.append(
            f'<figure><img class="chart" alt="Pareto chart: accuracy against latency per target" '
            f'src="data:image/png;base64,{base64.b64encode(chart).decode()}"></figure>'
        )
    return "".join(parts)


def _robustness(card: dict[str, Any]) -> str:
    adversarial = (card.get("robustness") or {}).get("adversarial")
    if not adversarial:
        return '<p class="why">Not measured for this version.</p>'
    budgets = [b["epsilon_fraction_of_span"] for b in next(iter(adversarial["per_target"].values()))["budgets"]]
    rows = [
        [_e(name), _cited(entry["clean_accuracy"], _num(entry["clean_accuracy"], 3))]
        + [
            cell
            for b in entry["budgets"]
            for cell in (
                _cited(b["fgsm_accuracy"], _num(b["fgsm_accuracy"], 3)),
                _cited(b["pgd_accuracy"], _num(b["pgd_accuracy"], 3)),
            )
        ]
        for name, entry in adversarial["per_target"].items()
    ]
    return (
        f"<p>{_e(adversarial['method'])}; {_e(adversarial['rows'])} test rows. Budgets are fractions of each feature's "
        "span.</p>" + _table(["target", "clean"] + [h for e in budgets for h in (f"FGSM {e:g}", f"PGD {e:g}")], rows)
    )


def _per_class(card: dict[str, Any]) -> str:
    per_class = card["quantitative_analyses"]["per_class"]
    models = list(per_class)
    classes = list(per_class["dp_model"])
    return _table(
        ["class"] + [_e(m) for m in models],
        [[_e(c)] + [_e(_num((per_class[m] or {}).get(c), 3)) for m in models] for c in classes],
    )


def _nist(card: dict[str, Any]) -> str:
    rows = []
    for item in card["nist_ai_rmf"]:
        reason = ", ".join(item["evidence"]) or item["why"]
        if item.get("attestations"):
            reason += " · attested by " + "; ".join(
                f"{a['signer']} ({a['role']}, {a['date']})" for a in item["attestations"]
            )
        rows.append([_e(item["id"]), _e(item["classification"]), _e(reason)])
    summary = ", ".join(f"{_e(k)}: {_e(v)}" for k, v in card["nist_summary"].items())
    return f"<p>{_e(card['compliance_claim'])}.</p><p>{summary}</p>" + _table(
        ["id", "classification", "evidence / reason"], rows
    )
