"""The device agent: `edgeops agent serve` on the target device (a Raspberry Pi, a Jetson, an x86 box, this host).

It accepts an artifact and a benchmark request over HTTP, verifies the artifact's sha256, runs the benchmark in
a child process (so a crashing model cannot take the agent down) and returns the measurements.

Security: bearer token (from an env var or a file; compared in constant time), request body limit (413),
loopback by default, no file path ever taken from a request (uploads go to a private temp folder under a name
the agent chooses), evaluation data as .npy without pickle, an OpenAPI schema at /openapi.json.
Dependencies: fastapi, uvicorn, onnxruntime, numpy, psutil (the `agent` extra); no dagster, mlflow or torch.
"""


import hashlib
import hmac
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np

AGENT_VERSION = "0.1.0"
DEFAULT_MAX_UPLOAD_BYTES = 64 * 1024 * 1024


def load_token(token: str | None = None, token_file: str | None = None, env: str = "EDGEOPS_AGENT_TOKEN") -> str:
    if token_file:
        value = Path(token_file).read_text().strip()
    else:
        value = token or os.environ.get(env, "")
    if len(value) < 16:
        raise SystemExit(f"the agent needs a bearer token of at least 16 characters (set {env} or pass --token-file)")
    return value


def create_app(token: str, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, benchmark_timeout_s: float = 300.0):
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
        # Refuse oversized uploads before reading them: by Content-Length, and by counting when it is absent.
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_upload_bytes):
            return JSONResponse({"detail": f"request body larger than {max_upload_bytes} bytes"}, status_code=413)
        if length is None and request.method == "POST":
            received = 0
            chunks = []
            async for chunk in request.stream():
                received += len(chunk)
                if received > max_upload_bytes:
                    return JSONResponse({"detail": f"request body larger than {max_upload_bytes} bytes"}, status_code=413)
                chunks.append(chunk)
            body = b"".join(chunks)

            async def replay():
                return {"type": "http.request", "body": body, "more_body": False}
            request._receive = replay  # noqa: SLF001 - starlette's documented way to re-read a consumed body
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
                                      timeout_s=benchmark_timeout_s, max_seconds=parsed.max_seconds, min_runs=parsed.min_runs)
            except BenchmarkError as err:
                raise HTTPException(status_code=422, detail=str(err)) from None
        result["agent"] = {"version": AGENT_VERSION, "verified_sha256": actual, "benchmark_wall_s": time.perf_counter() - started}
        return result

    return app


def serve(host: str, port: int, token: str, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> None:
    import uvicorn

    if host not in {"127.0.0.1", "localhost", "::1"}:
        print(f"warning: the agent listens on {host}, beyond loopback; anyone who can reach it still needs the token")
    uvicorn.run(create_app(token, max_upload_bytes), host=host, port=port, log_level="warning")
