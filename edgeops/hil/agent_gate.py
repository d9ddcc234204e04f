"""The device agent's front door: AgentGate (the ASGI middleware that checks the bearer token from the headers, caps
uploads in flight and spools request bodies to temporary files within the size and time limits, before any route
runs), its default limits and public paths, and load_token (the agent's token from a file or an env var).
edgeops.hil.agent puts it in front of every route and re-exports these names.
"""

import asyncio
import hmac
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_UPLOAD_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_INFLIGHT_UPLOADS = (
    4  # authenticated requests with a body at once; each may spool up to the upload limit to disk
)
PUBLIC_PATHS = frozenset({"/v1/health"})


class AgentGate:
    """The agent's front door: a plain ASGI middleware that decides from the request line and headers alone, before
    a single body byte is read.

    - Every path but the public ones (`/v1/health`) needs the bearer token (compared in constant time). A request
      without it is answered 401 at once; its body is never received, so it costs the same small, constant memory
      whatever its Content-Length (the server discards what the client still sends).
    - An authenticated request with a body claims one of `max_inflight_uploads` slots (429 with Retry-After when none
      is free, again without reading the body), then streams its body to a temporary file (on disk past 256 KiB),
      counting bytes (413 past `max_upload_bytes`) against a deadline (408 past `body_timeout_s`), and the endpoint
      reads it back from that file. The slot is held until the response is sent.
    """

    SPOOL_IN_MEMORY_BYTES = 256 * 1024
    REPLAY_CHUNK_BYTES = 64 * 1024

    def __init__(
        self,
        app: "ASGIApp",
        *,
        token: str,
        public_paths: frozenset[str],
        max_upload_bytes: int,
        body_timeout_s: float,
        max_inflight_uploads: int,
        retry_after_s: int,
    ) -> None:
        self.app, self.token = app, token.encode()
        self.public_paths, self.max_upload_bytes, self.body_timeout_s = public_paths, max_upload_bytes, body_timeout_s
        self.max_inflight_uploads, self.retry_after_s = max_inflight_uploads, retry_after_s
        self.inflight = 0  # one event loop: no lock needed between the check and the increment (no await between them)

    def authorized(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, credentials = headers.get(b"authorization", b"").partition(b" ")
        # compare_digest on every request, even without a header, so timing says nothing about the token
        return hmac.compare_digest(credentials.strip(), self.token) and scheme.lower() == b"bearer"

    @staticmethod
    async def answer(send: "Send", status: int, detail: str, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
        import json

        body = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: "Scope", receive: "Receive", send: "Send") -> None:
        if scope["type"] != "http":  # lifespan
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])  # ASGI servers lower-case header names
        if scope["path"] not in self.public_paths and not self.authorized(headers):
            return await self.answer(send, 401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")])
        length = headers.get(b"content-length")
        if (length is None and b"transfer-encoding" not in headers) or length == b"0":
            return await self.app(scope, receive, send)  # no body
        if length is not None and (not length.isdigit() or int(length) > self.max_upload_bytes):
            return await self.answer(send, 413, f"request body larger than {self.max_upload_bytes} bytes")
        if self.inflight >= self.max_inflight_uploads:
            return await self.answer(
                send,
                429,
                f"{self.max_inflight_uploads} uploads already in flight; retry later",
                [(b"retry-after", str(self.retry_after_s).encode())],
            )
        self.inflight += 1
        try:
            with tempfile.SpooledTemporaryFile(
                max_size=self.SPOOL_IN_MEMORY_BYTES, prefix="edgeops-agent-upload-"
            ) as spool:
                try:
                    outcome = await asyncio.wait_for(self.spool_body(receive, spool), timeout=self.body_timeout_s)
                except TimeoutError:
                    return await self.answer(send, 408, f"request body not received within {self.body_timeout_s:g} s")
                if outcome == "too large":
                    return await self.answer(send, 413, f"request body larger than {self.max_upload_bytes} bytes")
                if outcome == "disconnected":
                    return None
                size = spool.tell()
                spool.seek(0)
                await self.app(scope, self.replay(spool, size, receive), send)
        finally:
            self.inflight -= 1

    async def spool_body(self, receive: "Receive", spool: "tempfile.SpooledTemporaryFile[bytes]") -> str:
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return "disconnected"
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_upload_bytes:
                return "too large"
            spool.write(chunk)
            if not message.get("more_body", False):
                return "complete"

    def replay(self, spool: "tempfile.SpooledTemporaryFile[bytes]", size: int, receive: "Receive") -> "Receive":
        """The spooled body, handed to the endpoint in chunks; then the server's own receive (disconnect)."""
        done = False

        async def receive_from_spool() -> "Message":
            nonlocal done
            if done:
                return await receive()
            chunk = spool.read(self.REPLAY_CHUNK_BYTES)
            done = spool.tell() >= size
            return {"type": "http.request", "body": chunk, "more_body": not done}

        return receive_from_spool


def load_token(token: str | None = None, token_file: str | None = None, env: str = "EDGEOPS_AGENT_TOKEN") -> str:
    if token_file:
        value = Path(token_file).read_text().strip()
    else:
        value = token or os.environ.get(env, "")
    if len(value) < 16:
        raise SystemExit(f"the agent needs a bearer token of at least 16 characters (set {env} or pass --token-file)")
    return value
