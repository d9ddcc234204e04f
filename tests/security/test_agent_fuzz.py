"""The device agent fuzzed through its own OpenAPI schema (schemathesis): whatever a client sends, with or without
the token, the agent answers with a client error or a result, never a server error (5xx)."""

from __future__ import annotations

import numpy as np
import pytest
import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from edgeops.hil.agent import AGENT_VERSION, create_app
from edgeops.hil.updater import Updater

TOKEN = "f" * 32


def build_app():
    import tempfile
    from pathlib import Path

    home = Path(tempfile.mkdtemp(prefix="edgeops-fuzz-"))
    local = home / "local"
    (local / "user1").mkdir(parents=True)
    np.save(local / "user1" / "x.npy", np.zeros((20, 3), np.float32))
    np.save(local / "user1" / "y.npy", np.zeros(20, np.int64))
    updater = Updater(home / "agent", "phone", Ed25519PrivateKey.generate().public_key(), AGENT_VERSION, probation=3)
    return create_app(TOKEN, max_upload_bytes=100_000, benchmark_timeout_s=30, updater=updater, local_data=local, body_timeout_s=5)


schema = schemathesis.openapi.from_asgi("/openapi.json", build_app())


@pytest.mark.parametrize("authorized", [True, False], ids=["with-token", "without-token"])
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_makes_the_agent_fail(case, authorized):
    headers = {"Authorization": f"Bearer {TOKEN}"} if authorized else {}
    case.call_and_validate(headers=headers, checks=[not_a_server_error])
