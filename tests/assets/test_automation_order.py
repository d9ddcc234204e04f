"""The automation conditions rebuild a pipeline's stages in dependency order after a retrain, each once.

Shapes as in a pipeline: the DP model and the card are unpartitioned, compression and benchmarks are partitioned by
target, so Dagster can never put them in one run. Each tick is evaluated by Dagster's own evaluator, without a daemon.
"""

import dagster as dg
import pytest

from assets.common import card_follows_upstream, follows_upstream


class _Names:
    """Stands in for AssetFactoryContext: follows_upstream needs only its asset keys."""

    def key(self, name: str) -> dg.AssetKey:
        return dg.AssetKey(["watched", name])


def _pipeline(condition: dg.AutomationCondition) -> list[dg.AssetsDefinition]:
    names, targets = _Names(), dg.StaticPartitionsDefinition(["cpu_int8", "mcu_int8"])

    @dg.asset(key=names.key("dp_model"))
    def dp_model() -> None: ...

    @dg.asset(
        key=names.key("compressed_model"), deps=[dp_model], partitions_def=targets, automation_condition=condition
    )
    def compressed_model() -> None: ...

    @dg.asset(
        key=names.key("hil_benchmark"), deps=[compressed_model], partitions_def=targets, automation_condition=condition
    )
    def hil_benchmark() -> None: ...

    @dg.asset(
        key=names.key("model_card"), deps=[dp_model, compressed_model, hil_benchmark], automation_condition=condition
    )
    def model_card() -> None: ...

    return [dp_model, compressed_model, hil_benchmark, model_card]


def _materialize(assets, instance, name: str) -> None:
    selected = [a for a in assets if a.key.path[-1] == name]
    for key in selected[0].partitions_def.get_partition_keys() if selected[0].partitions_def else [None]:
        assert dg.materialize(assets, selection=selected, instance=instance, partition_key=key).success


def _ticks(condition: dg.AutomationCondition) -> list[set[str]]:
    """What each tick requests: first over a built pipeline, then after a retrain, building what was requested."""
    assets, instance = _pipeline(condition), dg.DagsterInstance.ephemeral()
    for name in ("dp_model", "compressed_model", "hil_benchmark", "model_card"):
        _materialize(assets, instance, name)
    result = dg.evaluate_automation_conditions(assets, instance)
    requested = [{a.key.path[-1] for a in assets if result.get_num_requested(a.key)}]
    _materialize(assets, instance, "dp_model")  # the retrain
    for _ in range(4):
        result = dg.evaluate_automation_conditions(assets, instance, cursor=result.cursor)
        requested.append({a.key.path[-1] for a in assets if result.get_num_requested(a.key)})
        for name in sorted(requested[-1]):
            _materialize(assets, instance, name)
    return requested


def test_after_a_retrain_each_stage_waits_for_the_stages_it_reads():
    assert _ticks(follows_upstream(_Names())) == [set(), {"compressed_model"}, {"hil_benchmark"}, {"model_card"}, set()]


@pytest.mark.parametrize("condition", [dg.AutomationCondition.eager()], ids=["eager"])
def test_eager_alone_builds_the_card_from_the_old_benchmark(condition):
    """The race the condition prevents: with eager() the card is requested beside the compression, reads the benchmark
    of the old model, and is not rebuilt when the new benchmark lands."""
    ticks = _ticks(condition)
    assert "model_card" in ticks[1] and "model_card" not in ticks[3]


def _card_beside_drift(condition: dg.AutomationCondition) -> tuple[list, dg.AssetsDefinition]:
    names, batches = _Names(), dg.DynamicPartitionsDefinition(name="watched_batches")

    @dg.asset(key=names.key("dp_model"))
    def dp_model() -> None: ...

    @dg.asset(key=names.key("drift_report"), deps=[dp_model], partitions_def=batches)
    def drift_report() -> None: ...

    @dg.asset(key=names.key("model_card"), deps=[dp_model, drift_report], automation_condition=condition)
    def model_card() -> None: ...

    return [dp_model, drift_report, model_card], drift_report


@pytest.mark.parametrize("card_condition, rebuilt", [(card_follows_upstream, False), (follows_upstream, True)])
def test_a_new_batch_report_does_not_rebuild_the_card(card_condition, rebuilt):
    """The card reads every drift report as a declared input, yet a new batch's report must not rebuild and re-sign
    it. With the plain condition it would (the second case): the ignore is what prevents it."""
    assets, drift_report = _card_beside_drift(card_condition(_Names()))
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize(assets, selection=[assets[0], assets[2]], instance=instance).success
    result = dg.evaluate_automation_conditions(assets, instance)
    instance.add_dynamic_partitions("watched_batches", ["batch-1"])
    assert dg.materialize(assets, selection=[drift_report], instance=instance, partition_key="batch-1").success
    result = dg.evaluate_automation_conditions(assets, instance, cursor=result.cursor)
    assert bool(result.get_num_requested(assets[2].key)) is rebuilt
    if not rebuilt:
        assert dg.materialize(assets, selection=[assets[0]], instance=instance).success  # a retrain still rebuilds it
        result = dg.evaluate_automation_conditions(assets, instance, cursor=result.cursor)
        assert result.get_num_requested(assets[2].key) == 1
