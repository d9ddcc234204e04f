"""DP-SGD training, its verification and audit, on a small separable table (fast) and on digits where it matters."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import table_declaration, table_frame
from edgeops.errors import PrivacyBudgetError, TrainingError
from edgeops.ledger import Budget, PrivacyLedger
from edgeops.models import weights_sha256
from edgeops.privacy import empirical_epsilon_lower_bound, rederive_epsilon, train_dp_baseline, verify_claim
from edgeops.spec import PipelineSpec
from edgeops.training import TrainingData, evaluate_logits, plan_dp_training, predict_logits, run_dp_training, train_dp


class RecordingRun:
    run_id = "test-run"

    def __init__(self):
        self.metrics, self.params, self.artifacts = {}, {}, []

    def log_params(self, params): self.params.update(params)
    def log_metrics(self, metrics, step=0): self.metrics.update(metrics)
    def log_metric_series(self, series): self.metrics.update({k: v[-1] for k, v in series.items()})
    def set_tags(self, tags): ...
    def log_artifact(self, path, artifact_path=None):
        import hashlib

        self.artifacts.append(str(path))
        return hashlib.sha256(open(path, "rb").read()).hexdigest()


def table_setup(tmp_path, **training):
    spec_dict = table_declaration()
    spec_dict["training"].update(training)
    spec = PipelineSpec.model_validate(spec_dict)
    frame = table_frame(400)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(frame))
    cut1, cut2 = 240, 320
    x = frame[["f0", "f1", "f2", "f3"]].to_numpy(np.float32)
    y = frame["label"].to_numpy()
    data = TrainingData(x[order[:cut1]], y[order[:cut1]], x[order[cut1:cut2]], y[order[cut1:cut2]], x[order[cut2:]], y[order[cut2:]],
                        [0, 1, 2], "digest", ["f0", "f1", "f2", "f3"])
    return spec, data


def test_same_declaration_and_data_give_the_same_weights(tmp_path):
    spec, data = table_setup(tmp_path)
    plan = plan_dp_training(spec, data)
    first = train_dp(spec, data, plan, tmp_path / "a")["model"]
    second = train_dp(spec, data, plan, tmp_path / "b")["model"]
    assert weights_sha256(first) == weights_sha256(second)


def test_dp_model_learns_and_epsilon_is_within_target(tmp_path):
    spec, data = table_setup(tmp_path, epochs=8)
    plan = plan_dp_training(spec, data)
    result = train_dp(spec, data, plan, tmp_path / "w")
    accuracy = evaluate_logits(predict_logits(result["model"], data.x_test), data.y_test, 3)["accuracy"]
    assert accuracy > 0.8
    assert result["epsilon"] <= spec.privacy.training_epsilon * 1.001
    assert result["steps"] == plan.steps


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_identical_weights_without_double_charge(tmp_path):
    spec, data = table_setup(tmp_path, epochs=6, checkpoint_every=2)
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite", Budget(spec.privacy.epsilon, spec.privacy.delta))
    ref_plan = plan_dp_training(spec, data)
    uninterrupted = weights_sha256(train_dp(spec, data, ref_plan, tmp_path / "reference")["model"])

    def stop_after_epoch_4(message: str) -> None:
        if message.startswith("epoch 4/"):
            raise Interrupt("killed")

    key = ref_plan.charge_key()
    entry, _ = ledger.charge(key, "dp-sgd", ref_plan.target_epsilon, ref_plan.delta, ref_plan.ledger_parameters())
    with pytest.raises(Interrupt):
        train_dp(spec, data, ref_plan, tmp_path / "resumable", progress=stop_after_epoch_4)
    messages = []
    again, charged = ledger.charge(key, "dp-sgd", ref_plan.target_epsilon, ref_plan.delta, ref_plan.ledger_parameters())
    resumed = train_dp(spec, data, ref_plan, tmp_path / "resumable", progress=messages.append)
    assert not charged and again.id == entry.id
    assert messages[0].startswith("resumed DP-SGD from epoch 2")  # the last checkpoint before the interruption
    assert resumed["steps"] == ref_plan.steps
    assert weights_sha256(resumed["model"]) == uninterrupted
    assert ledger.spent()[0] == pytest.approx(ref_plan.target_epsilon)


def test_delta_not_below_one_over_n(tmp_path):
    spec, data = table_setup(tmp_path)
    spec = spec.model_copy(update={"privacy": spec.privacy.model_copy(update={"delta": 0.01})})
    with pytest.raises(PrivacyBudgetError, match="not below 1/n"):
        plan_dp_training(spec, data)


def test_batch_larger_than_dataset(tmp_path):
    spec, data = table_setup(tmp_path, batch_size=5000)
    with pytest.raises(TrainingError, match="larger than the training split"):
        plan_dp_training(spec, data)


def test_diverging_learning_rate_fails_clearly_and_nothing_is_released(tmp_path, project):
    spec, data = table_setup(tmp_path, learning_rate=1e38, epochs=3)
    with pytest.raises(TrainingError, match="loss became|non-finite"):
        train_dp(spec, data, plan_dp_training(spec, data), tmp_path / "w")


def test_spent_budget_refuses_before_training(tmp_path):
    from edgeops.data import store_splits, LoadedData

    spec, data = table_setup(tmp_path)
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite", Budget(spec.privacy.epsilon, spec.privacy.delta))
    ledger.charge("earlier", "dp-sgd", spec.privacy.epsilon - 1.0, spec.privacy.delta, {})
    frame = table_frame(400)
    frame.insert(0, "row_id", np.arange(len(frame)))
    loaded = LoadedData(frame, ["f0", "f1", "f2", "f3"], "label", "test")
    ref = store_splits(loaded, {"train": frame.iloc[:240], "validation": frame.iloc[240:320], "test": frame.iloc[320:]}, {}, tmp_path / "d")
    with pytest.raises(PrivacyBudgetError, match="only 1 of the declared 20 is left"):
        run_dp_training(spec, ref, ledger, tmp_path / "models", RecordingRun())
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("model.safetensors"))


def test_rederivation_agrees_with_opacus_and_catches_a_false_claim(tmp_path):
    spec, data = table_setup(tmp_path)
    plan = plan_dp_training(spec, data)
    privacy = {**plan.ledger_parameters(), "claimed_epsilon": plan.target_epsilon}
    assert verify_claim(privacy)["passed"]
    lying = {**privacy, "claimed_epsilon": plan.target_epsilon / 2}
    outcome = verify_claim(lying)
    assert not outcome["passed"] and outcome["rederived_epsilon"] > lying["claimed_epsilon"]
    assert rederive_epsilon(plan.noise_multiplier, plan.sample_rate, plan.steps, plan.delta, "rdp") >= outcome["rederived_epsilon"] * 0.95


def test_empirical_epsilon_bound_is_zero_for_indistinguishable_and_positive_for_separable():
    rng = np.random.default_rng(0)
    same = empirical_epsilon_lower_bound(rng.normal(size=500), rng.normal(size=500), 1e-5)
    separable = empirical_epsilon_lower_bound(rng.normal(5, 0.1, size=500), rng.normal(0, 0.1, size=500), 1e-5)
    assert same < 0.5 and separable > 3.0


def test_dp_baseline_is_accurate_at_large_epsilon_and_refuses_data_bounds():
    from edgeops.errors import PrivacyBudgetError

    frame = table_frame(600)
    x, y = frame[["f0", "f1", "f2", "f3"]].to_numpy(), frame["label"].to_numpy()
    bounds = (np.zeros(4), np.full(4, 10.0))
    model = train_dp_baseline(x[:400], y[:400], 1000.0, bounds, 3, seed=0)
    assert (model.predict(x[400:]) == y[400:]).mean() > 0.9
    with pytest.raises(PrivacyBudgetError, match="would leak privacy"):
        train_dp_baseline(x[:400], y[:400], 1.0, None, 3, seed=0)


def test_dp_statistics_estimate_bounds_inside_the_public_range_and_refuse_leaks():
    from edgeops.privacy import dp_feature_bounds

    rng = np.random.default_rng(0)
    x = np.column_stack([rng.uniform(2, 8, 2000), rng.normal(50, 5, 2000), np.full(2000, 3.0)])
    bounds = dp_feature_bounds(x, ["a", "b", "c"], (-1000.0, 1000.0), epsilon=20.0, seed=0)  # 3.3 per quantile
    assert abs(bounds["a"][0] - 2) < 0.5 and abs(bounds["a"][1] - 8) < 0.5
    assert abs(bounds["b"][0] - 38.4) < 3 and abs(bounds["b"][1] - 61.6) < 3
    # A constant column leaves the exponential mechanism only the two wide gaps around the value: the interval is
    # noisy but still contains it, and is never empty.
    assert bounds["c"][0] <= 3 <= bounds["c"][1] and bounds["c"][0] < bounds["c"][1]
    noisy = dp_feature_bounds(x, ["a", "b", "c"], (-1000.0, 1000.0), epsilon=0.06, seed=0)
    assert abs(noisy["a"][0] - 2) > 1  # at a tiny epsilon the quantiles are mostly noise: the mechanism really is random


def test_declaration_without_bounds_needs_a_value_range_and_a_statistics_budget():
    from edgeops.spec import parse_spec
    import yaml

    declaration = table_declaration()
    declaration["dataset"].pop("feature_bounds")
    with pytest.raises(Exception, match="give feature_bounds .* or value_range"):
        parse_spec(yaml.safe_dump(declaration))
    declaration["dataset"]["value_range"] = [-100, 100]
    with pytest.raises(Exception, match="privacy.statistics_epsilon"):
        parse_spec(yaml.safe_dump(declaration))
    declaration["privacy"]["statistics_epsilon"] = 0.5
    assert parse_spec(yaml.safe_dump(declaration)).dataset.needs_dp_statistics


def test_fgsm_and_pgd_stay_within_the_budget_and_bounds_and_hurt_accuracy():
    import torch

    from edgeops.robustness import craft

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (400, 2)).astype(np.float32)
    y = (x[:, 0] > x[:, 1]).astype(np.int64)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        optimizer.step()

    def accuracy(inputs):
        return float((model(torch.from_numpy(inputs)).argmax(1).numpy() == y).mean())
    low, high, epsilon = np.zeros(2), np.ones(2), np.full(2, 0.1)
    fgsm = craft(model, x, y, epsilon, low, high, steps=1, seed=0)
    pgd = craft(model, x, y, epsilon, low, high, steps=10, seed=0)
    for adversarial in (fgsm, pgd):
        assert np.abs(adversarial - x).max() <= 0.1 + 1e-6 and adversarial.min() >= 0 and adversarial.max() <= 1
    assert accuracy(x) > 0.95 and accuracy(pgd) <= accuracy(fgsm) + 0.02 and accuracy(fgsm) < accuracy(x) - 0.1
