"""DP-SGD training, its verification and audit, on a small separable table (fast) and on digits where it matters."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import RecordingRun, stored_table, table_declaration, table_frame

from edgeops.errors import PrivacyBudgetError, TrainingError
from edgeops.ledger import Budget, PrivacyLedger
from edgeops.models import weights_sha256
from edgeops.privacy import empirical_epsilon_lower_bound, rederive_epsilon, train_dp_baseline, verify_claim
from edgeops.spec import PipelineSpec
from edgeops.training import TrainingData, evaluate_logits, plan_dp_training, predict_logits, run_dp_training, train_dp


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
    data = TrainingData(
        x[order[:cut1]],
        y[order[:cut1]],
        x[order[cut1:cut2]],
        y[order[cut1:cut2]],
        x[order[cut2:]],
        y[order[cut2:]],
        [0, 1, 2],
        "digest",
        ["f0", "f1", "f2", "f3"],
    )
    return spec, data


def test_two_runs_of_the_same_declaration_give_different_weights(tmp_path):
    """The noise is secret: knowing the declaration (its seed included) and the data does not reproduce the weights."""
    spec, data = table_setup(tmp_path, epochs=2)
    plan = plan_dp_training(spec, data)
    first = train_dp(spec, data, plan, tmp_path / "a")["model"]
    second = train_dp(spec, data, plan, tmp_path / "b")["model"]
    assert weights_sha256(first) != weights_sha256(second)


def test_empty_poisson_batches_are_noise_only_steps_not_a_crash(tmp_path):
    """At an expected batch of 1 about a third of the Poisson batches are empty; each is still a step (noise only),
    as the accountant counts it. Opacus raised on them before ("Per sample gradient is not initialized")."""
    spec, data = table_setup(tmp_path, epochs=1, batch_size=1)
    plan = plan_dp_training(spec, data)
    assert plan.sample_rate == pytest.approx(1 / 240)  # 240 steps: P(no empty batch) = (1 - e^-1)^240, about 0
    result = train_dp(spec, data, plan, tmp_path / "run")
    weights = np.concatenate([p.detach().numpy().ravel() for p in result["model"].parameters()])
    assert np.isfinite(weights).all() and result["steps"] == plan.steps  # every step taken, the empty ones too


def test_one_secret_reproduces_its_run_and_the_test_switch_is_stamped_not_private(tmp_path, monkeypatch):
    from edgeops.noise import NOT_PRIVATE, NoiseSource

    spec, data = table_setup(tmp_path, epochs=2)
    plan = plan_dp_training(spec, data)
    source = NoiseSource.fresh()
    first = train_dp(spec, data, plan, tmp_path / "a", noise=source)
    second = train_dp(spec, data, plan, tmp_path / "b", noise=source)
    assert weights_sha256(first["model"]) == weights_sha256(
        second["model"]
    )  # public randomness is seeded; the noise is the secret's
    assert first["noise"]["private"] and first["noise"]["identity"] == source.identity
    monkeypatch.setenv("EDGEOPS_TEST_MODE", "1")
    monkeypatch.setenv("EDGEOPS_INSECURE_TEST_NOISE_SEED", "7")
    third, fourth = (train_dp(spec, data, plan, tmp_path / name) for name in ("c", "d"))
    assert weights_sha256(third["model"]) == weights_sha256(fourth["model"])
    assert third["noise"]["source"] == NOT_PRIVATE and third["noise"]["private"] is False


def test_dp_model_learns_and_epsilon_is_within_target(tmp_path):
    spec, data = table_setup(tmp_path, epochs=8)
    plan = plan_dp_training(spec, data)
    result = train_dp(spec, data, plan, tmp_path / "w")
    accuracy = evaluate_logits(predict_logits(result["model"], data.x_test), data.y_test, 3)["accuracy"]
    assert accuracy > 0.8
    assert result["epsilon"] <= spec.privacy.training_epsilon * 1.001
    assert result["steps"] == plan.steps


class Interrupt(KeyboardInterrupt):  # a stop from outside (Ctrl-C, a run terminated), not a failure of the work
    pass


def test_interrupted_stage_resumes_to_identical_weights_without_double_charge(tmp_path, monkeypatch):
    """Through the training stage (run_dp_training: plan, ledger charge, checkpointed DP-SGD, save): a run killed after
    epoch 4 of 6 resumes from its last checkpoint, is not charged again, and ends with the uninterrupted run's
    weights."""
    # The test switch: the reference and the resumed run draw the same (deterministic) noise, so their weights can be
    # compared; in production the resume reuses the interrupted run's secret from its owner-only file.
    monkeypatch.setenv("EDGEOPS_TEST_MODE", "1")
    monkeypatch.setenv("EDGEOPS_INSECURE_TEST_NOISE_SEED", "11")
    spec, _ = table_setup(tmp_path, epochs=6, checkpoint_every=2)
    ref = stored_table(tmp_path / "d")
    budget = Budget(spec.privacy.epsilon, spec.privacy.delta)
    reference = run_dp_training(
        spec, ref, PrivacyLedger(tmp_path / "reference.sqlite", budget), tmp_path / "reference", RecordingRun()
    )

    def stop_after_epoch_4(message: str) -> None:
        if message.startswith("epoch 4/"):
            raise Interrupt("killed")

    ledger = PrivacyLedger(tmp_path / "ledger.sqlite", budget)
    with pytest.raises(Interrupt):
        run_dp_training(spec, ref, ledger, tmp_path / "models", RecordingRun(), progress=stop_after_epoch_4)
    assert len(ledger.entries()) == 1  # charged once, before any private data was read
    messages = []
    resumed = run_dp_training(spec, ref, ledger, tmp_path / "models", RecordingRun(), progress=messages.append)
    assert any(m.startswith("ledger: resuming") for m in messages), (
        messages
    )  # the stage recognised its own earlier charge
    assert any(m.startswith("resumed DP-SGD from epoch 2") for m in messages), (
        messages
    )  # from the last checkpoint, not from scratch
    assert not any(
        m.startswith(("epoch 1/", "epoch 2/")) for m in messages
    )  # epochs before the checkpoint were not redone
    assert resumed.weights_sha256 == reference.weights_sha256
    assert (
        len(ledger.entries()) == 1
        and ledger.spent()[0] == pytest.approx(resumed.privacy.epsilon) == reference.privacy.epsilon
    )
    assert ledger.entries()[0].status == "completed"


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
    spec, _data = table_setup(tmp_path)
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite", Budget(spec.privacy.epsilon, spec.privacy.delta))
    ledger.charge("earlier", "dp-sgd", spec.privacy.epsilon - 1.0, spec.privacy.delta, {})
    ref = stored_table(tmp_path / "d")
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
    assert (
        rederive_epsilon(plan.noise_multiplier, plan.sample_rate, plan.steps, plan.delta, "rdp")
        >= outcome["rederived_epsilon"] * 0.95
    )


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
    model = train_dp_baseline(x[:400], y[:400], 1000.0, bounds, 3)
    assert (model.predict(x[400:]) == y[400:]).mean() > 0.9
    with pytest.raises(PrivacyBudgetError, match="would leak privacy"):
        train_dp_baseline(x[:400], y[:400], 1.0, None, 3)


def test_dp_statistics_centre_and_scale_features_five_orders_of_magnitude_apart():
    from edgeops.privacy import constant_columns, dp_feature_statistics

    rng = np.random.default_rng(0)
    scales = np.array([1e-2, 1.0, 1e2, 1e4])
    x = np.column_stack([rng.normal(5, 1, 5000) * s for s in scales] + [np.full(5000, 3.0)])
    names = ["a", "b", "c", "d", "const"]
    assert constant_columns(x, names) == ["const"]
    stats = dp_feature_statistics(x, names, (-1e5, 1e5), epsilon=1.0, constant=frozenset({"const"}))
    for column, scale in zip("abcd", scales, strict=False):
        assert abs(stats["centre"][column] - 5 * scale) < 0.5 * scale, column  # within half a standard deviation
        assert 0.5 * scale < stats["spread"][column] < 2 * scale, column
        low, high = stats["feature_bounds"][column]
        assert -1e5 <= low < 5 * scale < high <= 1e5
    assert stats["feature_bounds"]["const"] == [-1e5, 1e5] and "const" not in stats["centre"]  # dropped from scaling
    noisy = [dp_feature_statistics(x, names, (-1e5, 1e5), epsilon=1e-4)["centre"].get("a") for _ in range(3)]
    assert len(set(noisy)) == 3  # the noise is fresh each time (secret, never the declared seed)


def test_declaration_without_bounds_needs_a_value_range_and_a_statistics_budget():
    import yaml

    from edgeops.spec import parse_spec

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
    fgsm = craft(model, x, y, epsilon=epsilon, low=low, high=high, steps=1, seed=0)
    pgd = craft(model, x, y, epsilon=epsilon, low=low, high=high, steps=10, seed=0)
    for adversarial in (fgsm, pgd):
        assert np.abs(adversarial - x).max() <= 0.1 + 1e-6 and adversarial.min() >= 0 and adversarial.max() <= 1
    assert accuracy(x) > 0.95 and accuracy(pgd) <= accuracy(fgsm) + 0.02 and accuracy(fgsm) < accuracy(x) - 0.1
