"""A data check's outcome, as validation and the label-noise scan report it (and the Dagster asset check shows it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MAX_EXAMPLES = 20


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    summary: str
    counts: dict[str, Any] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    links: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
