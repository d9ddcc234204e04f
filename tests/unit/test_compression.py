"""Compression recipes on a small DP model of the test table: each step really changes the artifact, and bad
recipes fail naming the target and field."""

from __future__ import annotations

import json

import onnx
import pytest

from conftest import table_declaration, table_frame
from edgeops.compression import STEP_HANDLERS, budget_outcomes, build_target
from edgeops.errors import CompressionError
from edgeops.ledger import Budget, PrivacyLedger
from edgeops.spec import DistillStep, Fp16Step, Int8Step, PruneStep, TargetSpec, load_declaration
from edgeops.training import run_dp_training
from test_training_privacy import RecordingRun


def train_dp_model(declaration, root, budget: Budget):
    """Ingest and DP-train a declaration outside Dagster, as the pipeline's stages do: (dp_model, ledger)."""
    from edgeops.data import ingest
    from test_data_validation import NullRun

    ref = ingest(declaration, root / "datasets", NullRun())
    ledger = PrivacyLedger(root / "ledger.sqlite", budget)
    run = RecordingRun()
    dp_model = run_dp_training(declaration.spec, ref, ledger, root / "models", run)
    dp_model["mlflow_run_id"] = run.run_id
    return dp_model, ledger


def trained_tiny_digits(tmp_path_factory, name: str, extra_devices: tuple = ()):
    """A small DP CNN on the digits (tiny profile, 3 epochs), trained once for a test module: yields
    (declaration, dp_model, ledger, root)."""
    from conftest import Project, tiny_digits

    monkeypatch = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp(name)
    project = Project(root / "project", monkeypatch)
    spec = tiny_digits()
    spec["training"]["epochs"] = 3
    spec["devices"].extend(extra_devices)
    declaration = load_declaration(project.declare(spec))
    dp_model, ledger = train_dp_model(declaration, root, Budget(20, 1e-5))
    yield declaration, dp_model, ledger, root
    monkeypatch.undo()


@pytest.fixture
def trained(project, tmp_path):
    spec = table_declaration()
    spec["model"]["hidden"] = [128, 64]  # large enough that weights, not QDQ graph overhead, dominate the file
    spec["training"]["epochs"] = 6
    project.write_csv(table_frame(400))
    declaration = load_declaration(project.declare(spec))
    dp_model, ledger = train_dp_model(declaration, tmp_path, Budget(20, 1e-4))
    return declaration, dp_model, ledger


def test_every_step_has_one_handler():
    assert set(STEP_HANDLERS) == {PruneStep, Int8Step, Fp16Step, DistillStep}


