"""The privacy ledger: budget enforced before work starts, no double charge, safe under concurrent charges."""

from __future__ import annotations

import threading

import pytest

from edgeops.errors import PrivacyBudgetError
from edgeops.ledger import Budget, PrivacyLedger


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
    with pytest.raises(PrivacyBudgetError, match="above the declared delta"):
        ledger.charge("k", "dp-sgd", 1.0, 1e-3, {})


def test_racing_charges_never_overspend(tmp_path):
    path = tmp_path / "l.sqlite"
    PrivacyLedger(path, Budget(10.0, 1e-5))
    results: list[str] = []

    def worker(index: int) -> None:
        try:
            PrivacyLedger(path, Budget(10.0, 1e-5)).charge(f"k{index}", "dp-sgd", 3.0, 1e-5, {})
            results.append("charged")
        except PrivacyBudgetError:
            results.append("refused")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count("charged") == 3 and results.count("refused") == 5
    assert PrivacyLedger(path, Budget(10.0, 1e-5)).spent()[0] == pytest.approx(9.0)
