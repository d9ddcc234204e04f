"""What a charge key holds, end to end on a small table: an identical re-run and a threshold-only change reuse the
stored model and charge nothing; a changed learning rate (or fine-tuning / distillation rate) is a new charge."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import RecordingRun, stored_table, table_declaration

from edgeops.errors import PrivacyBudgetError
from edgeops.ledger import Budget, PrivacyLedger
from edgeops.spec import PipelineSpec, parse_spec
from edgeops.training import TrainingData, plan_dp_training, run_dp_training


@pytest.fixture(scope="module")
def table_ref(tmp_path_factory):
    return stored_table(tmp_path_factory.mktemp("keys") / "d")


def declared(**training) -> PipelineSpec:
    spec = table_declaration()
    spec["training"].update({"epochs": 2, "accountant": "rdp", **training})  # RDP: the noise calibration is quick
    return PipelineSpec.model_validate(spec)


def train(spec, ref, ledger, out):
    messages: list[str] = []
    result = run_dp_training(spec, ref, ledger, out, RecordingRun(), progress=messages.append)
    return result, any(m.startswith("epoch ") for m in messages)


def test_rerun_and_threshold_change_spend_nothing_and_do_not_retrain_but_a_new_rate_does(tmp_path, table_ref):
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite", Budget(20.0, 1e-4))
    first, trained = train(declared(), table_ref, ledger, tmp_path / "models")
    assert trained and ledger.spent()[0] == pytest.approx(first.privacy.epsilon)
    spent = ledger.spent()

    again, trained = train(declared(), table_ref, ledger, tmp_path / "models")  # `make run` unchanged
    assert not trained and ledger.spent() == spent and again.weights_sha256 == first.weights_sha256

    stricter, trained = train(declared(min_accuracy=0.99, checkpoint_every=1), table_ref, ledger, tmp_path / "models")
    assert not trained and ledger.spent() == spent and stricter.weights_sha256 == first.weights_sha256
    assert len(ledger.entries()) == 1

    faster, trained = train(
        declared(learning_rate=2.0), table_ref, ledger, tmp_path / "models"
    )  # a different computation
    assert trained and len(ledger.entries()) == 2 and ledger.spent()[0] > spent[0] + 1.0
    assert faster.privacy.ledger_entry != first.privacy.ledger_entry


def test_the_key_holds_what_changes_the_output_and_not_the_thresholds(tmp_path):
    spec = declared()
    rows = (
        np.random.default_rng(0).uniform(0, 10, (600, 4)).astype(np.float32)
    )  # a small sampling rate: quick to calibrate
    labels = np.arange(600) % 3
    data = TrainingData(rows, labels, rows, labels, rows, labels, [0, 1, 2], "digest", ["f0", "f1", "f2", "f3"])
    key = plan_dp_training(spec, data).charge_key()
    same = [declared(min_accuracy=0.9), declared(checkpoint_every=1)]
    assert {plan_dp_training(s, data).charge_key() for s in same} == {key}
    bounds = spec.model_copy(update={"dataset": spec.dataset.model_copy(update={"feature_bounds": (0.0, 20.0)})})
    changed = [declared(learning_rate=2.0), declared(momentum=0.5), declared(seed=1), bounds]
    keys = {plan_dp_training(s, data).charge_key() for s in changed}
    assert key not in keys and len(keys) == len(changed)
    # Fine-tuning and distillation rates are in their plans' keys too.
    assert plan_dp_training(spec, data, epsilon=1.0, epochs=1, learning_rate=2.0).charge_key(
        "dpsgd-finetune"
    ) != plan_dp_training(spec, data, epsilon=1.0, epochs=1, learning_rate=3.0).charge_key("dpsgd-finetune")


def test_default_delta_is_split_so_one_run_fits_and_an_explicit_overspend_is_refused():
    spec = declared()
    assert spec.mechanism_delta * len(spec.delta_mechanisms) <= spec.privacy.delta
    raw = table_declaration()
    raw["privacy"]["mechanism_delta"] = (
        1e-4  # = the whole total, but the MCU-style fine-tuning below needs a second share
    )
    raw["targets"].append(
        {"name": "pruned", "device": "cpu", "recipe": [{"step": "prune", "ratio": 0.25, "finetune": {"epsilon": 1.0}}]}
    )
    import yaml

    from edgeops.errors import SpecError

    with pytest.raises(SpecError, match=r"one run spends delta 0.0002 \(2 \(epsilon, delta\) mechanisms"):
        parse_spec(yaml.safe_dump(raw), "t.yaml")
    digits = parse_spec(open("pipelines/digits.yaml").read(), "digits.yaml")
    assert digits.mechanism_delta * len(digits.delta_mechanisms) <= digits.privacy.delta


def test_a_run_over_the_delta_budget_is_refused_before_training(tmp_path, table_ref):
    spec = declared()
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite", Budget(20.0, spec.privacy.delta))
    ledger.charge("earlier", "dp-sgd", 1.0, spec.privacy.delta, {})
    with pytest.raises(PrivacyBudgetError, match=r"needs delta .* but only 0 of the declared delta 0.0001 is left"):
        run_dp_training(spec, table_ref, ledger, tmp_path / "models", RecordingRun())
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("model.safetensors"))


def test_the_retrain_sensor_counts_every_step_fine_tuning_included(tmp_path):
    from edgeops.privacy import run_charges, run_refusal

    digits = parse_spec(open("pipelines/digits.yaml").read(), "digits.yaml")
    steps = {c["step"]: (c["epsilon"], c["delta"]) for c in run_charges(digits)}
    assert steps == {
        "dp-sgd training": (3.0, 1e-5),
        "dp baseline": (1.0, 0.0),
        "mcu_pruned_int8: dp fine-tuning": (1.0, 1e-5),
    }
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite", Budget(digits.privacy.epsilon, digits.privacy.delta))
    ledger.charge("first run", "dp-sgd", 5.0, 2e-5, {})
    assert run_refusal(digits, ledger) is None  # a second full run fits: 10 and 4e-5
    ledger.charge("a little more", "dp-sgd", 0.5, 0.0, {})
    # 4.5 left: training and baseline alone (4, what the sensor used to count) would fit;
    # with the fine-tuning (5) it does not.
    reason = run_refusal(digits, ledger)
    assert reason and "needs epsilon 5, but only 4.5 of the declared 10 is left" in reason
    assert "mcu_pruned_int8: dp fine-tuning epsilon 1 delta 1e-05" in reason
    ledger.charge("delta", "dp-sgd", 0.0, 1.5e-5, {})
    ledger = PrivacyLedger(
        tmp_path / "ledger.sqlite", Budget(20.0, digits.privacy.delta)
    )  # epsilon to spare, delta not
    assert "needs delta 2e-05, but only 5e-06 of the declared delta 4e-05 is left" in run_refusal(digits, ledger)


def dp_sgd(epsilon: float, steps: int, delta: float = 1e-5, rate: float = 1 / 3) -> dict:
    from opacus.accountants.utils import get_noise_multiplier

    sigma = get_noise_multiplier(
        target_epsilon=epsilon, target_delta=delta, sample_rate=rate, steps=steps, accountant="prv"
    )
    return {
        "epsilon": epsilon,
        "delta": delta,
        "noise_multiplier": sigma,
        "sample_rate": rate,
        "steps": steps,
        "accountant": "prv",
    }


def test_each_target_states_its_own_composed_guarantee_and_the_card_carries_the_ledger(tmp_path):
    from helpers import TABLE_CARD, visible
    from record_examples import CENTRAL, central_record, dataset_ref

    from edgeops.cards.html_page import to_html
    from edgeops.cards.markdown import to_markdown
    from edgeops.privacy import card_ledger
    from edgeops.records import DpModel
    from edgeops.registry import target_guarantee

    model, finetune = dp_sgd(3.0, 120), dp_sgd(1.0, 30)
    # declared feature bounds: no DP statistics enter the composition (record_examples' validated dataset has some)
    dp_model = DpModel.model_validate(central_record(privacy=CENTRAL | model, ref=dataset_ref(validated=False)))
    plain = target_guarantee(dp_model, [{"step": "int8"}])
    pruned = target_guarantee(dp_model, [{"step": "prune", "finetune": finetune}])
    assert (plain["epsilon"], plain["delta"]) == (3.0, 1e-5)
    scaled = DpModel.model_validate(central_record(privacy=CENTRAL | model))  # its scaling came from DP statistics
    assert target_guarantee(scaled, [{"step": "int8"}])["parts"]["dp_statistics"]["epsilon"] == 1.0
    # The MCU-style target pays for the DP model AND its fine-tuning: the model's figure alone would understate it.
    assert pruned["epsilon"] == pytest.approx(model["epsilon"] + finetune["epsilon"]) and pruned[
        "delta"
    ] == pytest.approx(2e-5)
    assert pruned["epsilon"] != plain["epsilon"] and plain["epsilon"] < pruned["pld_epsilon"] < pruned["epsilon"]

    ledger = PrivacyLedger(tmp_path / "ledger.sqlite", Budget(10.0, 4e-5))
    for key, mechanism, parameters in (
        ("a", "dp-sgd (opacus)", model),
        ("b", "gaussian naive bayes (diffprivlib)", {"epsilon": 1.0}),
        ("c", "dp-sgd fine-tuning after pruning (target mcu)", finetune),
    ):
        entry, _ = ledger.charge(key, mechanism, parameters["epsilon"], parameters.get("delta", 0.0), parameters)
        ledger.update(entry.id, "completed")
    section = card_ledger(ledger.summary())
    assert section.entries[0].mechanism == "dp-sgd (opacus)" and section.totals.epsilon == pytest.approx(5.0)
    assert section.totals.delta == pytest.approx(2e-5) and "add up" in section.composition
    second = section.entries[0].second_accountant
    assert second is not None
    assert second["method"].startswith("dp-accounting PLD") and second["epsilon"] == pytest.approx(3.0, rel=0.05)
    assert section.entries[1].second_accountant is None  # pure epsilon-DP: nothing to re-account
    assert section.pld_composition is not None and section.pld_composition["epsilon"] < section.totals.epsilon

    card = json.loads(json.dumps(TABLE_CARD))
    card["privacy"]["ledger"] = section.model_dump()
    card["targets"][0]["guarantee"] = pruned
    text, _ = visible(to_html(card, None))
    assert (
        "Guarantee per target" in text
        and f"{card['targets'][0]['name']} 4 2e-05 dp_model 3.000 + prune:finetune 1.000" in text
    )
    assert "Spent (5, 2e-05) of the declared (10, 4e-05)" in text and "dp-accounting PLD" in text
    markdown = to_markdown(card)
    assert f"- {card['targets'][0]['name']}: (4.000, 2e-05)-differentially private by basic composition" in markdown
    assert "- ledger: spent (5, 2e-05) of (10, 4e-05)" in markdown
