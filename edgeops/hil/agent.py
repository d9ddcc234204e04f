"""The device agent: `edgeops agent serve` on the target device (a Raspberry Pi, a Jetson, an x86 box, this host).

It accepts an artifact and a benchmark request over HTTP, verifies the artifact's sha256, runs the benchmark in
a child process (so a crashing model cannot take the agent down) and returns the measurements.

Security: bearer token (from an env var or a file; compared in constant time) checked from the headers before any
body is read (AgentGate), request body limit (413), a cap on uploads in flight (429 with Retry-After), uploads
streamed to temporary files, loopback by default (a warning when served beyond it without TLS), no file path ever
taken from a request (uploads go to a private temp folder under a name the agent chooses), evaluation data as .npy
without pickle, an OpenAPI schema at /openapi.json behind the token (or switched off).
Dependencies: fastapi, uvicorn, onnxruntime, numpy, psutil (the `agent` extra); no dagster, mlflow or torch.
The front door (AgentGate, the token, the upload limits) is in edgeops.hil.agent_gate and the delivery and
personalization routes in edgeops.hil.agent_routes; their names are re-exported here.
"""

import hashlib
import hmac
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeops.hil.agent_gate import (
    DEFAULT_MAX_INFLIGHT_UPLOADS,
    DEFAULT_MAX_UPLOAD_BYTES,
    PUBLIC_PATHS,
    AgentGate,
)
from edgeops.hil.agent_gate import load_token as load_token
from edgeops.hil.agent_routes import RETURNS_ORDER as RETURNS_ORDER
from edgeops.hil.agent_routes import _add_delivery_routes, _add_personalization_route
from edgeops.hil.version import AGENT_VERSION as AGENT_VERSION

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from fastapi import FastAPI

    from edgeops.hil.updater import Updater


def create_app(
    token: str,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    benchmark_timeout_s: float = 300.0,
    updater: "Updater | None" = None,
    local_data: Path | None = None,
    body_timeout_s: float = 60.0,
    allow_returns: str = "metrics",
    power_meter: dict[str, Any] | None = None,
    max_inflight_uploads: int = DEFAULT_MAX_INFLIGHT_UPLOADS,
    retry_after_s: int = 2,
    docs: bool = True,
    device_budget: tuple[float, float] | None = None,
    receipt_key: "Ed25519PrivateKey | None" = None,
) -> "FastAPI":
    """`updater` (an edgeops.hil.updater.Updater) turns on the delivery endpoints: bundles, rollback, status, infer;
    with `local_data` (a folder of <dataset>/x.npy, y.npy on this device) also on-device personalization of the active
    model.
    `power_meter` ({"path", "unit"}) is this device's power reading file, used for energy per inference.
    `device_budget` (epsilon, delta) is the device's total for DP personalization (default: edgeops.hil.personalize's).
    `receipt_key` (ed25519, edgeops.hil.receipts.device_key) signs every benchmark result into a receipt.
    Authentication, body limits and the cap on concurrent uploads live in AgentGate, in front of every route."""
    from fastapi import Depends, FastAPI, File, Form, HTTPException, UploadFile
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from pydantic import BaseModel, Field

    from edgeops.hil.harness import device_facts
    from edgeops.hil.runner import BenchmarkError, run_isolated

    # The schema and its UIs need the token like everything else (AgentGate); `docs=False` removes them altogether.
    app = FastAPI(
        title="edgeops device agent",
        version=AGENT_VERSION,
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        description="Benchmarks model artifacts on this device. All endpoints but /v1/health need a bearer token.",
    )
    bearer = HTTPBearer(auto_error=False)

    app.add_middleware(
        AgentGate,
        token=token,
        public_paths=PUBLIC_PATHS,
        max_upload_bytes=max_upload_bytes,
        body_timeout_s=body_timeout_s,
        max_inflight_uploads=max_inflight_uploads,
        retry_after_s=retry_after_s,
    )

    def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(
                status_code=401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    class BenchmarkRequest(BaseModel):
        sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
        batch_sizes: list[int] = Field([1], min_length=1, max_length=8)
        threads: int = Field(1, ge=1, le=256)
        cores: list[int] | None = None
        macs: int | None = Field(None, ge=0)
        max_seconds: float = Field(10.0, gt=0, le=600)
        min_runs: int = Field(200, ge=10, le=1_000_000)
        nonce: str | None = Field(
            None, pattern=r"^[0-9a-f]{16,128}$", description="echoed in the signed receipt (replay protection)"
        )

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "agent_version": AGENT_VERSION}

    @app.get("/v1/facts", dependencies=[Depends(authorized)])
    def facts() -> dict[str, Any]:
        if receipt_key is None:
            return device_facts()
        from edgeops.hil.receipts import public_text

        return device_facts() | {
            "receipt_public_key": public_text(receipt_key.public_key())
        }  # what devices[].receipt_public_key declares

    @app.post("/v1/benchmark", dependencies=[Depends(authorized)])
    def benchmark(
        request: str = Form(..., description="BenchmarkRequest as JSON"),
        artifact: UploadFile = File(..., description="the ONNX artifact"),
        inputs: UploadFile = File(..., description="evaluation inputs, .npy float32 (N, features), no pickle"),
        labels: UploadFile | None = File(None, description="evaluation labels, .npy int64 (N,)"),
    ) -> dict[str, Any]:
        try:
            parsed = BenchmarkRequest.model_validate_json(request)
        except Exception as err:
            raise HTTPException(status_code=422, detail=f"bad benchmark request: {err}") from None
        if any(b < 1 or b > 4096 for b in parsed.batch_sizes):
            raise HTTPException(status_code=422, detail="batch sizes must be within 1..4096")
        with tempfile.TemporaryDirectory(prefix="edgeops-agent-") as folder:
            path = Path(folder) / "artifact.onnx"  # the agent's own name: nothing from the request becomes a path
            digest = hashlib.sha256()
            with path.open("wb") as out:  # copied from the spooled upload in chunks, hashed on the way
                for chunk in iter(lambda: artifact.file.read(1024 * 1024), b""):
                    digest.update(chunk)
                    out.write(chunk)
            actual = digest.hexdigest()
            if not hmac.compare_digest(actual, parsed.sha256):
                raise HTTPException(
                    status_code=400, detail=f"artifact sha256 mismatch: received {actual}, declared {parsed.sha256}"
                )
            try:
                x = np.load(inputs.file, allow_pickle=False)
                y = np.load(labels.file, allow_pickle=False) if labels is not None else None
            except (ValueError, OSError, EOFError) as err:
                raise HTTPException(status_code=422, detail=f"inputs/labels must be plain .npy arrays: {err}") from None
            if (
                not isinstance(x, np.ndarray)
                or x.ndim != 2
                or (y is not None and (not isinstance(y, np.ndarray) or len(y) != len(x)))
            ):
                raise HTTPException(status_code=422, detail="inputs must be (N, features) and labels (N,)")
            started = time.perf_counter()
            try:
                result = run_isolated(
                    path,
                    x,
                    y,
                    batch_sizes=parsed.batch_sizes,
                    threads=parsed.threads,
                    cores=parsed.cores,
                    macs=parsed.macs,
                    timeout_s=benchmark_timeout_s,
                    max_seconds=parsed.max_seconds,
                    min_runs=parsed.min_runs,
                    power_meter=power_meter,
                )
            except BenchmarkError as err:
                raise HTTPException(status_code=422, detail=str(err)) from None
        result["agent"] = {
            "version": AGENT_VERSION,
            "verified_sha256": actual,
            "benchmark_wall_s": time.perf_counter() - started,
        }
        if receipt_key is not None:
            from edgeops.hil.receipts import make_receipt

            result["receipt"] = make_receipt(
                receipt_key, dict(result), parsed.nonce, actual, device_facts(), AGENT_VERSION
            )
        return result

    if updater is not None:
        _add_delivery_routes(app, updater, authorized)
        if local_data is not None:
            _add_personalization_route(app, updater, authorized, Path(local_data), allow_returns, device_budget)
    return app


