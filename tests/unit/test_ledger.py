"""The privacy ledger: budget enforced before work starts, no double charge, safe under concurrent charges."""

from __future__ import annotations

import threading

import pytest

from edgeops.errors import PrivacyBudgetError
from edgeops.ledger import Budget, Computation, PrivacyLedger


def test_refuses_overspend_and_says_what_is_left(tmp_path):
    ledger = PrivacyLedger(tmp_path / "l.sqlite", Budget(5.0, 1e-5))
    ledger.charge("a", "dp-sgd", 3.0, 1e-5, {})
    with pytest.raises(PrivacyBudgetError, match="only 2 of the declared 5 is left"):
        ledger.charge("b", "dp-sgd", 2.5, 1e-5, {})
    assert [e.charge_key for e in ledger.entries()] == ["a"]


def test_same_key_is_not_charged_twice(tmp_path):
    ledger = PrivacyLedger(tmp_path / "l.sqlite", Budget(5.0, 1e-5))
    first, charged = ledger.charge("resume-me", "dp-sgd", 3.0, 1e-5, {"steps": 10})
    again, charged_again = ledger.charge("resume-me", "dp-sgd", 3.0, 1e-5, {"steps": 10})
    assert charged and not charged_again and first.id == again.id
    assert ledger.spent()[0] == pytest.approx(3.0)


def test_update_can_only_lower_epsilon(tmp_path):
    ledger = PrivacyLedger(tmp_path / "l.sqlite", Budget(5.0, 1e-5))
    entry, _ = ledger.charge("k", "dp-sgd", 3.0, 1e-5, {})
    assert ledger.update(entry.id, "completed", epsilon=2.9).epsilon == pytest.approx(2.9)
    assert ledger.update(entry.id, "completed", epsilon=4.0).epsilon == pytest.approx(2.9)


def test_delta_above_declared_is_refused(tmp_path):
    ledger = PrivacyLedger(tmp_path / "l.sqlite", Budget(5.0, 1e-5))
    with pytest.raises(
        PrivacyBudgetError, match=r"needs delta 0.001, but only 1e-05 of the declared delta 1e-05 is left"
    ):
        ledger.charge("k", "dp-sgd", 1.0, 1e-3, {})


def test_deltas_compose_and_an_overspend_is_refused_with_the_numbers(tmp_path):
    # Each charge is within the total on its own; the old per-mechanism cap let both through (2e-5 under 1e-5).
    ledger = PrivacyLedger(tmp_path / "l.sqlite", Budget(10.0, 1e-5))
    ledger.charge("training", "dp-sgd", 3.0, 1e-5, {})
    with pytest.raises(
        PrivacyBudgetError,
        match=r"fine-tuning needs delta 1e-05, but only 0 of the declared delta 1e-05 is left \(spent 1e-05",
    ):
        ledger.charge("finetune", "fine-tuning", 1.0, 1e-5, {})
    assert ledger.spent() == pytest.approx((3.0, 1e-5)) and ledger.summary().remaining_delta == pytest.approx(0.0)


def computation(**changes) -> Computation:
    fields = {
        "kind": "dpsgd",
        "dataset_digest": "d1",
        "inputs": {"feature_bounds": [[0.0], [16.0]]},
        "hyperparameters": {"epochs": 3, "learning_rate": 1.0},
        "code": {"edgeops": "0", "source_sha256": "abc"},
    }
    return Computation(**{**fields, **changes})


def test_spend_runs_once_and_reuses_the_stored_output(tmp_path):
    ledger = PrivacyLedger(tmp_path / "l.sqlite", Budget(10.0, 1e-5))
    runs = []
    for _ in range(3):
        with ledger.spend(computation(), "dp-sgd", 3.0, 1e-6) as spend:
            if not spend.reused:
                runs.append(1)
                spend.complete(output={"weights": "w1"}, epsilon=2.9)
            assert spend.output == {"weights": "w1"}
    assert len(runs) == 1 and ledger.spent()[0] == pytest.approx(2.9) and len(ledger.entries()) == 1


