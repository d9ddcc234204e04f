"""The privacy ledger's records: one charge (`LedgerEntry`) and the whole ledger against its budget (`LedgerView`,
what `edgeops.ledger.PrivacyLedger.summary` returns and the card, the doctor and the CLI read)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from edgeops.records.base import Record

# A fresh draw of a computation is charged under the computation's key plus this and the draw's number.
DRAW_SEPARATOR = "#draw-"


class LedgerEntry(Record):
    """One charge: a row of the ledger's `entries` table, its JSON columns decoded."""

    id: int = Field(description="The entry's number, in the order charged.")
    charge_key: str = Field(description="The computation's key (a fresh draw's has `#draw-N` appended).")
    mechanism: str = Field(description="The mechanism charged (dp-sgd, dp-statistics, ...).")
    epsilon: float = Field(description="Epsilon charged (the accountant's final figure once completed).")
    delta: float = Field(description="Delta charged.")
    parameters: dict[str, Any] = Field(description="The mechanism's parameters (noise, sampling, steps, accountant).")
    status: str = Field(description="charged (work started), completed (work finished) or failed.")
    created_at: float = Field(description="When the charge was made (seconds since the epoch).")
    updated_at: float = Field(description="When the entry last changed (seconds since the epoch).")
    run_id: str = Field(description="The run that charged it; empty if none was given.")
    note: str = Field(description="What the charge was for, and why a fresh draw was charged anew.")
    computation: dict[str, Any] = Field(
        default_factory=dict, description="What the charge key hashes (public: never the noise secret itself)."
    )
    output: Any = Field(default=None, description="The stored output to reuse; None until the work completed.")

    @property
    def base_key(self) -> str:
        return self.charge_key.split(DRAW_SEPARATOR)[0]


class LedgerView(Record):
    """The ledger against its budget: what was spent by basic composition, what is left, and every entry."""

    budget_epsilon: float = Field(description="The declared epsilon budget.")
    budget_delta: float = Field(description="The declared delta budget.")
    spent_epsilon: float = Field(description="Epsilon spent: the sum over every entry, rounded to 6 decimals.")
    spent_delta: float = Field(description="Delta spent: the sum over every entry.")
    remaining_epsilon: float = Field(description="Epsilon left in the budget, rounded to 6 decimals.")
    remaining_delta: float = Field(description="Delta left in the budget.")
    composition: str = Field(description="The composition rule the budget is enforced with.")
    entries: list[LedgerEntry] = Field(description="Every entry, oldest first.")
