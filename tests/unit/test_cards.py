"""Card rules and keys: bad inputs get clear errors (the full card is exercised end to end in tests/integration)."""

from __future__ import annotations

import pytest
import yaml
from helpers import REPO, digits_declaration

from edgeops.cards.nist import classify_nist, load_attestations, load_catalogue, load_rules
from edgeops.errors import CardError
from edgeops.resources import MAPPING, read_card_file
from edgeops.signing import SigningError, sign, signing_key, verify_signature
from edgeops.spec import load_declaration


def test_catalogue_has_72_subcategories_with_official_statements():
    catalogue = load_catalogue(REPO / "model_cards")
    assert len(catalogue) == 72 and len({s["id"] for s in catalogue}) == 72
    assert next(s for s in catalogue if s["id"] == "MEASURE 2.10")["statement"].startswith(
        "Privacy risk of the AI system"
    )


def test_unknown_subcategory_in_the_mapping_is_refused(tmp_path):
    cards = tmp_path / "model_cards"  # a project's own mapping rules override the packaged ones
    cards.mkdir()
    rules = yaml.safe_load(read_card_file(MAPPING))
    rules["rules"]["MEASURE 9.9"] = {"evidence": ["targets"], "max": "partial", "why": "x"}
    (cards / "nist_mapping.yaml").write_text(yaml.safe_dump(rules))
    with pytest.raises(CardError, match=r"unknown NIST AI RMF subcategory id\(s\) \['MEASURE 9.9'\]"):
        load_rules(cards, {s["id"] for s in load_catalogue(cards)})


def test_classification_follows_evidence_and_never_leaves_one_out():
    card = {
        "privacy": {
            "dp_statement": {"x": 1},
            "rederivation": {"passed": True},
            "canary_audit": {"consistent": True},
            "ledger": {"a": 1},
        },
        "model_details": {"pretrained_base": "none"},
    }
    items = {i["id"]: i for i in classify_nist(card, REPO / "model_cards", [])}
    assert len(items) == 72
    assert items["MEASURE 2.10"]["classification"] == "supported"
    assert items["MANAGE 3.2"]["classification"] == "not_applicable"
    assert items["MEASURE 2.11"]["classification"] == "attestation"  # no per-class evidence in this card
    card["privacy"]["rederivation"]["passed"] = False
    assert {i["id"]: i for i in classify_nist(card, REPO / "model_cards", [])}["MEASURE 2.10"][
        "classification"
    ] == "partial"
    card["privacy"]["rederivation"]["passed"] = True
    card["privacy"]["canary_audit"] = {
        "outcome": "underpowered",
        "consistent": False,
    }  # an audit that could not fail is no support
    assert {i["id"]: i for i in classify_nist(card, REPO / "model_cards", [])}["MEASURE 2.10"][
        "classification"
    ] == "partial"


def attested_declaration(project, entries):
    (project.root / "attestations.yaml").write_text(yaml.safe_dump({"attestations": entries}))
    spec = digits_declaration()
    spec["card"]["attestations"] = "attestations.yaml"
    return load_declaration(project.declare(spec))


def test_attestation_without_signer_is_refused(project):
    declaration = attested_declaration(
        project, [{"subcategory": "GOVERN 1.1", "role": "DPO", "date": "2026-11-01", "statement": "reviewed"}]
    )
    with pytest.raises(CardError, match=r"attestations.0.signer is missing"):
        load_attestations(declaration, {s["id"] for s in load_catalogue(REPO / "model_cards")})


def test_attestation_for_an_unknown_subcategory_is_refused(project):
    declaration = attested_declaration(
        project, [{"subcategory": "GOVERN 42.0", "signer": "A", "role": "DPO", "date": "2026-11-01", "statement": "s"}]
    )
    with pytest.raises(CardError, match="is not a NIST AI RMF 1.0 subcategory"):
        load_attestations(declaration, {s["id"] for s in load_catalogue(REPO / "model_cards")})


def test_attestations_are_shown_on_their_subcategory(project):
    entry = {
        "subcategory": "GOVERN 1.1",
        "signer": "Ada Lovelace",
        "role": "DPO",
        "date": "2026-11-01",
        "statement": "legal review done",
    }
    declaration = attested_declaration(project, [entry])
    attestations = load_attestations(declaration, {s["id"] for s in load_catalogue(REPO / "model_cards")})
    items = {i["id"]: i for i in classify_nist({}, REPO / "model_cards", attestations)}
    assert (
        items["GOVERN 1.1"]["classification"] == "attestation"
        and items["GOVERN 1.1"]["attestations"][0]["signer"] == "Ada Lovelace"
    )


def test_malformed_signing_key_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEOPS_SIGNING_KEY", "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SigningError, match="env EDGEOPS_SIGNING_KEY: not a readable PEM private key"):
        signing_key(tmp_path)


def test_generated_key_is_private_and_signatures_detect_changes(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEOPS_SIGNING_KEY", raising=False)
    key = signing_key(tmp_path)
    assert (tmp_path / "keys" / "signing_ed25519.pem").stat().st_mode & 0o077 == 0
    document = {"a": 1, "b": [1, 2]}
    signature = sign(document, key)
    assert verify_signature(document, signature, key.public_key())
    assert not verify_signature({**document, "a": 2}, signature, key.public_key())
    assert "PRIVATE" not in str(signature)


def test_drift_status_counts_only_this_versions_reports():
    from pydantic import TypeAdapter
    from record_examples import drift_checked, drift_quarantined

    from edgeops.cards.sections import drift_status
    from edgeops.records import DriftReport

    mine, other = "a" * 64, "b" * 64
    stored = [
        drift_checked("b1", mine),
        drift_checked("b2", mine, drift_detected=True, reasons=["prediction drift"]),
        drift_checked("b3", other, drift_detected=True, reasons=["prediction drift"]),
        drift_quarantined("bad"),
    ]
    reports = [TypeAdapter(DriftReport).validate_python(r) for r in stored]
    status = drift_status(reports, mine)
    assert status == {
        **status,
        "status": "drift detected",
        "batches_checked": 2,
        "batches_with_drift": ["b2"],
        "batches_quarantined": ["bad"],
    }
    assert drift_status([reports[0]], mine)["status"] == "no drift"
    assert drift_status([], mine)["status"] is None
