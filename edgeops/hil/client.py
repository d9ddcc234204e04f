"""Client for the device agent: retries with exponential backoff, then a clear error naming the device."""

from __future__ import annotations

import io
import json
import ssl
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from edgeops.hil.runner import BenchmarkError

if TYPE_CHECKING:
    import httpx
    from numpy.typing import ArrayLike

    from edgeops.spec import DeviceSpec, FleetDevice

RETRYABLE_STATUS = {502, 503, 504}


class AgentUnreachable(BenchmarkError):
    pass


class AgentRefused(BenchmarkError):
    """The agent answered with an error: the text is its reason."""


def pinned_context(device: str, ca_cert: str | Path) -> ssl.SSLContext:
    """A TLS context that trusts this one PEM file (the agent's self-signed certificate or its CA) and nothing else."""
    try:
        return ssl.create_default_context(cafile=str(ca_cert))
    except (OSError, ssl.SSLError) as err:
        raise AgentUnreachable(
            f"device {device!r}: ca_cert {ca_cert} is not a readable PEM certificate: {err}"
        ) from None


def client_for(entry: DeviceSpec | FleetDevice, token: str, root: Path | None, **kwargs: Any) -> AgentClient:
    """The client for a declared agent (a `devices:` entry or a `delivery.fleet` entry: spec.AgentEndpoint), its
    ca_cert resolved against the project root and pinned. The declaration has already refused plain http beyond
    loopback unless the entry says insecure: true."""
    verify: bool | ssl.SSLContext = True
    if entry.ca_cert:
        path = Path(entry.ca_cert)
        verify = pinned_context(entry.name, path if path.is_absolute() or root is None else root / path)
    # an agent entry always has a url (DeviceSpec refuses kind: agent without one)
    return AgentClient(entry.name, cast(str, entry.url), token, verify=verify, **kwargs)


class AgentClient:
    def __init__(
        self,
        device: str,
        url: str,
        token: str,
        *,
        retries: int = 3,
        backoff_s: float = 0.5,
        timeout_s: float = 600.0,
        verify: bool | str | Path | ssl.SSLContext = True,
    ) -> None:
        """`verify`: True (system CAs), an SSL context, or the path of the one certificate to trust (pinned)."""
        self.device, self.url, self.token = device, url.rstrip("/"), token
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s
        self.verify = pinned_context(device, verify) if isinstance(verify, (str, Path)) else verify
        self.failed_attempts: list[str] = []  # why each attempt of the last request failed (retries made visible)

    def _post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self._request("POST", path, **kwargs)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        import httpx

        last_error = ""
        self.failed_attempts = []
        for attempt in range(self.retries + 1):
            try:
                response = httpx.request(
                    method,
                    f"{self.url}{path}",
                    headers={"Authorization": f"Bearer {self.token}"},
                    timeout=self.timeout_s,
                    verify=self.verify,
                    **kwargs,
                )
            except httpx.TransportError as err:
                last_error = f"{type(err).__name__}: {err}"
                if isinstance(
                    err.__cause__ or err.__context__, ssl.SSLCertVerificationError
                ) or "CERTIFICATE_VERIFY_FAILED" in str(err):
                    # A certificate that does not chain to the pinned one will not start to on a retry.
                    raise AgentUnreachable(
                        f"device {self.device!r} at {self.url}: TLS certificate not trusted ({last_error}); "
                        "check the entry's ca_cert"
                    ) from None
            else:
                if response.status_code not in RETRYABLE_STATUS:
                    return response
                last_error = f"HTTP {response.status_code}"
            self.failed_attempts.append(last_error)
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2**attempt)
        raise AgentUnreachable(
            f"device {self.device!r} at {self.url} unreachable after {self.retries + 1} attempts: {last_error}"
        )

    def benchmark(
        self, artifact: bytes, sha256: str, inputs: np.ndarray, labels: np.ndarray | None, **request: Any
    ) -> dict[str, Any]:
        def npy(array: np.ndarray) -> bytes:
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            return buffer.getvalue()

        files = {
            "artifact": ("artifact.onnx", artifact, "application/octet-stream"),
            "inputs": ("inputs.npy", npy(inputs.astype(np.float32)), "application/octet-stream"),
        }
        if labels is not None:
            files["labels"] = ("labels.npy", npy(labels.astype(np.int64)), "application/octet-stream")
        response = self._post("/v1/benchmark", data={"request": json.dumps({"sha256": sha256, **request})}, files=files)
        if response.status_code != 200:
            raise BenchmarkError(
                f"device {self.device!r} refused the benchmark: HTTP {response.status_code}: {response.text[:500]}"
            )
        return cast("dict[str, Any]", response.json())

    # ------------------------------------------------------------ delivery
    def _json(self, method: str, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
        response = self._request(method, path, **kwargs)
        if response.status_code != 200:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise AgentRefused(
                f"device {self.device!r} refused {what}: HTTP {response.status_code}: {str(detail)[:1000]}"
            )
        return cast("dict[str, Any]", response.json())

    def identity(self) -> dict[str, Any]:
        return self._json("GET", "/v1/identity", "the identity request")

    def status(self) -> dict[str, Any]:
        return self._json("GET", "/v1/status", "the status request")

    def install(self, bundle: bytes, allow_downgrade: bool = False) -> dict[str, Any]:
        return self._json(
            "POST",
            "/v1/bundles",
            "the bundle",
            content=bundle,
            params={"allow_downgrade": str(allow_downgrade).lower()},
        )

    def rollback(self, reason: str) -> dict[str, Any]:
        return self._json("POST", "/v1/rollback", "the rollback", json={"reason": reason})

    def infer(self, inputs: ArrayLike) -> dict[str, Any]:
        return self._json(
            "POST", "/v1/infer", "the inference", json={"inputs": np.asarray(inputs, dtype=np.float32).tolist()}
        )