def test_int8_is_smaller_valid_and_close(trained, tmp_path):
    declaration, dp_model, _ = trained
    record = build_target(declaration, declaration.spec.target("cpu_int8"), dp_model, tmp_path / "int8")
    onnx.checker.check_model(record["artifact_path"])
    ops = {node.op_type for node in onnx.load(record["artifact_path"]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert record["size_bytes"] < 0.6 * record["float_size_bytes"]
    assert record["top1_agreement"] > 0.9
    assert "synthetic" in record["steps"][0]["calibration"] and record["steps"][0]["privacy"].startswith("no private data")


def test_pruning_removes_parameters_and_finetune_is_charged(trained, tmp_path):
    declaration, dp_model, ledger = trained
    target = TargetSpec.model_validate({"name": "pruned", "device": "cpu", "recipe": [
        {"step": "prune", "ratio": 0.5, "finetune": {"epsilon": 1.0, "epochs": 2}}]})
    spent_before = ledger.spent()[0]
    record = build_target(declaration, target, dp_model, tmp_path / "pruned", ledger)
    assert record["parameters"] < 0.7 * dp_model["parameters"]
    assert ledger.spent()[0] == pytest.approx(spent_before + record["steps"][0]["finetune"]["epsilon"])
    assert "charged epsilon" in record["steps"][0]["privacy"]


def test_fp16_halves_weights_and_keeps_parity(trained, tmp_path):
    declaration, dp_model, _ = trained
    target = TargetSpec.model_validate({"name": "half", "device": "cpu", "recipe": [{"step": "fp16"}]})
    record = build_target(declaration, target, dp_model, tmp_path / "fp16")
    assert record["size_bytes"] < 0.75 * record["float_size_bytes"]
    assert record["parity_relative"] < 0.02


def test_budget_the_float_model_already_violates(trained, tmp_path):
    declaration, dp_model, _ = trained
    target = TargetSpec.model_validate({"name": "tiny", "device": "cpu", "budgets": {"max_size_kb": 0.5}})
    with pytest.raises(CompressionError, match="target 'tiny': budgets.max_size_kb"):
        build_target(declaration, target, dp_model, tmp_path / "tiny")


def test_failed_rebuild_keeps_the_previous_artifact(trained, tmp_path, monkeypatch):
    declaration, dp_model, _ = trained
    target = declaration.spec.target("cpu_int8")
    first = build_target(declaration, target, dp_model, tmp_path / "same")
    import edgeops.compression as compression

    def broken(*_):
        raise RuntimeError("killed mid-build")

    monkeypatch.setitem(compression.STEP_HANDLERS, Int8Step, broken)
    with pytest.raises(RuntimeError):
        build_target(declaration, target, dp_model, tmp_path / "same")
    from edgeops.data import file_sha256

    assert file_sha256(first["artifact_path"]) == first["sha256"]
    assert json.loads((tmp_path / "same" / "record.json").read_text())["sha256"] == first["sha256"]


def test_budget_outcomes_report_measured_numbers(trained, tmp_path):
    declaration, dp_model, _ = trained
    target = TargetSpec.model_validate({"name": "strict", "device": "cpu", "recipe": [{"step": "int8"}],
                                        "budgets": {"max_size_kb": 0.1, "max_accuracy_drop_points": 100}})
    record = build_target(declaration, target, dp_model, tmp_path / "strict")
    outcomes = budget_outcomes(record, target)
    assert outcomes["size"][0] is False and "KB (budget 0.1 KB)" in outcomes["size"][1]
    assert outcomes["accuracy_drop"][0] is True


def test_distillation_trains_a_smaller_student_with_dp_and_charges_it(trained, tmp_path):
    declaration, dp_model, ledger = trained
    target = TargetSpec.model_validate({"name": "student", "device": "cpu", "recipe": [
        {"step": "distill", "student": {"family": "mlp", "hidden": [8]}, "epsilon": 2.0, "epochs": 4, "temperature": 2.0},
        {"step": "int8"}]})
    spent_before = ledger.spent()[0]
    record = build_target(declaration, target, dp_model, tmp_path / "student", ledger)
    distill = record["steps"][0]
    assert distill["step"] == "distill" and distill["parameters_student"] < 0.2 * distill["parameters_teacher"]
    assert record["parameters"] == distill["parameters_student"] and record["size_bytes"] < 0.3 * record["float_size_bytes"]
    assert record["accuracy"] > 0.8  # the student learns the (easy) table from the teacher and the labels
    assert ledger.spent()[0] == pytest.approx(spent_before + distill["distill"]["epsilon"])
    assert "distillation" in ledger.entries()[-1].mechanism


def test_distill_must_come_first_and_not_with_prune():
    from edgeops.spec import parse_spec
    import yaml

    spec = table_declaration()
    spec["targets"][1]["recipe"] = [{"step": "int8"}, {"step": "distill", "student": {"family": "mlp"}, "epsilon": 1}]
    with pytest.raises(Exception, match="distill must come first"):
        parse_spec(yaml.safe_dump(spec))
    spec["targets"][1]["recipe"] = [{"step": "distill", "student": {"family": "cnn"}, "epsilon": 1}]
    with pytest.raises(Exception, match="cnn student needs dataset.kind: image"):
        parse_spec(yaml.safe_dump(spec))


def test_dp_personalization_is_priced_before_it_runs_and_refused_over_its_own_budget(trained):
    from dataclasses import replace

    from edgeops.personalization import measure_trainability
    from edgeops.spec import PersonalizationSpec

    declaration, dp_model, _ = trained

    def with_personalization(**settings):
        personalization = PersonalizationSpec.model_validate({"enabled": True, "steps": 50, "local_shift": {"kind": "covariate", "rows": 60},
                                                              **settings})
        return replace(declaration, spec=declaration.spec.model_copy(update={"personalization": personalization}))

    target = declaration.spec.target("cpu_float")
    tight = measure_trainability(with_personalization(noise_multiplier=0.5, clipping_norm=1.0, epsilon=0.1), target, dp_model["onnx_path"],
                                 dp_model["ref"])
    assert not tight["trainable"] and "over personalization.epsilon 0.1" in tight["reason"] and "checks" not in tight
    roomy = measure_trainability(with_personalization(noise_multiplier=0.5, clipping_norm=1.0, epsilon=1000), target, dp_model["onnx_path"],
                                 dp_model["ref"])
    assert roomy["checks"] and roomy["device_epsilon"] == pytest.approx(tight["device_epsilon"])
    with pytest.raises(Exception, match="needs clipping_norm and epsilon"):
        PersonalizationSpec.model_validate({"noise_multiplier": 1.0, "clipping_norm": 1.0})
