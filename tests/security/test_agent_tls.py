"""Benchmark agents over TLS: `devices:` entries take `ca_cert` (pinned) and `insecure`, like delivery fleet entries;
plain http beyond loopback is refused in the declaration; the agent warns when it serves plain HTTP beyond loopback."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import socket
import threading
import time

import numpy as np
import pytest
import uvicorn
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import digits_declaration, matmul_onnx

from edgeops.errors import SpecError
from edgeops.hil.agent import create_app, startup_warnings
from edgeops.hil.client import AgentUnreachable, client_for
from edgeops.spec import DeviceSpec, parse_spec

TOKEN = "s" * 32


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _ca(common: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A throwaway CA, an agent certificate it signed for 127.0.0.1, and an unrelated CA."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _ca("edgeops test CA")
    _, other_cert = _ca("some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("edgeops agent"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.pem").write_bytes(_pem(ca_cert))
    (folder / "other-ca.pem").write_bytes(_pem(other_cert))
    (folder / "agent.pem").write_bytes(_pem(leaf))
    (folder / "agent-key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return folder


@pytest.fixture(scope="module")
def tls_agent(pki):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(TOKEN, max_upload_bytes=2_000_000),
            host="127.0.0.1",
            port=port,
            log_level="error",
            ssl_certfile=str(pki / "agent.pem"),
            ssl_keyfile=str(pki / "agent-key.pem"),
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"https://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _device(url: str, ca_cert: str | None) -> DeviceSpec:
    return DeviceSpec(name="pi_lab", kind="agent", url=url, token_env="PI_LAB_TOKEN", ca_cert=ca_cert)


def _bench(client):
    artifact = matmul_onnx(8)
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    return client.benchmark(
        artifact, hashlib.sha256(artifact).hexdigest(), x, None, batch_sizes=[1], max_seconds=0.2, min_runs=10
    )


def test_pinned_ca_reaches_the_agent_over_tls(pki, tls_agent):
    # ca_cert is relative to the project root (here the PKI folder), as in a declaration
    result = _bench(client_for(_device(tls_agent, "ca.pem"), TOKEN, pki, retries=0))
    assert (
        result["agent"]["verified_sha256"] == hashlib.sha256(matmul_onnx(8)).hexdigest()
        and result["latency"]["1"]["runs"] >= 10
    )


@pytest.mark.parametrize("ca", ["other-ca.pem", None], ids=["another-ca", "system-cas"])
def test_a_certificate_not_from_the_pinned_ca_is_refused_at_once(pki, tls_agent, ca):
    client = client_for(_device(tls_agent, ca), TOKEN, pki, retries=3, backoff_s=2.0)
    started = time.perf_counter()
    with pytest.raises(AgentUnreachable, match="device 'pi_lab' at https://127.0.0.1:.*TLS certificate not trusted"):
        _bench(client)
    assert time.perf_counter() - started < 2.0  # not retried: a wrong certificate does not get better


def test_missing_ca_cert_file_names_the_device(pki, tls_agent):
    with pytest.raises(AgentUnreachable, match="device 'pi_lab': ca_cert .*nope.pem is not a readable PEM"):
        client_for(_device(tls_agent, "nope.pem"), TOKEN, pki)


def _problems(devices: list[dict], fleet: list[dict] | None = None) -> list[tuple[str, str]]:
    spec = digits_declaration()
    spec["devices"] = spec["devices"] + devices
    if fleet is not None:
        spec.setdefault("delivery", {})["fleet"] = fleet
    try:
        parse_spec(yaml.safe_dump(spec), "pipelines/test.yaml")
    except SpecError as err:
        assert "pipelines/test.yaml" in str(err)
        return err.problems
    return []


def test_plain_http_beyond_loopback_is_refused_unless_insecure():
    phone = {"name": "phone", "kind": "agent", "url": "http://192.0.2.10:8765", "token_env": "PHONE_AGENT_TOKEN"}
    [(path, message)] = _problems([phone])
    index = len(digits_declaration()["devices"])
    assert (
        path == f"devices.{index}"
        and "device 'phone'" in message
        and "url 'http://192.0.2.10:8765' is plain http" in message
    )
    assert "insecure: true" in message
    assert _problems([{**phone, "insecure": True}]) == []
    assert _problems([{**phone, "url": "http://127.0.0.1:8765"}]) == []  # loopback
    assert _problems([{**phone, "url": "https://192.0.2.10:8765", "ca_cert": "deploy/certs/phone.pem"}]) == []
    [(_, message)] = _problems([{**phone, "ca_cert": "deploy/certs/phone.pem", "insecure": True}])
    assert "ca_cert is for TLS" in message
    [(_, message)] = _problems([{"name": "laptop2", "kind": "local", "insecure": True}])
    assert "are for kind: agent" in message


def test_fleet_entries_follow_the_same_rule():
    member = {"name": "pi_1", "target": "float_baseline", "url": "http://192.0.2.20:8765", "token_env": "PI_TOKEN"}
    problems = _problems([], [member])
    assert [p for p, _ in problems] == ["delivery.fleet.0"] and "device 'pi_1'" in problems[0][1]
    assert _problems([], [{**member, "url": "https://192.0.2.20:8765", "ca_cert": "c.pem"}]) == []


def test_serving_plain_http_beyond_loopback_warns_at_start_up(monkeypatch, pki):
    from click.testing import CliRunner

    from edgeops.cli import main

    assert startup_warnings("127.0.0.1", False) == [] and startup_warnings("localhost", False) == []
    assert startup_warnings("::1", False) == []
    [warning] = startup_warnings("0.0.0.0", False)
    assert "plain HTTP on 0.0.0.0" in warning and "--tls-cert" in warning
    assert not any("plain HTTP" in line for line in startup_warnings("0.0.0.0", True))

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: started.append({**kwargs, "app": app}))
    monkeypatch.setenv("EDGEOPS_AGENT_TOKEN", TOKEN)
    result = CliRunner().invoke(main, ["agent", "serve", "--host", "0.0.0.0", "--port", "9"])
    assert result.exit_code == 0, result.output
    assert "warning: the agent serves plain HTTP on 0.0.0.0" in result.output and started[0]["host"] == "0.0.0.0"
    result = CliRunner().invoke(main, ["agent", "serve", "--port", "9"])
    assert result.exit_code == 0 and "warning" not in result.output
    result = CliRunner().invoke(
        main,
        [
            "agent",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "9",
            "--tls-cert",
            str(pki / "agent.pem"),
            "--tls-key",
            str(pki / "agent-key.pem"),
        ],
    )
    assert result.exit_code == 0 and "plain HTTP" not in result.output
    assert started[-1]["ssl_certfile"] == str(pki / "agent.pem") and started[-1]["ssl_keyfile"] == str(
        pki / "agent-key.pem"
    )
    folder = pki / "self-signed"
    result = CliRunner().invoke(
        main, ["agent", "serve", "--host", "0.0.0.0", "--port", "9", "--self-signed-tls", "--tls-dir", str(folder)]
    )
    assert result.exit_code == 0 and "plain HTTP" not in result.output, result.output
    assert f"give it to clients as ca_cert): {folder / 'agent-cert.pem'}" in result.output
    assert (
        started[-1]["ssl_certfile"] == str(folder / "agent-cert.pem")
        and (folder / "agent-key.pem").stat().st_mode & 0o077 == 0
    )
    result = CliRunner().invoke(main, ["agent", "serve", "--port", "9", "--max-inflight-uploads", "2", "--no-docs"])
    assert result.exit_code == 0, result.output
    gate = started[-1]["app"].user_middleware[0]
    assert gate.kwargs["max_inflight_uploads"] == 2 and started[-1]["app"].openapi_url is None
    assert (
        started[-2]["app"].user_middleware[0].kwargs["max_inflight_uploads"] == 4
        and started[-2]["app"].openapi_url == "/openapi.json"
    )
