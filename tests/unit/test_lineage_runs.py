"""MLflow run structure: one parent per pipeline run with each stage nested under it, the experiment marked for model
training (also when it existed before), each target's artifact as a LoggedModel. Against a sqlite store in tmp_path."""

from __future__ import annotations

import json
import threading

import pytest

from edgeops.lineage import (
    EXPERIMENT_KIND_MODEL_TRAINING,
    EXPERIMENT_KIND_TAG,
    FAILED_STAGES_TAG,
    PARENT_RUN_TAG,
    PIPELINE_RUN_TAG,
    ROLE_PIPELINE_RUN,
    RUN_ROLE_TAG,
    Lineage,
)


@pytest.fixture(scope="module")
def lineage(tmp_path_factory):
    """One store for the module (creating an MLflow sqlite schema takes seconds); each test uses its own pipeline."""
    folder = tmp_path_factory.mktemp("mlflow")
    return Lineage(f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri())


def _runs(lineage, pipeline):
    experiment = lineage.client.get_experiment_by_name(pipeline)
    return lineage.client.search_runs([experiment.experiment_id], max_results=100)


def test_stages_of_one_pipeline_run_nest_under_one_parent_that_closes_with_them(lineage):
    with lineage.run("nest", "raw_dataset", pipeline_run="run-1", pipeline_run_title="nest · edgeops run") as first:
        parent = lineage.client.get_run(first.run_id).data.tags[PARENT_RUN_TAG]
        assert lineage.client.get_run(parent).info.status == "RUNNING"
    assert lineage.client.get_run(parent).info.status == "FINISHED"  # no stage left running
    with lineage.run(
        "nest", "dp_model", pipeline_run="run-1"
    ) as second:  # a later Dagster run of the same `edgeops run`
        assert lineage.client.get_run(parent).info.status == "RUNNING"
    with pytest.raises(RuntimeError), lineage.run("nest", "compressed_model[x]", pipeline_run="run-1"):
        raise RuntimeError("stage failed")
    with lineage.run("nest", "raw_dataset", pipeline_run="run-2"):
        pass
    runs = _runs(lineage, "nest")
    parents = [r for r in runs if r.data.tags.get(RUN_ROLE_TAG) == ROLE_PIPELINE_RUN]
    assert sorted(r.data.tags[PIPELINE_RUN_TAG] for r in parents) == ["run-1", "run-2"]
    children = [r for r in runs if r.data.tags.get(PARENT_RUN_TAG) == parent]
    assert sorted(r.info.run_name for r in children) == ["compressed_model[x]", "dp_model", "raw_dataset"]
    closed = lineage.client.get_run(parent)
    assert (
        closed.info.status == "FINISHED" and closed.data.tags[FAILED_STAGES_TAG] == "compressed_model[x]"
    )  # the failed stage named
    assert lineage.client.get_run(parent).info.run_name == "nest · edgeops run"
    assert second.run_id in {r.info.run_id for r in children}


def test_stages_racing_to_create_the_parent_end_under_one(lineage):
    lineage.experiment_id("race")
    barrier = threading.Barrier(4)
    errors = []

    def stage(index):
        try:
            barrier.wait()
            with lineage.run("race", f"stage{index}", pipeline_run="race"):
                pass
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=stage, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    runs = _runs(lineage, "race")
    parents = [r for r in runs if r.data.tags.get(RUN_ROLE_TAG) == ROLE_PIPELINE_RUN]
    assert len(parents) == 1, [p.info.run_id for p in parents]
    assert {r.data.tags.get(PARENT_RUN_TAG) for r in runs if r.data.tags.get("edgeops.stage")} == {
        parents[0].info.run_id
    }


def test_a_parent_stored_late_with_an_older_start_time_is_merged_when_a_stage_ends(lineage):
    """The race the threads above hit under load: a stage stored its parent, ran and closed before a racing stage's
    parent (stamped earlier, stored later) became visible. The racing stage's end merges the two: one parent remains,
    holding both stages, closed."""
    experiment = lineage.experiment_id("late")
    with lineage.run("late", "stage0", pipeline_run="late") as first:
        pass
    established = lineage.client.get_run(first.run_id).data.tags[PARENT_RUN_TAG]
    older = lineage.client.get_run(established).info.start_time - 1000
    late = lineage.client.create_run(
        experiment, start_time=older, tags={PIPELINE_RUN_TAG: "late", RUN_ROLE_TAG: ROLE_PIPELINE_RUN}
    ).info.run_id
    with lineage.run("late", "stage1", pipeline_run="late") as second:
        assert lineage.client.get_run(second.run_id).data.tags[PARENT_RUN_TAG] == late
    runs = _runs(lineage, "late")
    parents = [r.info.run_id for r in runs if r.data.tags.get(RUN_ROLE_TAG) == ROLE_PIPELINE_RUN]
    assert parents == [late]
    assert {lineage.client.get_run(r).data.tags[PARENT_RUN_TAG] for r in (first.run_id, second.run_id)} == {late}
    assert lineage.client.get_run(late).info.status == "FINISHED"