def self_signed_pair(folder: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> tuple[Path, Path]:
    """A TLS certificate and key for the embedded default (created once under <folder>, key 0600). Clients pin the
    certificate file itself (`verify=<cert>`), so no certificate authority is involved."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = folder / "agent-cert.pem", folder / "agent-key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgeops device agent")])
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def startup_warnings(host: str, tls: bool) -> list[str]:
    """What `serve` prints before it starts: plain HTTP beyond loopback sends the token and the uploads in clear."""
    import ipaddress

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return []
    if not tls:
        return [
            f"warning: the agent serves plain HTTP on {host}, beyond loopback: the bearer token and every upload cross "
            "the network in clear. Serve TLS (--tls-cert/--tls-key or --self-signed-tls) and give clients its "
            "certificate "
            "as the device's ca_cert."
        ]
    return [f"note: the agent listens on {host}, beyond loopback, over TLS; every call but /v1/health needs the token"]


def serve(
    host: str,
    port: int,
    *,
    token: str,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    updater: "Updater | None" = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    local_data: Path | None = None,
    allow_returns: str = "metrics",
    power_meter: dict[str, Any] | None = None,
    max_inflight_uploads: int = DEFAULT_MAX_INFLIGHT_UPLOADS,
    docs: bool = True,
    device_budget: tuple[float, float] | None = None,
    receipt_key: "Ed25519PrivateKey | None" = None,
) -> None:
    import sys

    import uvicorn

    if bool(tls_cert) != bool(tls_key):
        raise SystemExit("--tls-cert and --tls-key go together")
    for line in startup_warnings(host, bool(tls_cert)):
        print(line, file=sys.stderr, flush=True)
    uvicorn.run(
        create_app(
            token,
            max_upload_bytes=max_upload_bytes,
            updater=updater,
            local_data=local_data,
            allow_returns=allow_returns,
            power_meter=power_meter,
            max_inflight_uploads=max_inflight_uploads,
            docs=docs,
            device_budget=device_budget,
            receipt_key=receipt_key,
        ),
        host=host,
        port=port,
        log_level="warning",
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
    )
