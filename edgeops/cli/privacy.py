"""`privacy ledger`: what was spent of a pipeline's privacy budget, entry by entry."""

from __future__ import annotations

import json

import click

from edgeops.cli.common import settings_and_declaration


@click.group()
def privacy() -> None:
    """The privacy ledger."""


@privacy.command("ledger")
@click.option("--pipeline", required=True)
@click.option("--json", "as_json", is_flag=True)
def privacy_ledger(pipeline: str, as_json: bool) -> None:
    """Every computation that touched private data, and what is left of the budget."""
    from edgeops.ledger import ledger_for

    settings, declaration = settings_and_declaration(pipeline)
    budget = declaration.spec.privacy
    summary = ledger_for(settings.pipeline_dir(pipeline), budget.epsilon, budget.delta).summary()
    if as_json:
        click.echo(json.dumps(summary.to_json(), indent=2, default=str))
        return
    click.echo(
        f"budget epsilon {summary.budget_epsilon:g}; spent {summary.spent_epsilon:g}; "
        f"left {summary.remaining_epsilon:g}. "
        f"budget delta {summary.budget_delta:g}; spent {summary.spent_delta:g}; "
        f"left {summary.remaining_delta:g} ({summary.composition})"
    )
    for entry in summary.entries:
        click.echo(
            f"  #{entry.id} {entry.mechanism}: epsilon {entry.epsilon:.4g}, delta {entry.delta:g}, "
            f"{entry.status}, run {entry.run_id[:8]}" + (f" ({entry.note})" if "fresh draw" in entry.note else "")
        )