def test_a_changed_hyperparameter_or_code_is_charged_anew(tmp_path):
    ledger = PrivacyLedger(tmp_path / "l.sqlite", Budget(10.0, 1e-5))
    for changed in (
        computation(),
        computation(hyperparameters={"epochs": 3, "learning_rate": 2.0}),
        computation(code={"edgeops": "0", "source_sha256": "def"}),
        computation(noise_secret_identity="secret-2"),
    ):
        with ledger.spend(changed, "dp-sgd", 1.0, 1e-6) as spend:
            spend.complete(output={})
    assert len({e.charge_key for e in ledger.entries()}) == 4 and ledger.spent()[0] == pytest.approx(4.0)


def test_failure_keeps_the_charge_and_a_retry_is_a_fresh_visible_draw(tmp_path):
    ledger = PrivacyLedger(tmp_path / "l.sqlite", Budget(10.0, 1e-5))
    with pytest.raises(RuntimeError, match="diverged"), ledger.spend(computation(), "dp-sgd", 3.0, 1e-6):
        raise RuntimeError("diverged")
    (failed,) = ledger.entries()
    assert (
        failed.status == "failed"
        and "diverged" in failed.parameters["error"]
        and ledger.spent()[0] == pytest.approx(3.0)
    )
    with ledger.spend(computation(), "dp-sgd", 3.0, 1e-6) as spend:
        assert spend.charged_now and not spend.reused
        spend.complete(output={"weights": "w2"})
    retry = ledger.entries()[-1]
    assert retry.charge_key == failed.charge_key + "#draw-2" and f"entry {failed.id}: it ended failed" in retry.note
    assert ledger.spent()[0] == pytest.approx(6.0)


def test_lost_output_is_a_fresh_charge_and_an_interrupted_resumable_run_is_not(tmp_path):
    ledger = PrivacyLedger(tmp_path / "l.sqlite", Budget(10.0, 1e-5))
    with ledger.spend(computation(), "dp-sgd", 2.0, 1e-6, stored=lambda entry: False) as spend:
        spend.complete(output={"path": "gone"})
    with ledger.spend(computation(), "dp-sgd", 2.0, 1e-6, stored=lambda entry: False) as spend:
        assert spend.charged_now and "stored output is gone" in spend.entry.note
    assert ledger.spent()[0] == pytest.approx(4.0)
    # A resumable mechanism (DP-SGD with its checkpoint) killed mid-run continues on the same charge.
    entry, _ = ledger.charge(computation(kind="other").key(), "dp-sgd", 1.0, 1e-6, {})
    with ledger.spend(computation(kind="other"), "dp-sgd", 1.0, 1e-6, resumable=True) as spend:
        assert spend.resumed and not spend.charged_now and spend.entry.id == entry.id
    assert ledger.spent()[0] == pytest.approx(5.0)


def test_an_older_ledger_file_gains_the_new_columns(tmp_path):
    import sqlite3

    from edgeops.ledger import SCHEMA

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA)
        db.execute(
            "INSERT INTO entries (charge_key, mechanism, epsilon, delta, parameters, status, created_at, updated_at, "
            "run_id) VALUES ('k', 'dp-sgd', 3, 1e-5, '{}', 'completed', 0, 0, '')"
        )
    (entry,) = PrivacyLedger(path, Budget(10.0, 1e-4)).entries()
    assert entry.output is None and entry.computation == {}


def test_racing_charges_never_overspend(tmp_path):
    path = tmp_path / "l.sqlite"
    PrivacyLedger(path, Budget(10.0, 1e-4))
    results: list[str] = []

    def worker(index: int) -> None:
        try:
            PrivacyLedger(path, Budget(10.0, 1e-4)).charge(f"k{index}", "dp-sgd", 3.0, 1e-5, {})
            results.append("charged")
        except PrivacyBudgetError:
            results.append("refused")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count("charged") == 3 and results.count("refused") == 5
    assert PrivacyLedger(path, Budget(10.0, 1e-4)).spent()[0] == pytest.approx(9.0)
