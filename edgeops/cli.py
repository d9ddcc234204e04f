"""The `edgeops` command. Heavy libraries are imported inside each command, so `--help` is instant.

Commands that need Dagster reach it through pipelines/ (importlib), keeping the core free of dagster imports.
"""

from __future__ import annotations

import importlib
import json
import os
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
@click.option("--progress/--no-progress", default=None, help="progress bars on stderr (default: when stderr is a terminal)")
def run(pipeline: str | None, select: str | None, strict: bool, progress: bool | None) -> None:
    """Materialize the pipelines through the project's Dagster instance (runs show in the UI).

    Exits 1 when a shared stage fails (data, training, card). A target that misses its budgets is reported and
    the others carry on; with --strict that exits 1 as well."""
    from edgeops.errors import StateFolderError
    from edgeops.progress import terminal_bars
    from edgeops.settings import check_state_folder, looks_like_disk_full

    settings = Settings.resolve()
    check_state_folder(settings.home)  # before Dagster or MLflow write a byte
    launch = importlib.import_module("pipelines.launch")

    bars = sys.stderr.isatty() if progress is None else progress
    if bars:  # Dagster's per-step DEBUG events would bury the bars; the UI's event log keeps them all
        os.environ.setdefault("EDGEOPS_CONSOLE_LOG_LEVEL", "INFO")
    try:
        with terminal_bars(bars):
            reports = launch.run_pipelines(settings, pipeline, select.split(",") if select else None)
    except Exception as err:
        if looks_like_disk_full(err):
            # Stages swap their outputs in only when complete (staging folders, one-row ledger transactions), so what
            # the last good run left (models, registry aliases, cards) is as it was.
            raise StateFolderError(f"the filesystem of the state folder {settings.home} filled up during the run "
                                   f"({type(err).__name__}: {str(err).splitlines()[0][:200]}). Nothing completed was replaced; "
                                   "free space and run again") from None
        raise
    ok = True
    missed = []
    for report in reports:
        for item in report.runs:
            state = "ok" if item["success"] else "FAILED"
            where = f" [{item['partition']}]" if item["partition"] else ""
            click.echo(f"{report.pipeline}{where}: {state} dagster run {item['run_id']}")
            for step in item["failed_steps"]:
                reason = item.get("errors", {}).get(step)
                click.echo(f"  failed step: {step}" + (f": {reason}" if reason else ""))
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
        if not stats.get("measured", True):
            click.echo(f"{target} on {target_spec.device} batch {batch}: not measured: {stats['reason']}")
            continue
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
            for device in row.get("devices", []):
                if device["reachable"]:
                    click.echo(f"    device {device['device']}: active v{device['active_version'] or '-'}"
                               + (" (in probation)" if device["in_probation"] else ""))
                else:
                    click.echo(f"    device {device['device']}: unreachable ({device['detail']})")


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


@release.command("rollout")
@click.option("--pipeline", required=True)
@click.option("--target", required=True)
@click.option("--version", default=None, help="default: the production version")
def release_rollout(pipeline: str, target: str, version: str | None) -> None:
    """Deliver a released version to the target's fleet, stage by stage; halts on the first unhealthy device."""
    from edgeops.delivery import rollout

    settings, declaration = _declaration(pipeline)
    declaration.spec.target(target)
    result = rollout(_mlflow_client(settings), declaration, target, settings.home, version)
    for row in result["devices"]:
        click.echo(f"stage {row['stage']} {row['device']}: {row['detail']}")
    click.echo(f"{result['model']} v{result['version']}: {result['decision']} (MLflow run {result['mlflow_run_id']})")


@main.group()
def bundle() -> None:
    """Release bundles."""


