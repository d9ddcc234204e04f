"""The base of every record: frozen, no unknown key, stored as its JSON."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> dict[str, Any]:
        """The record as stored on disk: fields a producer never set (the other training mode's) stay absent."""
        return self.model_dump(mode="json", exclude_unset=True)
