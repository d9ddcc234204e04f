"""Client for the device agent: retries with exponential backoff, then a clear error naming the device."""

from __future__ import annotations

import io
import json
import time

import numpy as np

from edgeops.hil.runner import BenchmarkError

RETRYABLE_STATUS = {502, 503, 504}


class AgentClient:
    def __init__(self, device: str, url: str, token: str, retries: int = 3, backoff_s: float = 0.5, timeout_s: float = 600.0):
        self.device, self.url, self.token = device, url.rstrip("/"), token
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s

    def _post(self, path: str, **kwargs):
        import httpx

        last_error = ""
        for attempt in range(self.retries + 1):
            try:
                response = httpx.post(f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token}"}, timeout=self.timeout_s, **kwargs)
            except httpx.TransportError as err:
                last_error = f"{type(err).__name__}: {err}"
            else:
                if response.status_code not in RETRYABLE_STATUS:
                    return response
                last_error = f"HTTP {response.status_code}"
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2**attempt)
        raise BenchmarkError(f"device {self.device!r} at {self.url} unreachable after {self.retries + 1} attempts: {last_error}")

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
