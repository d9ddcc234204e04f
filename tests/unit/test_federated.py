"""Federated training with Flower on small tabular data: partitions, faults, clipping, DP accounting and the ledger."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import table_declaration, table_frame
from record_examples import dataset_ref

from edgeops.errors import PrivacyBudgetError
from edgeops.federated import ClientBehaviour, FederatedError, dirichlet_partition, planned_epsilon, train_federated
from edgeops.records import DatasetRef
from edgeops.spec import parse_spec
from edgeops.training import TrainingData, evaluate_logits, predict_logits


def spec_with(**federated):
    declaration = table_declaration()
    declaration["training"]["mode"] = "federated"
    declaration["training"]["federated"] = {
        "clients": 4,
        "rounds": 3,
        "local_epochs": 1,
        "local_batch_size": 16,
        "learning_rate": 0.1,
        "min_clients": 2,
        "alpha": 1.0,
        **federated,
    }
    import yaml

    return parse_spec(yaml.safe_dump(declaration))


@pytest.fixture(scope="module")
def data() -> TrainingData:
    frame = table_frame(240)
    x = frame[["f0", "f1", "f2", "f3"]].to_numpy(np.float32)
    y = frame["label"].to_numpy(np.int64)
    return TrainingData(
        x[:160], y[:160], x[160:200], y[160:200], x[200:], y[200:], [0, 1, 2], "digest", ["f0", "f1", "f2", "f3"]
    )


def test_dirichlet_partition_covers_every_row_once_and_skews_labels():
    labels = np.repeat(np.arange(10), 100)
    parts = dirichlet_partition(labels, 10, alpha=0.3, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(1000))
    shares = np.array([np.bincount(labels[p], minlength=10) / len(p) for p in parts])
    assert shares.max(axis=1).mean() > 0.3  # IID would put about 0.1 of each class on every client
    assert [len(p) for p in dirichlet_partition(labels, 10, 0.3, 0)] == [len(p) for p in parts]  # seeded
    with pytest.raises(FederatedError, match="could not give each"):
        dirichlet_partition(labels[:15], 10, 0.05, 0, min_size=2)


def test_fedavg_learns_and_is_reproducible(data):
    spec = spec_with(rounds=4)
    first, second = train_federated(spec, data), train_federated(spec, data)
    accuracy = evaluate_logits(predict_logits(first["model"], data.x_test), data.y_test, 3)["accuracy"]
    assert accuracy > 0.8
    assert all(
        np.array_equal(a, b)
        for a, b in zip(first["model"].state_dict().values(), second["model"].state_dict().values(), strict=False)
    )
    assert [r["usable"] for r in first["rounds"]] == [4, 4, 4, 4] and first["epsilon"] is None


def test_faulty_clients_are_reported_and_the_round_completes(data):
    behaviours = {
        0: ClientBehaviour(disconnect_rounds={2}),
        1: ClientBehaviour(malformed=True),
        2: ClientBehaviour(oversized_mb=1.0),
    }
    result = train_federated(spec_with(max_update_mb=0.5, min_clients=1), data, behaviours)
    second = result["rounds"][1]["clients"]
    assert second[0] == {"status": "disconnected"}
    assert second[1]["status"] == "rejected" and "shape (3, 3)" in second[1]["reason"]
    assert (
        result["rounds"][0]["clients"][2]["status"] == "rejected"
        and "exceeds" in result["rounds"][0]["clients"][2]["reason"]
    )
    assert [r["usable"] for r in result["rounds"]] == [2, 1, 2]


def test_too_few_clients_fail_the_round_clearly(data):
    behaviours = {i: ClientBehaviour(disconnect_rounds={1}) for i in range(3)}
    with pytest.raises(
        FederatedError, match=r"round 1: only 1 usable client updates of 4 sampled; the declaration needs at least 2"
    ):
        train_federated(spec_with(), data, behaviours)


def test_clipping_bounds_a_poisoned_client_and_the_report_shows_it(data):
    poisoned = {3: ClientBehaviour(scale_update=50.0)}
    clipped = train_federated(spec_with(clipping_norm=0.5), data, poisoned)
    first = clipped["rounds"][0]["clients"]
    assert first[3]["clipped"] and "outlier" in first[3] and not any("outlier" in first[i] for i in range(3))
    unclipped = train_federated(spec_with(), data, poisoned)
    clean = train_federated(spec_with(clipping_norm=0.5), data)

    def accuracy(result):
        return evaluate_logits(predict_logits(result["model"], data.x_test), data.y_test, 3)["accuracy"]

    assert accuracy(clipped) > accuracy(unclipped)
    assert accuracy(clipped) >= accuracy(clean) - 0.1


def test_client_level_dp_is_accounted_and_rederived_independently(data):
    from edgeops.privacy import verify_claim

    spec = spec_with(clipping_norm=1.0, noise_multiplier=1.0)
    result = train_federated(spec, data)
    assert result["epsilon"] == pytest.approx(planned_epsilon(spec.training.federated, spec.mechanism_delta))
    outcome = verify_claim(
        {
            "noise_multiplier": 1.0,
            "sample_rate": 1.0,
            "steps": 3,
            "delta": spec.mechanism_delta,
            "accountant": "flower-rdp",
            "claimed_epsilon": result["epsilon"],
        }
    )
    assert outcome["passed"] and outcome["method"] == "dp-accounting PLD"
    assert not verify_claim(
        {
            "noise_multiplier": 1.0,
            "sample_rate": 1.0,
            "steps": 30,
            "delta": spec.mechanism_delta,
            "accountant": "flower-rdp",
            "claimed_epsilon": result["epsilon"],
        }
    )["passed"]


def test_rounds_over_budget_are_refused_before_any_round(tmp_path):
    from edgeops.federated import run_federated_training
    from edgeops.ledger import Budget, PrivacyLedger

    spec = spec_with(clipping_norm=1.0, noise_multiplier=0.3, rounds=50)
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite", Budget(20, spec.privacy.delta))
    dataset = DatasetRef.model_validate(dataset_ref())  # never read: both are refused before any data is
    with pytest.raises(PrivacyBudgetError, match="only 20 of the declared 20 is left"):
        run_federated_training(spec, dataset, ledger, tmp_path, run=None)
    assert ledger.entries() == []
    with pytest.raises(PrivacyBudgetError, match="non-private federated model cannot be released"):
        run_federated_training(spec_with(), dataset, ledger, tmp_path, run=None)


def test_declaration_checks():
    with pytest.raises(Exception, match="needs clipping_norm"):
        spec_with(noise_multiplier=1.0)
    with pytest.raises(Exception, match="min_clients 9 exceeds clients 4"):
        spec_with(min_clients=9)


def test_secure_aggregation_matches_plain_fedavg_and_survives_a_dropout(data):
    plain = train_federated(spec_with(), data)
    secure = train_federated(spec_with(secure_aggregation=True), data, {1: ClientBehaviour(disconnect_rounds={99})})
    differences = [
        float(np.abs(a.numpy() - b.numpy()).max())
        for a, b in zip(plain["model"].state_dict().values(), secure["model"].state_dict().values(), strict=False)
    ]
    assert max(differences) < 1e-2  # SecAgg+ quantizes the masked vectors; nothing else differs
    first = secure["rounds"][0]
    assert first["stages"] == {"setup": 4, "share_keys": 4, "collect_masked_vectors": 4, "unmask": 4}
    assert all(
        c["status"].startswith("masked update") for c in first["clients"].values()
    )  # no per-client view on the server
    dropped = train_federated(spec_with(secure_aggregation=True), data, {1: ClientBehaviour(disconnect_rounds={2})})
    assert [r["usable"] for r in dropped["rounds"]] == [4, 3, 4] and dropped["rounds"][1]["clients"][1] == {
        "status": "disconnected"
    }
    with pytest.raises(Exception, match="reconstruction_threshold 3 exceeds min_clients 2"):
        spec_with(secure_aggregation=True, reconstruction_threshold=3)
