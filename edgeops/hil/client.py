"""Client for the device agent: retries with exponential backoff, then a clear error naming the device."""

from __future__ import annotations

import io
import json
import time

import numpy as np

from edgeops.hil.runner import BenchmarkError

RETRYABLE_STATUS = {502, 503, 504}


class AgentUnreachable(BenchmarkError):
    pass


class AgentRefused(BenchmarkError):
    """The agent answered with an error: the text is its reason."""


class AgentClient:
    def __init__(self, device: str, url: str, token: str, retries: int = 3, backoff_s: float = 0.5, timeout_s: float = 600.0,
                 verify: bool | str = True):
        """`verify`: True (system CAs), or the path of the agent's own certificate to pin (self-signed)."""
        self.device, self.url, self.token = device, url.rstrip("/"), token
        self.retries, self.backoff_s, self.timeout_s, self.verify = retries, backoff_s, timeout_s, verify

    def _post(self, path: str, **kwargs):
        return self._request("POST", path, **kwargs)

    def _request(self, method: str, path: str, **kwargs):
        import httpx

        last_error = ""
        for attempt in range(self.retries + 1):
            try:
                response = httpx.request(method, f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token}"},
                                         timeout=self.timeout_s, verify=self.verify, **kwargs)
            except httpx.TransportError as err:
                last_error = f"{type(err).__name__}: {err}"
            else:
                if response.status_code not in RETRYABLE_STATUS:
                    return response
                last_error = f"HTTP {response.status_code}"
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2**attempt)
        raise AgentUnreachable(f"device {self.device!r} at {self.url} unreachable after {self.retries + 1} attempts: {last_error}")

    def benchmark(self, artifact: bytes, sha256: str, inputs: np.ndarray, labels: np.ndarray | None, **request) -> dict:
        def npy(array) -> bytes:
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            return buffer.getvalue()

        files = {"artifact": ("artifact.onnx", artifact, "application/octet-stream"),
                 "inputs": ("inputs.npy", npy(inputs.astype(np.float32)), "application/octet-stream")}
        if labels is not None:
            files["labels"] = ("labels.npy", npy(labels.astype(np.int64)), "application/octet-stream")
        response = self._post("/v1/benchmark", data={"request": json.dumps({"sha256": sha256, **request})}, files=files)
        if response.status_code != 200:
            raise BenchmarkError(f"device {self.device!r} refused the benchmark: HTTP {response.status_code}: {response.text[:500]}")
        return response.json()

    # ------------------------------------------------------------ delivery
    def _json(self, method: str, path: str, what: str, **kwargs) -> dict:
        response = self._request(method, path, **kwargs)
        if response.status_code != 200:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise AgentRefused(f"device {self.device!r} refused {what}: HTTP {response.status_code}: {str(detail)[:1000]}")
        return response.json()

    def identity(self) -> dict:
        return self._json("GET", "/v1/identity", "the identity request")

    def status(self) -> dict:
        return self._json("GET", "/v1/status", "the status request")

    def install(self, bundle: bytes, allow_downgrade: bool = False) -> dict:
        return self._json("POST", "/v1/bundles", "the bundle", content=bundle, params={"allow_downgrade": str(allow_downgrade).lower()})

    def rollback(self, reason: str) -> dict:
        return self._json("POST", "/v1/rollback", "the rollback", json={"reason": reason})

    def infer(self, inputs) -> dict:
        return self._json("POST", "/v1/infer", "the inference", json={"inputs": np.asarray(inputs, dtype=np.float32).tolist()})
