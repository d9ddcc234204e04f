"""Data loading and validation: each bad input gets a clear error or a failed check naming the column or rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import NullRun, table_declaration, table_frame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeops.data import frame_digest, ingest, load_source, split_frame
from edgeops.errors import DataError
from edgeops.spec import load_declaration
from edgeops.validation import check_duplicates, check_leakage, check_poisoning, check_schema, run_check, suspect_labels


def declared(project, frame: pd.DataFrame | None = None, **changes):
    spec = table_declaration()
    for key, value in changes.items():
        spec[key] = value
    if frame is not None:
        project.write_csv(frame)
    elif not (project.root / "data" / "table.csv").exists():
        project.write_csv(table_frame())
    return load_declaration(project.declare(spec))


def ingested(project, frame):
    declaration = declared(project, table_frame())  # the suite is generated from clean data
    project.write_csv(frame)
    return declaration, ingest(declaration, project.root / ".edgeops" / "datasets", NullRun())


def test_split_is_seeded_stratified_and_digested(project):
    declaration = declared(project)
    first = split_frame(load_source(declaration), declaration.spec.dataset)[0]
    second = split_frame(load_source(declaration), declaration.spec.dataset)[0]
    for name in first:
        assert frame_digest(first[name], ["f0", "f1", "f2", "f3"], "label") == frame_digest(
            second[name], ["f0", "f1", "f2", "f3"], "label"
        )
    assert set(first["test"]["label"]) == {0, 1, 2}
    assert sum(len(part) for part in first.values()) == 300


def test_digest_changes_with_one_value(project):
    declaration = declared(project)
    splits = split_frame(load_source(declaration), declaration.spec.dataset)[0]
    before = frame_digest(splits["train"], ["f0", "f1", "f2", "f3"], "label")
    splits["train"].loc[0, "f0"] += 0.001
    assert frame_digest(splits["train"], ["f0", "f1", "f2", "f3"], "label") != before


def test_clean_table_passes_every_check(project):
    declaration, ref = ingested(project, table_frame())
    for name in ("schema", "expectations", "leakage", "duplicates", "class_balance", "poisoning_scan"):
        outcome = run_check(name, ref, declaration, project.root / ".edgeops" / "gx")
        assert outcome.passed, (name, outcome.summary)


def test_missing_column_fails_schema_naming_it(project):
    declaration, ref = ingested(project, table_frame().drop(columns=["f2"]))
    outcome = check_schema(ref, declaration.spec, declaration)
    assert not outcome.passed and "f2" in outcome.summary


def test_non_numeric_values_name_rows_and_column(project):
    frame = table_frame().astype({"f1": object})
    frame.loc[7, "f1"] = "seven"
    frame.loc[12, "f1"] = "n/a?"
    declaration, ref = ingested(project, frame)
    outcome = check_schema(ref, declaration.spec)
    assert not outcome.passed
    assert {(p["row"], p["column"]) for p in outcome.examples} >= {(7, "f1"), (12, "f1")}


@pytest.mark.parametrize(
    "bad_value, expectation",
    [
        (np.nan, "expect_column_values_to_not_be_null"),
        (np.inf, "expect_column_values_to_be_between"),
        (99.0, "expect_column_values_to_be_between"),
    ],
)
def test_nan_inf_and_out_of_bounds_fail_expectations_with_rows(project, bad_value, expectation):
    frame = table_frame()
    frame.loc[5, "f3"] = bad_value
    declaration, ref = ingested(project, frame)
    outcome = run_check("expectations", ref, declaration, project.root / ".edgeops" / "gx")
    assert not outcome.passed
    failures = [f for f in outcome.examples if f["expectation"] == expectation and f["column"] == "f3"]
    assert failures and failures[0]["unexpected_count"] == 1
    assert outcome.links["data_docs"].startswith("file://")


def test_label_outside_declared_classes(project):
    frame = table_frame()
    frame.loc[3, "label"] = 7
    declaration, ref = ingested(project, frame)
    outcome = run_check("expectations", ref, declaration, project.root / ".edgeops" / "gx")
    assert any(
        f["expectation"] == "expect_column_values_to_be_in_set" and f["column"] == "label" for f in outcome.examples
    )


def test_empty_file(project):
    declaration = declared(project)
    (project.root / "data" / "table.csv").write_text("")
    with pytest.raises(DataError, match="table.csv: file is empty"):
        load_source(declaration)


def test_header_only_file(project):
    declaration = declared(project)
    (project.root / "data" / "table.csv").write_text("f0,f1,f2,f3,label\n")
    with pytest.raises(DataError, match="no rows"):
        load_source(declaration)


def test_truncated_parquet(project):
    path = project.root / "data" / "table.parquet"
    table_frame().to_parquet(path)
    spec = table_declaration(source="csv:data/table.csv")
    project.write_csv(table_frame())
    project.declare(spec)
    spec["dataset"]["source"] = "parquet:data/table.parquet"
    declaration = load_declaration(project.declare(spec))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="table.parquet: not a readable Parquet file"):
        load_source(declaration)


def test_rows_duplicated_between_train_and_test_are_leakage(project):
    frame = table_frame()
    frame["split"] = ["train"] * 180 + ["validation"] * 60 + ["test"] * 60
    frame.loc[250, ["f0", "f1", "f2", "f3", "label"]] = frame.loc[10, ["f0", "f1", "f2", "f3", "label"]].to_numpy()
    project.write_csv(frame)
    spec = table_declaration()
    spec["dataset"]["split"] = {"column": "split"}
    declaration = load_declaration(project.declare(spec))
    ref = ingest(declaration, project.root / ".edgeops" / "datasets", NullRun())
    outcome = check_leakage(ref)
    assert not outcome.passed and outcome.counts["train_test"] == 1
    assert outcome.examples[0] == {"splits": "train/test", "train_row": 10, "test_row": 250}


def test_duplicates_within_a_split(project):
    frame = pd.concat(
        [table_frame().iloc[:30], table_frame()], ignore_index=True
    )  # rows 0-29 repeat as 30-59, all in train
    frame["split"] = ["train"] * 270 + ["validation"] * 30 + ["test"] * 30
    project.write_csv(frame)
    spec = table_declaration()
    spec["dataset"]["split"] = {"column": "split"}
    ref = ingest(load_declaration(project.declare(spec)), project.root / ".edgeops" / "datasets", NullRun())
    outcome = check_duplicates(ref, 0.0)
    assert not outcome.passed and outcome.counts["train"] == 30


def test_label_flips_are_found_by_the_poisoning_scan(project):
    frame = table_frame(600)
    flipped = [3, 50, 77, 121, 300, 444]
    frame.loc[flipped, "label"] = (frame.loc[flipped, "label"] + 1) % 3
    declaration, ref = ingested(project, frame)
    outcome = check_poisoning(ref, declaration.spec)
    found = {e["row"] for e in outcome.examples}
    train_rows = set(pd.read_parquet(ref.splits["train"].path)["row_id"])
    assert {r for r in flipped if r in train_rows} <= found


def test_suspect_labels_finds_nothing_on_clean_clusters():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 100)
    features = np.where(labels[:, None] == 0, 1.0, 9.0) + rng.normal(0, 0.3, (200, 3))
    suspects, _ = suspect_labels(features, labels, 10, 0.7, (np.zeros(3), np.full(3, 10.0)))
    assert len(suspects) == 0


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=3000))
def test_fuzz_csv_bytes_only_data_errors_or_problems(project, payload):
    declaration = declared(project)
    (project.root / "data" / "table.csv").write_bytes(payload)
    try:
        data = load_source(declaration)
    except DataError:
        return
    assert set(data.frame.columns) >= {"row_id", "label"}


def test_image_folder_source_labels_from_subfolders(project):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("0", "1"):
        folder = project.root / "data" / "images" / label
        folder.mkdir(parents=True)
        for index in range(6):
            pixels = (rng.random((4, 4)) * 100 + (150 if label == "1" else 0)).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"{index}.png")
    spec = table_declaration(name="pictures", source="images:data/images")
    spec["dataset"].update(
        kind="image", image_shape=[1, 4, 4], n_features=16, feature_bounds=[0, 255], classes=[0, 1], min_rows=4
    )
    spec["model"] = {"family": "cnn", "channels": [4], "hidden": [], "activation": "tanh", "norm": "none"}
    declaration = load_declaration(project.declare(spec))
    data = load_source(declaration)
    assert len(data.frame) == 12 and len(data.features) == 16 and sorted(set(data.frame["label"])) == [0.0, 1.0]
    assert data.row_names[0] == "0/0.png"


def test_image_of_the_wrong_size_is_named(project):
    from PIL import Image

    folder = project.root / "data" / "images" / "0"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((5, 4), dtype=np.uint8), mode="L").save(folder / "odd.png")
    spec = table_declaration(name="pictures", source="images:data/images")
    spec["dataset"].update(
        kind="image", image_shape=[1, 4, 4], n_features=16, feature_bounds=[0, 255], classes=[0, 1], min_rows=1
    )
    spec["model"] = {"family": "cnn", "channels": [4], "hidden": [], "activation": "tanh", "norm": "none"}
    declaration = load_declaration(_declare_without_suite(project, spec))
    with pytest.raises(DataError, match=r"odd.png: image is 4x5, declared 4x4"):
        load_source(declaration)


def _declare_without_suite(project, spec):
    import json

    (project.root / spec["validation"]["expectations"]).write_text(
        json.dumps({"name": spec["name"], "expectations": []})
    )
    return project.declare(spec, suite_from_declaration=False)
