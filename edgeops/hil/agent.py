"""The device agent: `edgeops agent serve` on the target device (a Raspberry Pi, a Jetson, an x86 box, this host).

It accepts an artifact and a benchmark request over HTTP, verifies the artifact's sha256, runs the benchmark in
a child process (so a crashing model cannot take the agent down) and returns the measurements.

Security: bearer token (from an env var or a file; compared in constant time), request body limit (413),
loopback by default, no file path ever taken from a request (uploads go to a private temp folder under a name
the agent chooses), evaluation data as .npy without pickle, an OpenAPI schema at /openapi.json.
Dependencies: fastapi, uvicorn, onnxruntime, numpy, psutil (the `agent` extra); no dagster, mlflow or torch.
"""


import asyncio
import hashlib
import hmac
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np

AGENT_VERSION = "0.2.0"
DEFAULT_MAX_UPLOAD_BYTES = 64 * 1024 * 1024


def load_token(token: str | None = None, token_file: str | None = None, env: str = "EDGEOPS_AGENT_TOKEN") -> str:
    if token_file:
        value = Path(token_file).read_text().strip()
    else:
        value = token or os.environ.get(env, "")
    if len(value) < 16:
        raise SystemExit(f"the agent needs a bearer token of at least 16 characters (set {env} or pass --token-file)")
    return value


def create_app(token: str, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, benchmark_timeout_s: float = 300.0, updater=None,
               local_data: Path | None = None, body_timeout_s: float = 60.0, allow_returns: str = "metrics",
               power_meter: dict | None = None):
    """`updater` (an edgeops.hil.updater.Updater) turns on the delivery endpoints: bundles, rollback, status, infer; with
    `local_data` (a folder of <dataset>/x.npy, y.npy on this device) also on-device personalization of the active model.
    `power_meter` ({"path", "unit"}) is this device's power reading file, used for energy per inference."""
    from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
    from fastapi.responses import JSONResponse
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from pydantic import BaseModel, Field

    from edgeops.hil.harness import device_facts
    from edgeops.hil.runner import BenchmarkError, run_isolated

    app = FastAPI(title="edgeops device agent", version=AGENT_VERSION,
                  description="Benchmarks model artifacts on this device. All endpoints but /v1/health need a bearer token.")
    bearer = HTTPBearer(auto_error=False)

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        # Refuse oversized uploads before reading them (by Content-Length, and by counting as the body arrives), and
        # uploads that trickle in (a slow client would otherwise hold a worker): the whole body within body_timeout_s.
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_upload_bytes):
            return JSONResponse({"detail": f"request body larger than {max_upload_bytes} bytes"}, status_code=413)
        if request.method == "POST":
            async def read_body() -> bytes | None:
                received, chunks = 0, []
                async for chunk in request.stream():
                    received += len(chunk)
                    if received > max_upload_bytes:
                        return None
                    chunks.append(chunk)
                return b"".join(chunks)

            try:
                body = await asyncio.wait_for(read_body(), timeout=body_timeout_s)
            except asyncio.TimeoutError:
                return JSONResponse({"detail": f"request body not received within {body_timeout_s:g} s"}, status_code=408)
            if body is None:
                return JSONResponse({"detail": f"request body larger than {max_upload_bytes} bytes"}, status_code=413)
            request._body = body  # noqa: SLF001 - BaseHTTPMiddleware replays a request's cached body to the endpoint
        return await call_next(request)

    def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    class BenchmarkRequest(BaseModel):
        sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
        batch_sizes: list[int] = Field([1], min_length=1, max_length=8)
        threads: int = Field(1, ge=1, le=256)
        cores: list[int] | None = None
        macs: int | None = Field(None, ge=0)
        max_seconds: float = Field(10.0, gt=0, le=600)
        min_runs: int = Field(200, ge=10, le=1_000_000)

    @app.get("/v1/health")
    def health() -> dict:
        return {"status": "ok", "agent_version": AGENT_VERSION}

    @app.get("/v1/facts", dependencies=[Depends(authorized)])
    def facts() -> dict:
        return device_facts()

    @app.post("/v1/benchmark", dependencies=[Depends(authorized)])
    def benchmark(request: str = Form(..., description="BenchmarkRequest as JSON"),
                  artifact: UploadFile = File(..., description="the ONNX artifact"),
                  inputs: UploadFile = File(..., description="evaluation inputs, .npy float32 (N, features), no pickle"),
                  labels: UploadFile | None = File(None, description="evaluation labels, .npy int64 (N,)")) -> dict:
        try:
            parsed = BenchmarkRequest.model_validate_json(request)
        except Exception as err:
            raise HTTPException(status_code=422, detail=f"bad benchmark request: {err}") from None
        if any(b < 1 or b > 4096 for b in parsed.batch_sizes):
            raise HTTPException(status_code=422, detail="batch sizes must be within 1..4096")
        blob = artifact.file.read()
        actual = hashlib.sha256(blob).hexdigest()
        if not hmac.compare_digest(actual, parsed.sha256):
            raise HTTPException(status_code=400, detail=f"artifact sha256 mismatch: received {actual}, declared {parsed.sha256}")
        try:
            x = np.load(io.BytesIO(inputs.file.read()), allow_pickle=False)
            y = np.load(io.BytesIO(labels.file.read()), allow_pickle=False) if labels is not None else None
        except ValueError as err:
            raise HTTPException(status_code=422, detail=f"inputs/labels must be plain .npy arrays: {err}") from None
        if x.ndim != 2 or (y is not None and len(y) != len(x)):
            raise HTTPException(status_code=422, detail="inputs must be (N, features) and labels (N,)")
        with tempfile.TemporaryDirectory(prefix="edgeops-agent-") as folder:
            path = Path(folder) / "artifact.onnx"  # the agent's own name: nothing from the request becomes a path
            path.write_bytes(blob)
            started = time.perf_counter()
            try:
                result = run_isolated(path, x, y, parsed.batch_sizes, parsed.threads, parsed.cores, parsed.macs,
                                      timeout_s=benchmark_timeout_s, max_seconds=parsed.max_seconds, min_runs=parsed.min_runs,
                                      power_meter=power_meter)
            except BenchmarkError as err:
                raise HTTPException(status_code=422, detail=str(err)) from None
        result["agent"] = {"version": AGENT_VERSION, "verified_sha256": actual, "benchmark_wall_s": time.perf_counter() - started}
        return result

    if updater is not None:
        _add_delivery_routes(app, updater, authorized)
        if local_data is not None:
            _add_personalization_route(app, updater, authorized, Path(local_data), allow_returns)
    return app


