"""The `edgeops` command. Heavy libraries are imported inside each command, so `--help` is instant.

Commands that need Dagster reach it through pipelines/ (importlib), keeping the core free of dagster imports.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import click

from edgeops.errors import EdgeopsError
from edgeops.settings import Settings, quiet_third_parties


def _fail(err: Exception) -> None:
    click.echo(f"error: {err}", err=True)
    sys.exit(2)


class _Group(click.Group):
    """Prints the project's own errors without a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgeopsError as err:
            _fail(err)


@click.group(cls=_Group)
def main() -> None:
    """edgeops: declarative MLOps for on-device deep learning."""
    quiet_third_parties()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def info(as_json: bool) -> None:
    """Resolved paths and URIs, and the declared pipelines."""
    from edgeops.spec import discover_declarations

    settings = Settings.resolve()
    declared = [{"name": d.spec.name, "file": str(d.file), "spec_sha256": d.sha256,
                 "targets": [t.name for t in d.spec.targets]} for d in discover_declarations(settings.pipelines_dir)]
    payload = {**settings.as_json(), "pipelines": declared}
    if as_json:
        click.echo(json.dumps(payload, indent=2))
        return
    for key, value in settings.as_json().items():
        click.echo(f"{key:22} {value}")
    for item in declared:
        click.echo(f"pipeline {item['name']:13} {item['file']} targets={','.join(item['targets'])}")


@main.group()
def spec() -> None:
    """Pipeline declarations."""


@spec.command("check")
@click.argument("file", type=click.Path(path_type=Path))
def spec_check(file: Path) -> None:
    """Validate one declaration (pipelines/<name>.yaml)."""
    from edgeops.spec import load_declaration

    declaration = load_declaration(file)
    click.echo(f"{file}: ok (pipeline {declaration.spec.name}, {len(declaration.spec.targets)} targets, spec sha256 {declaration.sha256[:12]})")


@main.group()
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
        _fail(EdgeopsError(f"{target} exists; pass --force to overwrite"))
    features = list(spec_model.dataset.features or load_source(declaration).features)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(generate_suite(spec_model, features), indent=1) + "\n")
    click.echo(f"wrote {target}")


@main.command()
@click.option("--pipeline", default=None, help="one pipeline (default: every declared pipeline)")
@click.option("--select", default=None, help="comma-separated asset names, e.g. raw_dataset,validated_dataset")
def run(pipeline: str | None, select: str | None) -> None:
    """Materialize the pipelines through the project's Dagster instance (runs show in the UI)."""
    launch = importlib.import_module("pipelines.launch")
    settings = Settings.resolve()
    reports = launch.run_pipelines(settings, pipeline, select.split(",") if select else None)
    ok = True
    for report in reports:
        for item in report.runs:
            state = "ok" if item["success"] else "FAILED"
            where = f" [{item['partition']}]" if item["partition"] else ""
            click.echo(f"{report.pipeline}{where}: {state} dagster run {item['run_id']}")
            for step in item["failed_steps"]:
                click.echo(f"  failed step: {step}")
            for check in item["failed_checks"]:
                click.echo(f"  failed check: {check}")
        ok &= report.success
    click.echo("")
    click.echo(f"Dagster instance: {settings.dagster_home}   (make ui, then http://127.0.0.1:3000/runs)")
    click.echo(f"MLflow store:     {settings.mlflow_tracking_uri}   (make ui, then http://127.0.0.1:5000)")
    click.echo(f"Outputs:          {settings.home / 'pipelines'}   cards: {settings.model_cards_dir / 'generated'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
