"""The card exported to Google's Model Card Toolkit schema (card.mct.json), validated against the copy in
model_cards/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeops.cards.render import value_text


def to_mct(card: dict[str, Any]) -> dict[str, Any]:
    metrics = [
        {
            "type": "accuracy",
            "value": value_text(card["metrics"]["dp_model"]["test_accuracy"]),
            "slice": "test, DP model",
        }
    ]
    for t in card["targets"]:
        if t.get("accuracy"):
            metrics.append(
                {"type": "accuracy", "value": value_text(t["accuracy"]), "slice": f"test, target {t['name']}"}
            )
        if t.get("latency_p95_ms"):
            metrics.append(
                {
                    "type": "latency_p95_ms",
                    "value": value_text(t["latency_p95_ms"]),
                    "slice": f"batch 1, {t['device']}, target {t['name']}",
                }
            )
    return {
        "schema_version": "0.0.2",
        "model_details": {
            "name": card["pipeline"],
            "overview": card["model_details"]["overview"],
            "owners": [{"name": o, "contact": o} for o in card["model_details"]["owners"]],
            "version": {"name": card["version"], "date": card["generated_at"]},
            "licenses": [{"identifier": card["model_details"]["license"]}],
        },
        "model_parameters": {
            "model_architecture": json.dumps(card["model_details"]["architecture"]),
            "data": [
                {
                    "name": f"training split {card['training_data']['digest'][:16]}",
                    "sensitive": {"sensitive_data": ["private training rows (DP-SGD)"]},
                },
                {"name": f"test split {card['evaluation_data']['digest'][:16]}"},
            ],
            "input_format": card["model_details"]["architecture"]["input"],
            "output_format": card["model_details"]["architecture"]["output"],
        },
        "quantitative_analysis": {"performance_metrics": metrics},
        "considerations": {
            "use_cases": [{"description": u} for u in card["intended_use"]["primary_uses"]],
            "limitations": [{"description": n} for n in card["caveats_and_recommendations"]["limitations"]],
            "ethical_considerations": card["ethical_considerations"],
        },
    }


def validate_mct(document: dict[str, Any], cards_dir: Path) -> None:
    import jsonschema

    from edgeops.resources import MCT_SCHEMA, read_card_file

    schema = json.loads(read_card_file(MCT_SCHEMA, cards_dir))
    jsonschema.validate(document, schema)
