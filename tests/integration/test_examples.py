"""The declarations in pipelines/examples/, end to end on a tiny profile (fewer rows and epochs; every stage runs)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import yaml
from helpers import REPO

EXAMPLES = REPO / "pipelines" / "examples"


def generator(name: str = "generate_wide_table"):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def wide_table_run(tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    from helpers import Project

    from pipelines.launch import run_pipelines

    project = Project(tmp_path_factory.mktemp("examples") / "project", monkeypatch)
    frame = generator().wide_table(rows=4000, seed=0)
    project.write_csv(frame, "wide_table.csv")
    spec = yaml.safe_load((EXAMPLES / "wide_table.yaml").read_text())
    spec["training"].update(epochs=8, min_accuracy=0.5)  # the tiny profile: 2,800 training rows, 8 epochs
    spec["privacy"]["statistics_epsilon"] = (
        3.0  # 2,800 rows need more than the declared 0.5 to locate 30 features (edgeops doctor)
    )
    project.declare(spec)
    flipped = frame.copy()
    rng = np.random.default_rng(5)
    rows = rng.choice(len(frame), len(frame) // 10, replace=False)
    flipped.loc[rows, "label"] = (flipped.loc[rows, "label"] + rng.integers(1, 3, len(rows))) % 3
    project.write_csv(flipped, "wide_table_flipped.csv")
    poisoned = {
        **spec,
        "name": "wide_table_flipped",
        "dataset": {**spec["dataset"], "source": "csv:data/wide_table_flipped.csv"},
        "validation": {**spec["validation"], "expectations": "expectations/wide_table.json"},
    }
    project.declare(poisoned)
    reports = {r.pipeline: r for r in run_pipelines(project.settings(), "wide_table")}
    reports |= {
        r.pipeline: r
        for r in run_pipelines(project.settings(), "wide_table_flipped", ["raw_dataset", "validated_dataset"])
    }
    yield project, reports
    monkeypatch.undo()


def test_wide_table_example_runs_end_to_end_with_dp_statistics(wide_table_run):
    project, reports = wide_table_run
    report = reports["wide_table"]
    assert report.success, (
        report.failures()
    )  # data checks (the poisoning scan on clean data), training, int8 within its 1-point budget, card
    assets = project.settings().home / "assets" / "wide_table"
    model = json.loads(next(assets.glob("dp_model*.json")).read_text()) if list(assets.glob("dp_model*.json")) else None
    (card,) = (project.root / "model_cards" / "generated" / "wide_table").glob("*/card.json")
    card = json.loads(card.read_text())
    assert card["pipeline"] == "wide_table"
    if model is not None:
        assert model["metrics"]["test"]["accuracy"] > 0.8


def test_ten_percent_flipped_labels_stop_the_run(wide_table_run):
    _, reports = wide_table_run
    report = reports["wide_table_flipped"]
    assert not report.core_success
    assert any("poisoning_scan" in check for run in report.runs for check in run["failed_checks"]), report.runs


@pytest.fixture(scope="module")
def image_folder_run(tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    from helpers import Project

    from pipelines.launch import run_pipelines

    project = Project(tmp_path_factory.mktemp("images") / "project", monkeypatch)
    written = generator("generate_digit_images").write_digit_images(project.root / "data" / "digit_images")
    spec = yaml.safe_load((EXAMPLES / "digit_images.yaml").read_text())
    spec["training"].update(epochs=4, min_accuracy=0.3)  # the tiny profile
    spec["training"]["pretrain"].update(samples=2000, epochs=1)
    spec["model"]["channels"] = [16, 32]
    for target in spec["targets"]:
        target.pop("budgets", None)
    project.declare(spec)
    reports = {r.pipeline: r for r in run_pipelines(project.settings(), "digit_images")}
    yield project, reports, written
    monkeypatch.undo()


def test_image_folder_example_runs_end_to_end_from_png_files(image_folder_run):
    project, reports, written = image_folder_run
    assert written == 1797
    assert reports["digit_images"].success, reports["digit_images"].failures()
    manifest = json.loads(next((project.root / ".edgeops").rglob("manifest.json")).read_text())
    assert manifest["source"].endswith("digit_images") and sum(s["rows"] for s in manifest["splits"].values()) == 1797
    assert manifest["row_names"]["0"].endswith(".png")
    (card,) = (project.root / "model_cards" / "generated" / "digit_images").glob("*/card.json")
    assert json.loads(card.read_text())["pipeline"] == "digit_images"