def test_experiment_is_marked_for_model_training_also_when_it_existed_before(lineage, tmp_path):
    old = lineage.client.create_experiment("legacy", artifact_location=(tmp_path / "legacy").as_uri())
    assert EXPERIMENT_KIND_TAG not in lineage.client.get_experiment(old).tags
    assert lineage.experiment_id("legacy") == old
    assert lineage.client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND_MODEL_TRAINING
    new = lineage.experiment_id("fresh")
    assert lineage.client.get_experiment(new).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND_MODEL_TRAINING


def test_a_target_model_carries_its_files_metrics_dataset_and_no_pickle(lineage, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"onnx bytes")
    with lineage.run("models", "compressed_model[t]", pipeline_run="r") as run:
        model_id = run.log_target_model(
            name="t",
            model_dir=folder,
            params={"runtime": "onnxruntime"},
            tags={"edgeops.target": "t"},
            metrics={"accuracy": 0.9},
            dataset=("models-test", "abc123", "/data/test.parquet"),
        )
        run.log_metrics({"latency_b1_p95_ms": 0.5}, model_id=model_id)
    model = lineage.client.get_logged_model(model_id)
    assert (
        model.status.to_proto() == model.status.READY.to_proto()
        if hasattr(model.status, "to_proto")
        else str(model.status).endswith("READY")
    )
    assert model.source_run_id == run.run_id and model.params == {"runtime": "onnxruntime"}
    metrics = {m.key: m for m in model.metrics}
    assert metrics["accuracy"].dataset_name == "models-test" and metrics["accuracy"].dataset_digest == "abc123"
    assert metrics["latency_b1_p95_ms"].value == 0.5
    inputs = lineage.client.get_run(run.run_id).inputs
    assert [d.dataset.name for d in inputs.dataset_inputs] == ["models-test"]
    assert json.loads(inputs.dataset_inputs[0].dataset.source) == {"uri": "/data/test.parquet"}
    listed = lineage.client.list_artifacts(run.run_id)  # the model's files live with the model, not as a pickle flavour
    assert not any(a.path.endswith((".pkl", ".pickle")) for a in listed)


def test_a_parent_deleted_by_a_racing_stage_before_it_is_closed_hands_over_to_the_elected_one(lineage, monkeypatch):
    """The race seen in CI: a stage elected a parent that a racing stage created, and that stage deleted it (a moment
    later it elected an older one) before this stage closed it. MLflow refuses the write to a deleted run; the stage
    reads the election again and ends nested under the surviving parent."""
    experiment = lineage.experiment_id("handover")
    real_set_terminated = lineage.client.set_terminated
    survivor = {}

    def racer_deletes_first(run_id, status=None, *args, **kwargs):
        tags = lineage.client.get_run(run_id).data.tags
        if tags.get(RUN_ROLE_TAG) == ROLE_PIPELINE_RUN and not survivor:
            survivor["id"] = lineage.client.create_run(
                experiment, tags={PIPELINE_RUN_TAG: "handover", RUN_ROLE_TAG: ROLE_PIPELINE_RUN}
            ).info.run_id
            lineage.client.delete_run(run_id)
        return real_set_terminated(run_id, status, *args, **kwargs)

    monkeypatch.setattr(lineage.client, "set_terminated", racer_deletes_first)
    with lineage.run("handover", "stage0", pipeline_run="handover") as stage:
        first_parent = lineage.client.get_run(stage.run_id).data.tags[PARENT_RUN_TAG]
    monkeypatch.undo()
    assert survivor and survivor["id"] != first_parent
    assert lineage.client.get_run(stage.run_id).data.tags[PARENT_RUN_TAG] == survivor["id"]
    assert lineage.client.get_run(survivor["id"]).info.status == "FINISHED"
    parents = [r for r in _runs(lineage, "handover") if r.data.tags.get(RUN_ROLE_TAG) == ROLE_PIPELINE_RUN]
    assert [p.info.run_id for p in parents] == [survivor["id"]]
