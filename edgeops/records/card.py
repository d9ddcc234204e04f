"""The model_card stage's record: where the signed card was written and the few facts the run summary, the asset's
checks and the release jobs read without opening the card (the card itself is edgeops.cards.record.Card)."""

from __future__ import annotations

from pydantic import Field

from edgeops.records.base import Record


class RegisteredModel(Record):
    """A target's artifact in the MLflow model registry; both None when it was not registered."""

    name: str | None = Field(description="The registered model's name.")
    version: int | str | None = Field(description="The registered model version.")


class CardSummary(Record):
    """The model_card asset's output: the card written, signed and logged to MLflow."""

    folder: str = Field(description="The card's folder (card.json, card.sig.json, card.md, card.html, ...).")
    card_id: str = Field(description="<pipeline>/<version>.")
    version: str = Field(description="The first 12 hex digits of the DP model's weights' sha256.")
    nist_summary: dict[str, int] = Field(description="How many NIST AI RMF subcategories have each classification.")
    seconds: float = Field(description="Wall time of building, writing and signing the card.")
    limitations: list[str] = Field(description="The card's limitations, derived from the numbers.")
    mlflow_run_id: str = Field(description="The MLflow run of the card stage.")
    registered_models: dict[str, RegisteredModel] = Field(description="Each target's registered model, by target.")
