"""Files edgeops needs at run time, shipped inside the package (read with importlib.resources, never from a checkout).

- model_cards/: the NIST AI RMF 1.0 catalogue, the default mapping rules, the card schema and the Model Card Toolkit
  schema. A project may override the mapping rules with its own ``model_cards/nist_mapping.yaml``; the catalogue and
  the schemas always come from the package (a card is checked against the schema of the edgeops that wrote it).
- project/: the files ``edgeops init`` writes into a new project folder.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

CATALOGUE = "nist_ai_rmf_1_0.json"
MAPPING = "nist_mapping.yaml"
CARD_SCHEMA = "card.schema.json"
MCT_SCHEMA = "mct_model_card.schema.json"
CARD_FILES = (CATALOGUE, MAPPING, CARD_SCHEMA, MCT_SCHEMA)
OVERRIDABLE = frozenset({MAPPING})  # a project's model_cards/<name> replaces the packaged one


def packaged(*parts: str) -> Traversable:
    """A file shipped in edgeops/resources (works from a wheel, a zip or a checkout alike)."""
    node = resources.files("edgeops.resources")
    for part in parts:
        node = node / part
    return node


def card_file(name: str, cards_dir: Path | None = None) -> Traversable | Path:
    """The catalogue, mapping rules or a schema. The mapping rules may be overridden by the project's
    model_cards/nist_mapping.yaml; everything else is the packaged file."""
    if name not in CARD_FILES:
        raise KeyError(f"{name!r} is not a packaged card file (known: {CARD_FILES})")
    if name in OVERRIDABLE and cards_dir is not None and (Path(cards_dir) / name).is_file():
        return Path(cards_dir) / name
    return packaged("model_cards", name)


def read_card_file(name: str, cards_dir: Path | None = None) -> str:
    return card_file(name, cards_dir).read_text(encoding="utf-8")
