"""The typed card (edgeops.cards.record.Card) and the card schema generated from it: the shipped schema is the
generated one, a card of today's shape passes both, and a broken card is refused by both."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
from helpers import TABLE_CARD
from pydantic import ValidationError

from edgeops.cards.record import CARD_SCHEMA_VERSION, Card, card_schema, card_schema_text, main, schema_path
from edgeops.cards.store import validate_card_schema
from edgeops.errors import CardError
from edgeops.resources import CARD_SCHEMA, read_card_file

LEDGER = {
    "composition": "basic (sums)",
    "entries": [
        {
            "id": 1,
            "mechanism": "dp-sgd",
            "status": "completed",
            "epsilon": 3.9985,
            "delta": 0.0001,
            "charge_key": "dp-sgd:abc",
            "note": "dp_model",
            "mechanism_parameters": {"noise_multiplier": 1.14, "sample_rate": 0.1667, "steps": 24},
            "second_accountant": {"method": "dp-accounting PLD", "epsilon": 3.99, "delta": 0.0001},
        }
    ],
    "totals": {
        "epsilon": 3.9985,
        "delta": 0.0001,
        "budget_epsilon": 8.0,
        "budget_delta": 0.001,
        "remaining_epsilon": 4.0015,
        "remaining_delta": 0.0009,
    },
    "pld_composition": None,
}
GUARANTEE = {
    "epsilon": 3.9985,
    "delta": 0.0001,
    "composition": "basic (sums)",
    "parts": {"dp_model": {"epsilon": 3.9985, "delta": 0.0001}},
    "pld_epsilon": 3.99,
    "text": "(3.999, 0.0001)-differentially private by basic composition of dp_model (3.999, 0.0001)",
}


@pytest.fixture
def card():
    """The recorded table card brought to today's shape (it was recorded before the ledger, the canary audit and the
    noise line were added to the privacy section)."""
    card = copy.deepcopy(TABLE_CARD)
    privacy = card["privacy"]
    privacy["dp_statement"]["noise"] = "secret: from the operating system's CSPRNG"
    privacy["canary_audit"] = {"outcome": "not run", "consistent": False, "summary": "not run"}
    privacy["per_target"] = "each target's own (epsilon, delta) is in its entry under targets[].guarantee"
    privacy["ledger"] = copy.deepcopy(LEDGER)
    card["targets"][0]["guarantee"] = copy.deepcopy(GUARANTEE)
    return card


def schema_errors(card):
    schema = json.loads(read_card_file(CARD_SCHEMA))
    return list(jsonschema.validators.validator_for(schema)(schema).iter_errors(card))


def test_shipped_schema_is_the_one_generated_from_card():
    expected = card_schema_text()
    assert schema_path().read_text(encoding="utf-8") == expected, (
        "card.schema.json differs from Card: run `python -m edgeops.cards.record --write`"
    )
    assert read_card_file(CARD_SCHEMA) == expected  # the packaged copy (importlib.resources) is the same file


def test_schema_is_a_valid_draft_2020_12_schema_with_its_header():
    schema = card_schema()
    validator = jsonschema.validators.validator_for(schema)
    assert validator is jsonschema.Draft202012Validator
    validator.check_schema(schema)
    assert list(schema)[:4] == ["$schema", "$id", "title", "description"]
    assert schema["properties"]["schema_version"]["const"] == CARD_SCHEMA_VERSION


def test_schema_entry_point_prints_what_it_would_write(capsys):
    assert main([]) == 0
    assert capsys.readouterr().out == card_schema_text()
    assert main(["--check"]) == 2


def test_todays_card_passes_both_and_the_record_holds_all_of_it(card):
    assert schema_errors(card) == []
    typed = Card.model_validate(card)
    assert typed.metrics.dp_model.test_accuracy.metric == "test_accuracy"
    assert typed.model_dump(mode="json", exclude_unset=True) == card  # nothing the builder wrote is dropped
    validate_card_schema(card, None)


def parent(card, path):
    """The node holding the last key of path, and that key."""
    *parents, last = path
    for key in parents:
        card = card[key]
    return card, last


def drop(path):
    def change(card):
        node, key = parent(card, path)
        del node[key]

    return change


def put(path, value):
    def change(card):
        node, key = parent(card, path)
        node[key] = value

    return change


VIOLATIONS = {
    "missing required section": drop(["privacy"]),
    "missing signature fingerprint": drop(["signature_fingerprint"]),
    "wrong-typed version": put(["version"], 123456789012),
    "version not 12 hex digits": put(["version"], "6901e7b50d0"),
    "upper-case version": put(["version"], "6901E7B50D00"),
    "schema version of another release": put(["schema_version"], "edgeops.card/2.0"),
    "evidence without mlflow_run_id": drop(["metrics", "dp_model", "test_accuracy", "mlflow_run_id"]),
    "evidence value as text": put(["privacy", "dp_statement", "epsilon", "value"], "3.99"),
    "steps as text": put(["privacy", "dp_statement", "steps"], "24"),
    "63-hex sha256 in the evidence manifest": put(["evidence_manifest", 0, "sha256"], "a" * 63),
    "manifest entry without path": drop(["evidence_manifest", 0, "path"]),
    "a compliance claim": put(["compliance_claim"], "compliant with NIST AI RMF 1.0"),
    "71 NIST items": lambda card: card["nist_ai_rmf"].pop(),
    "73 NIST items": lambda card: card["nist_ai_rmf"].append(card["nist_ai_rmf"][0]),
    "NIST id of no function": put(["nist_ai_rmf", 0, "id"], "PLAN 1.1"),
    "unknown NIST classification": put(["nist_ai_rmf", 0, "classification"], "compliant"),
    "short NIST statement": put(["nist_ai_rmf", 0, "statement"], "short"),
    "ledger without totals": drop(["privacy", "ledger", "totals"]),
    "ledger entry without second accountant": drop(["privacy", "ledger", "entries", 0, "second_accountant"]),
    "totals without budget": drop(["privacy", "ledger", "totals", "budget_epsilon"]),
    "dp statement without unit": drop(["privacy", "dp_statement", "unit"]),
    "target without checks": drop(["targets", 0, "checks"]),
    "guarantee without parts": drop(["targets", 0, "guarantee", "parts"]),
    "guarantee epsilon as text": put(["targets", 0, "guarantee", "epsilon"], "4.0"),
    "metrics without the reference": drop(["metrics", "nonprivate_reference"]),
    "a key no builder writes": put(["signed_by_hand"], True),
}


@pytest.mark.parametrize("name", VIOLATIONS)
def test_broken_card_is_refused_by_the_record_and_by_the_schema(card, name):
    VIOLATIONS[name](card)
    with pytest.raises(ValidationError):
        Card.model_validate(card)
    assert schema_errors(card), f"the generated schema accepts a card with {name}"
    with pytest.raises(CardError, match="card does not match the card schema"):
        validate_card_schema(card, None)