RETURNS_ORDER = ("nothing", "metrics", "delta")  # each reveals more about the device's data than the one before


def _add_personalization_route(app, updater, authorized, local_data: Path, allow_returns: str) -> None:
    from typing import Literal

    from fastapi import Depends, HTTPException
    from pydantic import BaseModel, Field

    from edgeops.hil.personalize import PersonalizationError, load_local_data, personalize
    from edgeops.hil.updater import UpdateRefused

    class PersonalizeRequest(BaseModel):
        dataset: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="a folder name under the agent's --local-data")
        steps: int = Field(200, gt=0, le=100_000)
        learning_rate: float = Field(0.05, gt=0, le=10)
        batch_size: int = Field(32, gt=0, le=4096)
        holdout: float = Field(0.3, gt=0, lt=1)
        clipping_norm: float | None = Field(None, gt=0)
        noise_multiplier: float = Field(0.0, ge=0)
        returns: Literal["delta", "metrics", "nothing"] = "metrics"

    @app.post("/v1/personalize", dependencies=[Depends(authorized)])
    def personalize_active(body: PersonalizeRequest) -> dict:
        """Fine-tune the active model's last layer on a local dataset; the data never leaves this device."""
        if RETURNS_ORDER.index(body.returns) > RETURNS_ORDER.index(allow_returns):
            raise HTTPException(status_code=403, detail=f"this device returns at most {allow_returns!r} from personalization; "
                                                        f"{body.returns!r} was asked")
        folder = local_data / body.dataset
        if ".." in body.dataset or not folder.is_dir():
            raise HTTPException(status_code=404, detail=f"no local dataset {body.dataset!r} on this device")
        try:
            artifact, version = updater.active_artifact()
            x, y = load_local_data(folder)
            result = personalize(artifact, x, y, **body.model_dump(exclude={"dataset"}))
        except (UpdateRefused, PersonalizationError) as err:
            raise HTTPException(status_code=409 if isinstance(err, UpdateRefused) else 422, detail=str(err)) from None
        return {"version": version, **result}


