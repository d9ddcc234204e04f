"""`edgeops doctor`: what a run will do and cost, before training; warnings with numbers when data is too small."""

from __future__ import annotations

from click.testing import CliRunner
from helpers import NullRun, table_declaration, table_frame

from edgeops.doctor import diagnose
from edgeops.spec import load_declaration


def test_doctor_reports_rows_delta_noise_and_costs_including_fine_tuning(project):
    project.write_csv(table_frame(300))
    spec = table_declaration()
    spec["targets"].append(
        {
            "name": "cpu_pruned",
            "device": "cpu",
            "recipe": [{"step": "prune", "ratio": 0.25, "finetune": {"epsilon": 2.0, "epochs": 1}}],
        }
    )
    report = diagnose(load_declaration(project.declare(spec), project.root))
    assert report.rows == {"train": 180, "validation": 60, "test": 60}
    assert abs(report.delta_bound - 1 / 180) < 1e-12 and report.delta < report.delta_bound
    steps = {c.step: c.epsilon for c in report.costs}
    assert steps == {"DP-SGD training": 4, "diffprivlib baseline": 1, "fine-tuning cpu_pruned": 2.0}
    assert report.run_epsilon == 7 and report.budget_covers_run
    assert report.noise["noise_multiplier"] > 0 and report.noise["parameters"] > 0
    text = "\n".join(report.lines())
    assert "rows: train 180, validation 60, test 60" in text and "covers every step" in text


def test_doctor_warns_with_numbers_when_rows_are_too_few_for_epsilon(project):
    project.write_csv(table_frame(300))
    spec = table_declaration()
    spec["dataset"].pop("feature_bounds")
    spec["dataset"]["value_range"] = [-1e5, 1e5]
    spec["privacy"].update(training_epsilon=0.05, statistics_epsilon=0.1, baseline_epsilon=0, epsilon=0.2)
    spec["targets"].append(
        {
            "name": "cpu_pruned",
            "device": "cpu",
            "recipe": [{"step": "prune", "ratio": 0.25, "finetune": {"epsilon": 1.0, "epochs": 1}}],
        }
    )
    report = diagnose(load_declaration(project.declare(spec), project.root))
    assert not report.budget_covers_run
    warnings = "\n".join(report.warnings)
    assert (
        "180 training rows are few for training_epsilon 0.05" in warnings
        and "x the largest possible gradient signal" in warnings
    )
    assert (
        "180 training rows are few for statistics_epsilon 0.1 over 4 features" in warnings
        and "Raise statistics_epsilon to about" in warnings
    )
    assert "one run spends epsilon 1.15, the ledger has 0.2 left" in warnings


def test_doctor_command_prints_the_report(project, monkeypatch):
    from edgeops.cli import main

    project.write_csv(table_frame(300))
    project.declare(table_declaration())
    monkeypatch.chdir(project.root)
    result = CliRunner().invoke(main, ["doctor", "--pipeline", "tabular"])
    assert result.exit_code == 0, result.output
    assert "noise multiplier" in result.output and "epsilon per step of one run" in result.output
    assert not (
        project.root / ".edgeops" / "pipelines" / "tabular" / "privacy_ledger.sqlite"
    ).exists()  # spends and writes nothing


def test_raising_the_utility_floor_does_not_change_the_charge_key(project):
    from edgeops.data import ingest
    from edgeops.training import TrainingData, plan_dp_training

    project.write_csv(table_frame(300))
    declaration = load_declaration(project.declare(table_declaration()), project.root)
    ref = ingest(declaration, project.root / ".edgeops" / "datasets", NullRun())
    data = TrainingData.from_ref(ref, declaration.spec)
    spec = declaration.spec
    raised = spec.model_copy(update={"training": spec.training.model_copy(update={"min_accuracy": 0.99})})
    longer = spec.model_copy(update={"training": spec.training.model_copy(update={"epochs": spec.training.epochs + 1})})
    key = plan_dp_training(spec, data).charge_key()
    assert plan_dp_training(raised, data).charge_key() == key  # the completed run is reused: no second charge
    assert plan_dp_training(longer, data).charge_key() != key  # a real change is a new computation
