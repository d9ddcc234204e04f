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
@click.option("--strict", is_flag=True, help="exit non-zero when any target misses its budgets, too")
def run(pipeline: str | None, select: str | None, strict: bool) -> None:
    """Materialize the pipelines through the project's Dagster instance (runs show in the UI).

    Exits 1 when a shared stage fails (data, training, card). A target that misses its budgets is reported and
    the others carry on; with --strict that exits 1 as well."""
    launch = importlib.import_module("pipelines.launch")
    settings = Settings.resolve()
    reports = launch.run_pipelines(settings, pipeline, select.split(",") if select else None)
    ok = True
    missed = []
    for report in reports:
        for item in report.runs:
            state = "ok" if item["success"] else "FAILED"
            where = f" [{item['partition']}]" if item["partition"] else ""
            click.echo(f"{report.pipeline}{where}: {state} dagster run {item['run_id']}")
            for step in item["failed_steps"]:
                click.echo(f"  failed step: {step}")
            for check in item["failed_checks"]:
                click.echo(f"  failed check: {check}")
            if item["partition"] and not item["success"]:
                missed.append(f"{report.pipeline}/{item['partition']}")
        ok &= report.success if strict else report.core_success
    click.echo("")
    if missed:
        click.echo(f"Targets that missed their budgets (see their checks in the UI and the card): {', '.join(missed)}")
    click.echo(f"Dagster instance: {settings.dagster_home}   (make ui, then http://127.0.0.1:3000/runs)")
    click.echo(f"MLflow store:     {settings.mlflow_tracking_uri}   (make ui, then http://127.0.0.1:5000)")
    click.echo(f"Outputs:          {settings.home / 'pipelines'}   cards: {settings.model_cards_dir / 'generated'}")
    sys.exit(0 if ok else 1)


def _declaration(pipeline: str):
    from edgeops.spec import load_declaration

    settings = Settings.resolve()
    file = settings.pipelines_dir / f"{pipeline}.yaml"
    if not file.exists():
        raise EdgeopsError(f"no declaration {file}")
    return settings, load_declaration(file, settings.root)


def _mlflow_client(settings: Settings):
    from edgeops.lineage import Lineage

    return Lineage(settings.mlflow_tracking_uri, settings.mlflow_artifact_root).client


@main.group()
def privacy() -> None:
    """The privacy ledger."""


@privacy.command("ledger")
@click.option("--pipeline", required=True)
@click.option("--json", "as_json", is_flag=True)
def privacy_ledger(pipeline: str, as_json: bool) -> None:
    """Every computation that touched private data, and what is left of the budget."""
    from edgeops.ledger import ledger_for

    settings, declaration = _declaration(pipeline)
    summary = ledger_for(settings.pipeline_dir(pipeline), declaration.spec.privacy.epsilon, declaration.spec.privacy.delta).summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    click.echo(f"budget epsilon {summary['budget_epsilon']:g}; spent {summary['spent_epsilon']:g}; left {summary['remaining_epsilon']:g} "
               f"({summary['composition']})")
    for entry in summary["entries"]:
        click.echo(f"  #{entry['id']} {entry['mechanism']}: epsilon {entry['epsilon']:.4g}, delta {entry['delta']:g}, {entry['status']}, run {entry['run_id'][:8]}")


@main.group()
def card() -> None:
    """Model cards: verify, review, diff."""


@card.command("verify")
@click.argument("card_path", type=click.Path(path_type=Path))
@click.option("--public-key", default=None, help="PEM public key to trust (default: the project's)")
def card_verify(card_path: Path, public_key: str | None) -> None:
    """Re-hash the evidence from disk and MLflow and check the signature. Exits 1 and lists what changed."""
    from edgeops.cards.store import verify_card

    settings = Settings.resolve()
    problems = verify_card(card_path, settings.home, _mlflow_client(settings), public_key)
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
    entry = review_card(card_path, settings.home, reviewer, decision, comment, _mlflow_client(settings))
    click.echo(f"recorded: {decision} by {reviewer} at {entry['at']}")


