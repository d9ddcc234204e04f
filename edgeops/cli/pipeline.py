"""Declared pipelines: `info`, `spec check`, `expectations generate` and `run`.

`run` reaches Dagster through pipelines/ (importlib), keeping the core free of dagster imports."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import click

from edgeops.cli.common import fail
from edgeops.errors import EdgeopsError
from edgeops.settings import Settings


@click.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def info(as_json: bool) -> None:
    """Resolved paths and URIs, and the declared pipelines."""
    from edgeops.spec import discover_declarations

    settings = Settings.resolve()
    declared = [
        {"name": d.spec.name, "file": str(d.file), "spec_sha256": d.sha256, "targets": [t.name for t in d.spec.targets]}
        for d in discover_declarations(settings.pipelines_dir)
    ]
    payload = {**settings.as_json(), "pipelines": declared}
    if as_json:
        click.echo(json.dumps(payload, indent=2))
        return
    for key, value in settings.as_json().items():
        click.echo(f"{key:22} {value}")
    for item in declared:
        click.echo(f"pipeline {item['name']:13} {item['file']} targets={','.join(item['targets'])}")


@click.group()
def spec() -> None:
    """Pipeline declarations."""


@spec.command("check")
@click.argument("file", type=click.Path(path_type=Path))
def spec_check(file: Path) -> None:
    """Validate one declaration (pipelines/<name>.yaml)."""
    from edgeops.spec import load_declaration

    declaration = load_declaration(file)
    click.echo(
        f"{file}: ok (pipeline {declaration.spec.name}, {len(declaration.spec.targets)} targets, "
        f"spec sha256 {declaration.sha256[:12]})"
    )


@click.group()
def expectations() -> None:
    """Great Expectations suites in expectations/."""


@expectations.command("generate")
@click.option("--pipeline", required=True)
@click.option("--force", is_flag=True, help="overwrite an existing suite")
def expectations_generate(pipeline: str, force: bool) -> None:
    """Write the suite a declaration implies (types, nulls, bounds, label domain, row count)."""
    from edgeops.data import load_source
    from edgeops.spec import Declaration, parse_spec, spec_sha256
    from edgeops.validation import generate_suite

    settings = Settings.resolve()
    file = settings.pipelines_dir / f"{pipeline}.yaml"
    spec_model = parse_spec(file.read_bytes(), str(file))
    declaration = Declaration(spec_model, file, settings.root, spec_sha256(spec_model))
    target = declaration.resolve(spec_model.validation.expectations)
    if target.exists() and not force:
        fail(EdgeopsError(f"{target} exists; pass --force to overwrite"))
    features = list(spec_model.dataset.features or load_source(declaration).features)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(generate_suite(spec_model, features), indent=1) + "\n")
    click.echo(f"wrote {target}")


@click.command()
@click.option("--pipeline", default=None, help="one pipeline (default: every declared pipeline)")
@click.option("--select", default=None, help="comma-separated asset names, e.g. raw_dataset,validated_dataset")
@click.option("--strict", is_flag=True, help="exit non-zero when any target misses its budgets, too")
@click.option(
    "--progress/--no-progress", default=None, help="progress bars on stderr (default: when stderr is a terminal)"
)
@click.option("--json", "as_json", is_flag=True, help="print the results summary as JSON (and nothing else on stdout)")
@click.option("--verbose", is_flag=True, help="also print Dagster's event log (DEBUG) on the console, as it streams")
def run(
    pipeline: str | None, select: str | None, strict: bool, progress: bool | None, as_json: bool, verbose: bool
) -> None:
    """Materialize the pipelines through the project's Dagster instance (runs show in the UI), then print a results
    summary: per pipeline the DP model's accuracy, the privacy spent and left and the card; per target its size,
    accuracy, latency, memory, energy and each check as passed, failed (why) or not measured (why).

    Dagster's event log goes to a file under the state folder, named at the end (--verbose prints it as well).
    Exits 1 when a shared stage fails (data, training, card). A target that misses its budgets is reported and
    the others carry on; with --strict that exits 1 as well. A check that was not measured is not a failure."""
    import datetime as dt

    from edgeops.errors import StateFolderError
    from edgeops.progress import terminal_bars
    from edgeops.report import FAILED, plain_lines, print_rich, summarize
    from edgeops.settings import check_state_folder, looks_like_disk_full, silence_known_warnings
    from edgeops.spec import discover_declarations

    settings = Settings.resolve()
    check_state_folder(settings.home)  # before Dagster or MLflow write a byte
    silence_known_warnings()
    launch = importlib.import_module("pipelines.launch")

    bars = (sys.stderr.isatty() and not verbose) if progress is None else progress
    # The console logger only: every event still goes to the instance's event log (the UI) and to the file below.
    os.environ.setdefault("EDGEOPS_CONSOLE_LOG_LEVEL", "DEBUG" if verbose else "CRITICAL")
    event_log = settings.home / "logs" / f"run-{dt.datetime.now().strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    event_log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with terminal_bars(bars):
            reports = launch.run_pipelines(
                settings, pipeline, select.split(",") if select else None, event_log=event_log
            )
    except Exception as err:
        if looks_like_disk_full(err):
            # Stages swap their outputs in only when complete (staging folders, one-row ledger transactions), so what
            # the last good run left (models, registry aliases, cards) is as it was.
            raise StateFolderError(
                f"the filesystem of the state folder {settings.home} filled up during the run "
                f"({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
                "Nothing completed was replaced; free space and run again"
            ) from None
        raise
    try:
        declarations = {d.spec.name: d for d in discover_declarations(settings.pipelines_dir)}
        summary = summarize(
            declarations,
            reports,
            settings.home,
            settings.model_cards_dir / "generated",
            event_log,
            {
                "dagster_home": str(settings.dagster_home),
                "mlflow_tracking_uri": settings.mlflow_tracking_uri,
                "outputs": str(settings.home / "pipelines"),
            },
        )
    except Exception as err:  # the run itself is done: say how it went even if its files cannot be summarized
        click.echo(
            f"results summary unavailable ({type(err).__name__}: {str(err)[:300]}); the runs themselves:", err=True
        )
        for report in reports:
            for item in report.runs:
                click.echo(
                    f"{report.pipeline} [{item['partition'] or 'shared stages'}]: "
                    f"{'ok' if item['success'] else 'FAILED'} (dagster run {item['run_id']})"
                    + "".join(f"; failed step {s}: {item['errors'].get(s, '')}" for s in item["failed_steps"])
                )
        click.echo(f"Event log:  {event_log}")
        sys.exit(0 if all(r.core_success for r in reports) else 1)
    if as_json:
        click.echo(summary.model_dump_json(indent=2))
    elif sys.stdout.isatty():
        from rich.console import Console

        print_rich(summary, Console())
    else:
        for line in plain_lines(summary):
            click.echo(line)
    missed = any(t.outcome == FAILED for p in summary.pipelines for t in p.targets)
    ok = summary.ok and not (strict and missed)
    sys.exit(0 if ok else 1)
