"""Releases and what proves them: `release` (status, promote, rollout, evidence, verify-evidence), `rollback`,
`attest verify` and `bundle verify`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from edgeops.cli.common import mlflow_client, settings_and_declaration, validated_dataset
from edgeops.errors import EdgeopsError
from edgeops.settings import Settings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


Command = TypeVar("Command", bound=Callable[..., Any])


def public_key_option(help_text: str) -> Callable[[Command], Command]:
    """`--public-key`: the ed25519 public key a verify command checks signatures with (read by `_trusted_key`);
    `help_text` says whose key it is and where it is read from when the option is left out."""
    return click.option(
        "--public-key", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path), help=help_text
    )


# The signing key of a release that an offline verifier trusts; an evidence folder carries its own copy under keys/.
trusted_release_key_option = public_key_option(
    "the release's ed25519 public key you trust (default: the folder's keys/signing_ed25519.pub)"
)


def _trusted_key(key_path: Path) -> Ed25519PublicKey:
    """The ed25519 public key a verify command checks signatures with (EdgeopsError naming the path if it is not a
    file)."""
    from edgeops.signing import load_public

    if not key_path.is_file():
        raise EdgeopsError(f"{key_path}: no public key to verify with (pass --public-key)")
    return load_public(key_path.read_bytes(), str(key_path))


@click.group()
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
    client = mlflow_client(settings)
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
            click.echo(
                f"{name}/{row['target']}: production v{row['production'] or '-'}  candidate v{row['candidate'] or '-'}"
            )
            for gate, state in row["gates"].items():
                click.echo(f"    {'ok  ' if state['passed'] else 'OPEN'} {gate}: {state['detail']}")
            for device in row.get("devices", []):
                if device["reachable"]:
                    click.echo(
                        f"    device {device['device']}: active v{device['active_version'] or '-'}"
                        + (" (in probation)" if device["in_probation"] else "")
                    )
                else:
                    click.echo(f"    device {device['device']}: unreachable ({device['detail']})")


@release.command("promote")
@click.option("--pipeline", required=True)
@click.option("--target", required=True)
@click.option("--version", default=None, help="default: the latest registered version")
def release_promote(pipeline: str, target: str, version: str | None) -> None:
    """Move `production` to a version whose every gate passes (refused, and recorded, otherwise)."""
    from edgeops import release as releases

    settings, declaration = settings_and_declaration(pipeline)
    declaration.spec.target(target)
    result = releases.promote(
        mlflow_client(settings),
        declaration,
        target,
        settings.home,
        settings.model_cards_dir,
        validated_dataset(settings, pipeline),
        version=version,
    )
    click.echo(
        f"{result.model}: production is now v{result.version} (was {result.previous or 'none'}); "
        f"decision recorded in MLflow run {result.mlflow_run_id}"
    )


@release.command("rollout")
@click.option("--pipeline", required=True)
@click.option("--target", required=True)
@click.option("--version", default=None, help="default: the production version")
def release_rollout(pipeline: str, target: str, version: str | None) -> None:
    """Deliver a released version to the target's fleet, stage by stage; halts on the first unhealthy device."""
    from edgeops.delivery import rollout

    settings, declaration = settings_and_declaration(pipeline)
    declaration.spec.target(target)
    result = rollout(mlflow_client(settings), declaration, target, settings.home, version=version)
    for row in result["devices"]:
        click.echo(f"stage {row['stage']} {row['device']}: {row['detail']}")
    click.echo(f"{result['model']} v{result['version']}: {result['decision']} (MLflow run {result['mlflow_run_id']})")


@release.command("evidence")
@click.option("--pipeline", required=True)
@click.option("--target", required=True)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="a new folder")
@click.option("--version", default=None, help="default: the production version")
def release_evidence(pipeline: str, target: str, out: Path, version: str | None) -> None:
    """Export one release's evidence (card, OMS signatures, attestation, ML-BOM, ledger, receipts, review history) to a
    folder that verifies offline; written at promotion, built now for a version promoted before evidence existed."""
    from edgeops import evidence
    from edgeops.registry import PRODUCTION, alias_version, registered_name

    settings, declaration = settings_and_declaration(pipeline)
    declaration.spec.target(target)
    client = mlflow_client(settings)
    name = registered_name(declaration.spec.name, target)
    version = version or alias_version(client, name, PRODUCTION)
    if not version:
        raise EdgeopsError(f"{name} has no production version; pass --version")
    source = evidence.evidence_folder(settings.home, name, version, target)
    if not source.is_dir():
        evidence.write(client, declaration, target, version, settings.home)
    evidence.copy(source, out)
    click.echo(f"{name} v{version}: evidence in {out} (verifies; see {out / 'README.md'})")


