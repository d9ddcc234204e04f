"""`card verify`, `card review` and `card diff`: model cards after they are written."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgeops.cli.common import mlflow_client
from edgeops.settings import Settings


@click.group()
def card() -> None:
    """Model cards: verify, review, diff."""


@card.command("verify")
@click.argument("card_path", type=click.Path(path_type=Path))
@click.option("--public-key", default=None, help="PEM public key to trust (default: the project's)")
def card_verify(card_path: Path, public_key: str | None) -> None:
    """Re-hash the evidence from disk and MLflow and check the signature. Exits 1 and lists what changed."""
    from edgeops.cards.store import verify_card

    settings = Settings.resolve()
    problems = verify_card(card_path, settings.home, mlflow_client(settings), public_key)
    if problems:
        click.echo(f"{card_path}: FAILED verification")
        for problem in problems:
            click.echo(f"  - {problem}")
        sys.exit(1)
    click.echo(f"{card_path}: verifies (signature, evidence hashes, every number against MLflow, review history)")


@card.command("review")
@click.argument("card_path", type=click.Path(path_type=Path))
@click.option("--reviewer", required=True)
@click.option("--decision", required=True, type=click.Choice(["approve", "reject"]))
@click.option("--comment", default="")
def card_review(card_path: Path, reviewer: str, decision: str, comment: str) -> None:
    """Record a signed review in the card's history and as MLflow tags."""
    from edgeops.cards.store import review_card

    settings = Settings.resolve()
    entry = review_card(card_path, settings.home, reviewer, decision, comment, mlflow_client(settings))
    click.echo(f"recorded: {decision} by {reviewer} at {entry['at']}")


@card.command("diff")
@click.argument("first", type=click.Path(path_type=Path))
@click.argument("second", type=click.Path(path_type=Path))
def card_diff(first: Path, second: Path) -> None:
    """What changed between two cards: numbers, budgets, NIST classifications, reviews."""
    from edgeops.cards.store import diff_cards

    for line in diff_cards(first, second):
        click.echo(line)
