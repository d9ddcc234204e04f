"""The card's NIST AI RMF 1.0 classification: each subcategory of the catalogue is supported, partial, left to a
person's attestation or not applicable, by the mapping rules applied to the evidence in the card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from edgeops.cards.sections import plain_value
from edgeops.errors import CardError
from edgeops.spec import Declaration

CLASSIFICATIONS = ("supported", "partial", "attestation", "not_applicable")


def _lookup(card: dict[str, Any], path: str) -> Any:
    node = card
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def _present(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, (list, dict, str)) and not value:
        return False
    return True


def load_catalogue(cards_dir: Path) -> list[dict[str, Any]]:
    from edgeops.resources import CATALOGUE, read_card_file

    catalogue = json.loads(read_card_file(CATALOGUE, cards_dir))
    return [
        sub
        for function in catalogue["functions"]
        for category in function["categories"]
        for sub in category["subcategories"]
    ]


def load_rules(cards_dir: Path, known_ids: set[str]) -> dict[str, Any]:
    from edgeops.resources import MAPPING, card_file

    path = card_file(MAPPING, cards_dir)  # the project's model_cards/nist_mapping.yaml, else the packaged rules
    rules: dict[str, Any] = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("rules", {})
    unknown = sorted(set(rules) - known_ids)
    if unknown:
        raise CardError(f"{path}: unknown NIST AI RMF subcategory id(s) {unknown}")
    return rules


def load_attestations(declaration: Declaration, known_ids: set[str]) -> list[dict[str, Any]]:
    if not declaration.spec.card.attestations:
        return []
    path = declaration.resolve(declaration.spec.card.attestations)
    entries: list[dict[str, Any]] = (yaml.safe_load(path.read_text()) or {}).get("attestations", [])
    for index, entry in enumerate(entries):
        for field in ("subcategory", "signer", "role", "date", "statement"):
            if not entry.get(field):
                raise CardError(
                    f"{path}: attestations.{index}.{field} is missing (an attestation needs subcategory, signer, role, "
                    "date and statement)"
                )
        if entry["subcategory"] not in known_ids:
            raise CardError(
                f"{path}: attestations.{index}.subcategory {entry['subcategory']!r} is not a NIST AI RMF 1.0 "
                "subcategory"
            )
        entry["date"] = str(entry["date"])
    return entries


def classify_nist(card: dict[str, Any], cards_dir: Path, attestations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    catalogue = load_catalogue(cards_dir)
    rules = load_rules(cards_dir, {s["id"] for s in catalogue})
    attested: dict[str, list[dict[str, Any]]] = {}
    for entry in attestations:
        attested.setdefault(entry["subcategory"], []).append(entry)
    out = []
    for sub in catalogue:
        rule = rules.get(sub["id"])
        item = {
            "id": sub["id"],
            "statement": sub["statement"],
            "classification": "attestation",
            "evidence": [],
            "why": "",
        }
        if rule and "not_applicable_when" in rule:
            field, _, expected = rule["not_applicable_when"].partition(" is ")
            if str(_lookup(card, field)) == expected:
                item.update(classification="not_applicable", why=rule["why"])
        elif rule:
            present = [path for path in rule["evidence"] if _present(plain_value(_lookup(card, path)))]
            item["evidence"] = present
            item["why"] = rule["why"]
            if present and len(present) == len(rule["evidence"]) and rule.get("max") == "supported":
                item["classification"] = "supported"
            elif present:
                item["classification"] = "partial"
            else:
                item["why"] = f"no evidence in this card yet ({', '.join(rule['evidence'])}); {rule['why']}"
        if item["classification"] == "attestation":
            item["attestations"] = attested.get(sub["id"], [])
            item["why"] = item["why"] or "an organisational outcome: a person must attest it"
        out.append(item)
    return out
