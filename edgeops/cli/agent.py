"""`agent serve`: the device agent's HTTP(S) server, with delivery and personalization when configured."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import click

from edgeops.errors import EdgeopsError


@click.group()
def agent() -> None:
    """The device agent."""


@agent.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="loopback unless told otherwise")
@click.option("--port", default=8765, show_default=True)
@click.option("--token-file", default=None, help="file holding the bearer token (default: env EDGEOPS_AGENT_TOKEN)")
@click.option("--max-upload-mb", default=64, show_default=True)
@click.option(
    "--max-inflight-uploads",
    default=None,
    type=click.IntRange(min=1),
    help="authenticated uploads received at once; more are answered 429 with Retry-After (default: the agent's, 4)",
)
@click.option("--no-docs", is_flag=True, help="switch off /openapi.json and /docs (otherwise they need the token too)")
@click.option(
    "--home",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="the agent's own state folder (receipt key, device key, bundles, active version); "
    "with --target and --trust turns on delivery",
)
@click.option("--target", default=None, help="the target this device runs (bundles for other targets are refused)")
@click.option(
    "--trust",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="the release signer's ed25519 public key (PEM); only bundles it signed are installed",
)
@click.option("--probation", default=20, show_default=True, help="first inferences of a new model watched for failure")
@click.option("--tls-cert", default=None, type=click.Path(exists=True, dir_okay=False))
@click.option("--tls-key", default=None, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--self-signed-tls", is_flag=True, help="generate (once) and use a self-signed certificate under --tls-dir"
)
@click.option(
    "--tls-dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="where --self-signed-tls keeps its pair (default: <--home>/tls)",
)
@click.option(
    "--local-data",
    default=None,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="folder of on-device datasets (<name>/x.npy, y.npy) for POST /v1/personalize; they never leave the device",
)
@click.option(
    "--allow-returns",
    default="metrics",
    show_default=True,
    type=click.Choice(["nothing", "metrics", "delta"]),
    help="the most a personalization job may send back (set it to the declaration's personalization.returns)",
)
@click.option(
    "--power-meter", default=None, help="file with this device's instantaneous power draw (energy per inference)"
)
@click.option("--power-unit", default="mW", show_default=True, type=click.Choice(["W", "mW", "uW"]))
@click.option(
    "--device-epsilon",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="this device's total epsilon for DP personalization jobs, kept under --home (default 8)",
)
@click.option(
    "--device-delta",
    default=None,
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    help="this device's total delta for DP personalization jobs (default 1e-5)",
)
def agent_serve(
    *,
    host: str,
    port: int,
    token_file: str | None,
    max_upload_mb: int,
    max_inflight_uploads: int | None,
    no_docs: bool,
    home: Path | None,
    target: str | None,
    trust: Path | None,
    probation: int,
    tls_cert: str | None,
    tls_key: str | None,
    self_signed_tls: bool,
    tls_dir: Path | None,
    local_data: Path | None,
    allow_returns: str,
    power_meter: str | None,
    power_unit: str,
    device_epsilon: float | None,
    device_delta: float | None,
) -> None:
    """Serve benchmarks (and, with --home/--target/--trust, verified updates and inference) over HTTP(S)."""
    from edgeops.hil.agent import AGENT_VERSION, load_token, self_signed_pair, serve

    updater = None
    receipt_key = None
    if home:  # the agent's own ed25519 key signs its benchmark receipts (made on first start)
        from edgeops.hil.receipts import device_key, public_text

        receipt_key = device_key(home)
        click.echo(
            f"receipt key (declare it as the device's receipt_public_key): {public_text(receipt_key.public_key())}"
        )
    if target or trust:
        if not (home and target and trust):
            raise EdgeopsError("delivery needs --home, --target and --trust together")
        from edgeops.hil.updater import Updater
        from edgeops.signing import load_public

        updater = Updater(home, target, load_public(trust.read_bytes(), str(trust)), AGENT_VERSION, probation=probation)
        click.echo(f"device {updater.device_id} target {target}: active version {updater.status()['active_version']}")
    if self_signed_tls:
        if not (tls_dir or home):
            raise EdgeopsError("--self-signed-tls keeps its pair under --tls-dir (or --home)")
        cert, key = self_signed_pair(tls_dir or cast(Path, home) / "tls", (host, "localhost", "127.0.0.1"))
        tls_cert, tls_key = str(cert), str(key)
        click.echo(f"TLS certificate (give it to clients as ca_cert): {cert}")
    if local_data and not updater:
        raise EdgeopsError("--local-data personalizes the active model: it needs --home, --target and --trust")
    serve(
        host,
        port,
        token=load_token(token_file=token_file),
        max_upload_bytes=max_upload_mb * 1024 * 1024,
        updater=updater,
        tls_cert=tls_cert,
        tls_key=tls_key,
        local_data=local_data,
        allow_returns=allow_returns,
        docs=not no_docs,
        **({"max_inflight_uploads": max_inflight_uploads} if max_inflight_uploads else {}),
        power_meter={"path": power_meter, "unit": power_unit} if power_meter else None,
        device_budget=_device_budget(device_epsilon, device_delta),
        receipt_key=receipt_key,
    )


def _device_budget(epsilon: float | None, delta: float | None) -> tuple[float, float]:
    from edgeops.hil.personalize import DEFAULT_DEVICE_DELTA, DEFAULT_DEVICE_EPSILON

    return (DEFAULT_DEVICE_EPSILON if epsilon is None else epsilon, DEFAULT_DEVICE_DELTA if delta is None else delta)