@bundle.command("verify")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--public-key", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the signer's ed25519 public key (default: this project's, under the state folder)")
@click.option("--device-key", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="a device's X25519 private key, to also decrypt and check the artifact of an encrypted bundle")
def bundle_verify(path: Path, public_key: Path | None, device_key: Path | None) -> None:
    """Check a bundle offline: signature, payload length and hash, and (with --device-key) decryption and artifact hash."""
    from cryptography.hazmat.primitives import serialization

    from edgeops import bundle as bundles
    from edgeops.signing import load_public, public_key_path

    key_path = public_key or public_key_path(Settings.resolve().home)
    if not key_path.exists():
        raise EdgeopsError(f"{key_path}: no public key to verify with (pass --public-key)")
    trusted = load_public(key_path.read_bytes(), str(key_path))
    blob = path.read_bytes()
    private = None
    if device_key:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        private = serialization.load_pem_private_key(device_key.read_bytes(), password=None)
        if not isinstance(private, X25519PrivateKey):
            raise EdgeopsError(f"{device_key}: not an X25519 private key (a device's key is under <agent home>/identity/x25519.pem)")
    # The header is read unverified only to choose how far to check; both paths verify the signature first.
    payload = bundles.read_header(blob, str(path))[0].get("payload")
    encrypted = isinstance(payload, dict) and bool(payload.get("encryption"))
    if encrypted and private is None:
        manifest, _ = bundles.verify_envelope(blob, trusted, str(path))
    else:
        manifest = bundles.verify(blob, trusted, private, str(path)).manifest
    click.echo(json.dumps(bundles.describe(manifest), indent=2))
    click.echo(f"{path}: OK" + (" (encrypted: artifact hash not checked without --device-key)" if encrypted and private is None else ""))


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
    from edgeops.progress import terminal_bars

    settings, declaration = _declaration(pipeline)
    level = severity if severity in ("low", "medium", "high") else float(severity)
    with terminal_bars(sys.stderr.isatty()):
        paths = simulate(declaration, _validated_dataset(settings, pipeline), kind, level, out_dir, batches, rows, seed)
    for path in paths:
        click.echo(str(path))


@main.group()
def agent() -> None:
    """The device agent."""


@agent.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="loopback unless told otherwise")
@click.option("--port", default=8765, show_default=True)
@click.option("--token-file", default=None, help="file holding the bearer token (default: env EDGEOPS_AGENT_TOKEN)")
@click.option("--max-upload-mb", default=64, show_default=True)
@click.option("--home", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="the agent's own state folder (device key, bundles, active version); turns on delivery")
@click.option("--target", default=None, help="the target this device runs (bundles for other targets are refused)")
@click.option("--trust", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the release signer's ed25519 public key (PEM); only bundles it signed are installed")
@click.option("--probation", default=20, show_default=True, help="first inferences of a new model watched for failure")
@click.option("--tls-cert", default=None, type=click.Path(exists=True, dir_okay=False))
@click.option("--tls-key", default=None, type=click.Path(exists=True, dir_okay=False))
@click.option("--self-signed-tls", is_flag=True, help="generate (once) and use a self-signed certificate under --home")
@click.option("--local-data", default=None, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="folder of on-device datasets (<name>/x.npy, y.npy) for POST /v1/personalize; they never leave the device")
@click.option("--allow-returns", default="metrics", show_default=True, type=click.Choice(["nothing", "metrics", "delta"]),
              help="the most a personalization job may send back (set it to the declaration's personalization.returns)")
@click.option("--power-meter", default=None, help="file with this device's instantaneous power draw (energy per inference)")
@click.option("--power-unit", default="mW", show_default=True, type=click.Choice(["W", "mW", "uW"]))
def agent_serve(host: str, port: int, token_file: str | None, max_upload_mb: int, home: Path | None, target: str | None,
                trust: Path | None, probation: int, tls_cert: str | None, tls_key: str | None, self_signed_tls: bool,
                local_data: Path | None, allow_returns: str, power_meter: str | None, power_unit: str) -> None:
    """Serve benchmarks (and, with --home/--target/--trust, verified updates and inference) over HTTP(S)."""
    from edgeops.hil.agent import AGENT_VERSION, load_token, self_signed_pair, serve

    updater = None
    if home or target or trust:
        if not (home and target and trust):
            raise EdgeopsError("delivery needs --home, --target and --trust together")
        from edgeops.hil.updater import Updater
        from edgeops.signing import load_public

        updater = Updater(home, target, load_public(trust.read_bytes(), str(trust)), AGENT_VERSION, probation=probation)
        click.echo(f"device {updater.device_id} target {target}: active version {updater.status()['active_version']}")
    if self_signed_tls:
        if not home:
            raise EdgeopsError("--self-signed-tls keeps its pair under --home")
        cert, key = self_signed_pair(home / "tls", (host, "localhost", "127.0.0.1"))
        tls_cert, tls_key = str(cert), str(key)
        click.echo(f"TLS certificate (give it to clients as ca_cert): {cert}")
    if local_data and not updater:
        raise EdgeopsError("--local-data personalizes the active model: it needs --home, --target and --trust")
    serve(host, port, load_token(token_file=token_file), max_upload_mb * 1024 * 1024, updater=updater, tls_cert=tls_cert, tls_key=tls_key,
          local_data=local_data, allow_returns=allow_returns,
          power_meter={"path": power_meter, "unit": power_unit} if power_meter else None)


if __name__ == "__main__":
    main()
