""" "Not measured" is its own outcome: neither passed nor failed in the run summary, and a release gate refuses it
unless the target names the check in accept_not_measured. Against a sqlite MLflow registry in tmp_path."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from helpers import REPO, table_declaration

from edgeops.errors import SpecError
from edgeops.report import FAILED, NOT_MEASURED, PASSED, check_outcome, not_measured_description
from edgeops.spec import Declaration, parse_spec, spec_sha256


def _declaration(tmp_path, accept: list[str] | None = None) -> Declaration:
    spec = table_declaration()
    if accept is not None:
        spec["targets"][0]["accept_not_measured"] = accept
    model = parse_spec(yaml.safe_dump(spec), "pipelines/tabular.yaml")
    return Declaration(model, tmp_path / "pipelines" / "tabular.yaml", tmp_path, spec_sha256(model))


def test_check_outcomes_are_three():
    assert check_outcome(True, "3.1 KB (budget 4 KB)") == PASSED
    assert check_outcome(False, "5.28% suspect labels (allowed 2%)") == FAILED
    assert check_outcome(False, not_measured_description("no CUDA device (target gpu_fp16)")) == NOT_MEASURED
    assert check_outcome(False, "gpu_fp16: not measured: no CUDA device") == FAILED  # only the leading prefix counts


def test_unknown_accept_not_measured_names_the_field():
    spec = table_declaration()
    spec["targets"][0]["accept_not_measured"] = ["latency_budget", "speed_budget"]
    with pytest.raises(SpecError) as caught:
        parse_spec(yaml.safe_dump(spec), "pipelines/tabular.yaml")
    ((path, message),) = caught.value.problems
    assert path == "targets.0.accept_not_measured" and "speed_budget" in message and "latency_budget" in message


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from edgeops.lineage import Lineage

    folder = tmp_path_factory.mktemp("mlflow")
    return Lineage(f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()).client


def _version(client, name: str, checks: dict[str, str]) -> str:
    client.create_registered_model(name)
    return str(
        client.create_model_version(
            name, "file:///nonexistent", tags={f"edgeops.check.{k}": v for k, v in checks.items()}
        ).version
    )


def test_gate_refuses_not_measured_unless_the_target_accepts_it(client, tmp_path):
    from edgeops.release import gates

    checks = {
        "size": "passed",
        "accuracy_drop": "passed",
        "parity": "passed",
        "latency": "not_measured",
        "memory": "not_measured",
    }
    version = _version(client, "tabular-cpu_float", checks)
    refused, text = gates(client, _declaration(tmp_path), "cpu_float", version, tmp_path, tmp_path)["checks"]
    assert (
        not refused
        and "latency=not_measured" in text
        and "memory=not_measured" in text
        and "accept_not_measured" in text
    )

    one = gates(client, _declaration(tmp_path, ["latency_budget"]), "cpu_float", version, tmp_path, tmp_path)["checks"]
    assert (
        one[0] is False and "memory=not_measured" in one[1] and "latency=" not in one[1]
    )  # only what the target named

    both, text = gates(
        client, _declaration(tmp_path, ["latency_budget", "memory_budget"]), "cpu_float", version, tmp_path, tmp_path
    )["checks"]
    assert both and "not measured, accepted by the target: latency, memory" in text


def test_accepting_not_measured_never_waives_a_failure(client, tmp_path):
    from edgeops.release import gates

    version = _version(
        client,
        "tabular-cpu_int8",
        {"size": "failed", "accuracy_drop": "passed", "parity": "passed", "latency": "passed", "memory": "passed"},
    )
    spec = table_declaration()
    spec["targets"][1]["accept_not_measured"] = ["size_budget"]
    model = parse_spec(yaml.safe_dump(spec))
    declaration = Declaration(model, tmp_path / "pipelines" / "tabular.yaml", tmp_path, spec_sha256(model))
    ok, text = gates(client, declaration, "cpu_int8", version, tmp_path, tmp_path)["checks"]
    assert not ok and "size=failed" in text


def test_lineage_of_nothing_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "workspace.yaml").write_text((REPO / "workspace.yaml").read_text())
    env = {
        "PATH": "/usr/bin:/bin",
        "EDGEOPS_ROOT": str(tmp_path),
        "EDGEOPS_HOME": str(tmp_path / ".edgeops"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    done = subprocess.run(
        [sys.executable, "-m", "edgeops.cli", "lineage", "digits-mobile_int8/7"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "digits-mobile_int8/7" in done.stderr, done.stderr


def _target(name: str, outcome: str, checks: list, not_measured: str | None = None):
    from edgeops.report import CheckSummary, TargetSummary

    return TargetSummary(
        name=name,
        device="cpu",
        runtime="onnxruntime",
        size_bytes=2048,
        accuracy=0.9,
        accuracy_drop_points=0.1,
        latency_b1_p50_ms=None if not_measured else 0.5,
        latency_b1_p95_ms=None if not_measured else 0.7,
        peak_memory_kb=None if not_measured else 100,
        memory_kind="host RSS beyond baseline",
        energy=f"not measured ({not_measured or 'no RAPL'})",
        not_measured=not_measured,
        checks=[CheckSummary(name=n, asset="hil_benchmark", outcome=o, reason=r) for n, o, r in checks],
        failed_steps=[],
        ran=True,
        outcome=outcome,
    )


def test_plain_summary_never_says_failed_for_a_target_only_not_measured():
    from edgeops.report import PipelineSummary, RunSummary, plain_lines

    targets = [
        _target(
            "gpu", NOT_MEASURED, [("latency_budget", NOT_MEASURED, "no CUDA device")], not_measured="no CUDA device"
        ),
        _target("small", FAILED, [("memory_budget", FAILED, "100 KB beyond baseline (budget 64 KB)")]),
        _target("ok", PASSED, [("latency_budget", PASSED, "p95 0.7 ms (budget 5 ms)")]),
    ]
    pipeline = PipelineSummary(
        name="p",
        ok=True,
        dp_test_accuracy=0.9,
        model_epsilon=1.0,
        model_delta=1e-5,
        ledger_epsilon_spent=1.0,
        ledger_delta_spent=1e-5,
        epsilon_budget=3.0,
        epsilon_left=2.0,
        delta_budget=1e-5,
        card_id="p/1",
        card_path="/cards/p/1",
        card_state="verifies",
        failed_steps=[],
        shared_checks=[],
        targets=targets,
    )
    lines = plain_lines(
        RunSummary(
            pipelines=[pipeline],
            event_log="/state/logs/run.log",
            dagster_home="d",
            mlflow_tracking_uri="m",
            outputs="o",
            cards="/cards",
        )
    )
    gpu = [line for line in lines if "gpu" in line or "no CUDA device" in line]
    assert gpu and not any("failed" in line for line in gpu), gpu
    assert "    failed check hil_benchmark/memory_budget (100 KB beyond baseline (budget 64 KB))" in lines
    assert "    not measured check hil_benchmark/latency_budget (no CUDA device)" in lines
    assert lines[-4] == "Event log:  /state/logs/run.log" and len(lines) <= 60