@card.command("diff")
@click.argument("first", type=click.Path(path_type=Path))
@click.argument("second", type=click.Path(path_type=Path))
def card_diff(first: Path, second: Path) -> None:
    """What changed between two cards: numbers, budgets, NIST classifications, reviews."""
    from edgeops.cards.store import diff_cards

    for line in diff_cards(first, second):
        click.echo(line)


@main.command()
@click.option("--pipeline", required=True)
@click.option("--target", required=True)
@click.option("--device", default=None, help="override the target's declared device")
@click.option("--json", "as_json", is_flag=True)
def bench(pipeline: str, target: str, device: str | None, as_json: bool) -> None:
    """Benchmark one target's latest artifact on its device (or --device)."""
    from edgeops.hil.bench import benchmark_target

    settings, declaration = _declaration(pipeline)
    spec = declaration.spec
    target_spec = spec.target(target)
    if device:
        spec.device(device)
        target_spec = target_spec.model_copy(update={"device": device})
    assets_dir = settings.home / "assets" / pipeline
    compressed_file = assets_dir / "compressed_model" / f"{target}.json"
    if not compressed_file.exists():
        raise EdgeopsError(f"target {target!r} has no compressed artifact yet; run `edgeops run --pipeline {pipeline}` first")
    compressed = json.loads(compressed_file.read_text())
    dataset = json.loads((assets_dir / "validated_dataset" / "__all__.json").read_text())
    result = benchmark_target(spec, target_spec, compressed, dataset)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    if not result.get("measured"):
        click.echo(f"{target} on {target_spec.device}: not measured: {result['reason']}")
        return
    for batch, stats in result["latency"].items():
        click.echo(f"{target} on {target_spec.device} batch {batch}: p50 {stats['p50_ms']:.4f} ms, p99 {stats['p99_ms']:.4f} ms, "
                   f"{stats['throughput_per_s']:.0f}/s")
    click.echo(f"accuracy on device {result['accuracy_on_device']:.4f}; peak memory {result['peak_rss_beyond_baseline_kb']} KB; "
               f"energy: {result['energy'].get('reason') or 'measured'}")


def _validated_dataset(settings: Settings, pipeline: str) -> dict:
    path = settings.home / "assets" / pipeline / "validated_dataset" / "__all__.json"
    if not path.exists():
        raise EdgeopsError(f"pipeline {pipeline!r} has no validated dataset yet; run it first")
    return json.loads(path.read_text())


@main.group()
def release() -> None:
    """Gated promotion of target versions (MLflow registry alias `production`)."""


@release.command("status")
@click.option("--pipeline", default=None)
@click.option("--json", "as_json", is_flag=True)
def release_status(pipeline: str | None, as_json: bool) -> None:
    """Per target: production and candidate versions, and each gate's state."""
    from edgeops import release as releases
    from edgeops.spec import discover_declarations

    settings = Settings.resolve()
    client = _mlflow_client(settings)
    out = {}
    for declaration in discover_declarations(settings.pipelines_dir):
        if pipeline and declaration.spec.name != pipeline:
            continue
        out[declaration.spec.name] = releases.status(client, declaration, settings.home, settings.model_cards_dir)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for name, rows in out.items():
        for row in rows:
            click.echo(f"{name}/{row['target']}: production v{row['production'] or '-'}  candidate v{row['candidate'] or '-'}")
            for gate, state in row["gates"].items():
                click.echo(f"    {'ok  ' if state['passed'] else 'OPEN'} {gate}: {state['detail']}")


@release.command("promote")
@click.option("--pipeline", required=True)
@click.option("--target", required=True)
@click.option("--version", default=None, help="default: the latest registered version")
def release_promote(pipeline: str, target: str, version: str | None) -> None:
    """Move `production` to a version whose every gate passes (refused, and recorded, otherwise)."""
    from edgeops import release as releases

    settings, declaration = _declaration(pipeline)
    declaration.spec.target(target)
    result = releases.promote(_mlflow_client(settings), declaration, target, settings.home, settings.model_cards_dir,
                              _validated_dataset(settings, pipeline), version)
    click.echo(f"{result['model']}: production is now v{result['version']} (was {result['previous'] or 'none'}); "
               f"decision recorded in MLflow run {result['mlflow_run_id']}")