@release.command("verify-evidence")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@trusted_release_key_option
@click.option(
    "--oms-public-key",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="the OMS (P-256) public key you trust (default: the folder's keys/oms_p256.pub)",
)
def release_verify_evidence(folder: Path, public_key: Path | None, oms_public_key: Path | None) -> None:
    """Verify an evidence folder offline, with no edgeops state: OMS signatures, attestation chain, card signature,
    ML-BOM schema and the benchmark receipt."""
    from edgeops import evidence

    checked = evidence.verify(folder, public_key, oms_public_key)
    for name, state in checked.items():
        click.echo(f"{name}: {state}")
    click.echo(f"{folder}: evidence verifies")


@click.command("rollback")
@click.option("--pipeline", required=True)
@click.option("--target", required=True)
@click.option("--to", "to_version", default=None, help="default: the previous production version")
@click.option("--reason", required=True)
def rollback_command(pipeline: str, target: str, to_version: str | None, reason: str) -> None:
    """Move `production` back to an earlier version and record why; artifacts stay intact."""
    from edgeops import release as releases

    settings, declaration = settings_and_declaration(pipeline)
    result = releases.rollback(mlflow_client(settings), declaration, target, settings.home, reason, to=to_version)
    click.echo(
        f"{result.model}: production rolled back from v{result.previous} to v{result.version} "
        f"(MLflow run {result.mlflow_run_id})"
    )


@click.group()
def attest() -> None:
    """in-toto attestations of released artifacts."""


@attest.command("verify")
@click.argument("artifact", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--evidence",
    "folder",
    default=None,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="the release's evidence folder (default: the folder above the artifact's artifact/ folder)",
)
@trusted_release_key_option
def attest_verify(artifact: Path, folder: Path | None, public_key: Path | None) -> None:
    """Walk the attestation's chain: DSSE signature, subject = the artifact's sha256, every linked digest, and the
    ledger entries that paid for it."""
    from edgeops import attest as attestations

    folder = folder or artifact.resolve().parent.parent
    statement = attestations.verify(
        artifact, folder, _trusted_key(public_key or folder / "keys" / "signing_ed25519.pub")
    )
    for at, node in attestations.links(statement["predicate"]):
        click.echo(f"ok  {at}: {node['name']} sha256 {node['digest']['sha256'][:16]}...")
    privacy = statement["predicate"]["privacy"]
    for entry in privacy.get("entries", []):
        click.echo(
            f"ok  ledger entry {entry['id']} ({entry.get('mechanism')}) sha256 {entry['digest']['sha256'][:16]}..."
        )
    click.echo(
        f"{artifact.name}: attestation verifies "
        f"(subject sha256 {statement['subject'][0]['digest']['sha256'][:16]}..., "
        f"epsilon {privacy['epsilon']:.4g}, delta {privacy['delta']:.3g})"
    )


@click.group()
def bundle() -> None:
    """Release bundles."""


@bundle.command("verify")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@public_key_option("the signer's ed25519 public key (default: this project's, under the state folder)")
@click.option(
    "--device-key",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="a device's X25519 private key, to also decrypt and check the artifact of an encrypted bundle",
)
def bundle_verify(path: Path, public_key: Path | None, device_key: Path | None) -> None:
    """Check a bundle offline: signature, payload length and hash, and (with --device-key) decryption and artifact
    hash."""
    from cryptography.hazmat.primitives import serialization

    from edgeops import bundle as bundles
    from edgeops.signing import public_key_path

    trusted = _trusted_key(public_key or public_key_path(Settings.resolve().home))
    blob = path.read_bytes()
    private = None
    if device_key:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        private = serialization.load_pem_private_key(device_key.read_bytes(), password=None)
        if not isinstance(private, X25519PrivateKey):
            raise EdgeopsError(
                f"{device_key}: not an X25519 private key (a device's key is under <agent home>/identity/x25519.pem)"
            )
    # The header is read unverified only to choose how far to check; both paths verify the signature first.
    payload = bundles.read_header(blob, str(path))[0].get("payload")
    encrypted = isinstance(payload, dict) and bool(payload.get("encryption"))
    if encrypted and private is None:
        manifest, _ = bundles.verify_envelope(blob, trusted, str(path))
    else:
        manifest = bundles.verify(blob, trusted, private, str(path)).manifest
    click.echo(json.dumps(bundles.describe(manifest), indent=2))
    unchecked = encrypted and private is None
    click.echo(f"{path}: OK" + (" (encrypted: artifact hash not checked without --device-key)" if unchecked else ""))