def _add_delivery_routes(app, updater, authorized) -> None:
    from fastapi import Depends, HTTPException, Request
    from pydantic import BaseModel, Field

    from edgeops.bundle import BundleError, device_public_pem
    from edgeops.hil.updater import BadRequest, UpdateRefused

    class RollbackRequest(BaseModel):
        reason: str = Field(min_length=1, max_length=2000)

    class InferRequest(BaseModel):
        inputs: list[list[float]] = Field(min_length=1, max_length=4096)

    @app.get("/v1/identity", dependencies=[Depends(authorized)])
    def identity() -> dict:
        return {"device_id": updater.device_id, "target": updater.target, "agent_version": AGENT_VERSION,
                "encryption_public_key": device_public_pem(updater.device_key.public_key())}

    @app.get("/v1/status", dependencies=[Depends(authorized)])
    def status() -> dict:
        return updater.status()

    @app.post("/v1/bundles", dependencies=[Depends(authorized)])
    async def install(request: Request, allow_downgrade: bool = False) -> dict:
        import anyio

        blob = await request.body()
        try:  # verification and the smoke test are CPU work: keep the event loop free for inference requests
            return await anyio.to_thread.run_sync(lambda: updater.install(blob, allow_downgrade=allow_downgrade))
        except UpdateRefused as err:
            raise HTTPException(status_code=409, detail=str(err)) from None
        except BundleError as err:
            raise HTTPException(status_code=400, detail=str(err)) from None

    @app.post("/v1/rollback", dependencies=[Depends(authorized)])
    def rollback(body: RollbackRequest) -> dict:
        try:
            return updater.rollback(body.reason)
        except BundleError as err:
            raise HTTPException(status_code=409, detail=str(err)) from None

    @app.post("/v1/infer", dependencies=[Depends(authorized)])
    def infer(body: InferRequest) -> dict:
        try:
            x = np.asarray(body.inputs, dtype=np.float32)
        except ValueError:  # rows of different lengths (found by the schemathesis fuzz test)
            raise HTTPException(status_code=422, detail="inputs must be rows of equal length") from None
        try:
            outputs, version = updater.infer(x)
        except UpdateRefused as err:
            raise HTTPException(status_code=409, detail=str(err)) from None
        except BadRequest as err:
            raise HTTPException(status_code=422, detail=str(err)) from None
        except Exception as err:
            raise HTTPException(status_code=422, detail=f"inference failed: {type(err).__name__}: {err}"[:500]) from None
        return {"version": version, "outputs": outputs.tolist()}


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
    names = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def serve(host: str, port: int, token: str, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, updater=None,
          tls_cert: str | None = None, tls_key: str | None = None, local_data: Path | None = None, allow_returns: str = "metrics",
          power_meter: dict | None = None) -> None:
    import uvicorn

    if host not in {"127.0.0.1", "localhost", "::1"}:
        print(f"warning: the agent listens on {host}, beyond loopback; anyone who can reach it still needs the token")
    if bool(tls_cert) != bool(tls_key):
        raise SystemExit("--tls-cert and --tls-key go together")
    uvicorn.run(create_app(token, max_upload_bytes, updater=updater, local_data=local_data, allow_returns=allow_returns,
                           power_meter=power_meter), host=host, port=port, log_level="warning",
                ssl_certfile=tls_cert, ssl_keyfile=tls_key)