@main.command("rollback")
@click.option("--pipeline", required=True)
@click.option("--target", required=True)
@click.option("--to", "to_version", default=None, help="default: the previous production version")
@click.option("--reason", required=True)
def rollback_command(pipeline: str, target: str, to_version: str | None, reason: str) -> None:
    """Move `production` back to an earlier version and record why; artifacts stay intact."""
    from edgeops import release as releases

    settings, declaration = _declaration(pipeline)
    result = releases.rollback(_mlflow_client(settings), declaration, target, settings.home, reason, to_version)
    click.echo(f"{result['model']}: production rolled back from v{result['from']} to v{result['to']} (MLflow run {result['mlflow_run_id']})")


@main.command("lineage")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
def lineage_command(ref: str, as_json: bool) -> None:
    """From a model version (name/version), an artifact sha256 or a card id: back to the data, forward to releases."""
    from edgeops import release as releases

    settings = Settings.resolve()
    result = releases.lineage(_mlflow_client(settings), ref)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    for chain in result["chains"]:
        mv = chain["model_version"]
        click.echo(f"{mv['name']} v{mv['version']} sha256 {mv['sha256'][:16]} aliases {mv['aliases']}")
        click.echo(f"  <- compression run {chain['compression_run']}")
        click.echo(f"  <- DP model run {chain['dp_model_run']} (weights {str(chain['dp_model']['weights_sha256'])[:16]}, epsilon {chain['dp_model']['epsilon']})")
        click.echo(f"  <- dataset {str(chain['dataset']['digest'])[:16]} splits {chain['dataset']['splits']}")
        for bench in chain["benchmarks"]:
            click.echo(f"  -> benchmark run {bench['run']} on {bench['device']}: p95 {bench['p95_ms']} ms")
        click.echo(f"  -> card {chain['card']['card_id']} (review {chain['card']['review']})")
        for item in chain["releases"]:
            click.echo(f"  -> release {item['action']}: {item['decision']} ({item['reason']})")


@main.group()
def drift() -> None:
    """Drift monitoring."""


@drift.command("simulate")
@click.option("--pipeline", required=True)
@click.option("--kind", required=True, help="images: rotation, noise, brightness, contrast, occlusion; tables: covariate, label; or none")
@click.option("--severity", default="medium", help="low, medium, high, or a number in [0, 1]")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--batches", default=1, show_default=True)
@click.option("--rows", default=200, show_default=True)
@click.option("--seed", default=0, show_default=True)
def drift_simulate(pipeline: str, kind: str, severity: str, out_dir: Path, batches: int, rows: int, seed: int) -> None:
    """Write shifted (or, with --kind none, unshifted) batches drawn from the held-out test split."""
    from edgeops.drift import simulate

    settings, declaration = _declaration(pipeline)
    level = severity if severity in ("low", "medium", "high") else float(severity)
    for path in simulate(declaration, _validated_dataset(settings, pipeline), kind, level, out_dir, batches, rows, seed):
        click.echo(str(path))


@main.group()
def agent() -> None:
    """The device agent."""


@agent.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="loopback unless told otherwise")
@click.option("--port", default=8765, show_default=True)
@click.option("--token-file", default=None, help="file holding the bearer token (default: env EDGEOPS_AGENT_TOKEN)")
@click.option("--max-upload-mb", default=64, show_default=True)
def agent_serve(host: str, port: int, token_file: str | None, max_upload_mb: int) -> None:
    """Serve benchmarks on this device over HTTP (bearer token, size limits, OpenAPI at /openapi.json)."""
    from edgeops.hil.agent import load_token, serve

    serve(host, port, load_token(token_file=token_file), max_upload_mb * 1024 * 1024)


if __name__ == "__main__":
    main()
