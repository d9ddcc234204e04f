"""The privacy ledger: every computation that touches private data is an entry, and the budget is enforced
before the computation starts.

Composition is basic (epsilons add up, deltas add up): simple, conservative, and easy for an auditor to check.
A charge is keyed by what it computes (dataset digest, mechanism, configuration, seed). Asking again with the
same key returns the existing entry instead of charging twice: that is how a resumed training run, or a re-run
that recomputes the identical seeded release, avoids a double charge. Fresh noise needs a new key (a new seed or
new data), and is charged visibly.

Storage is one SQLite file per pipeline; check-and-charge happens in one IMMEDIATE transaction, so two runs
racing for the last of the budget cannot both win.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edgeops.errors import PrivacyBudgetError

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  charge_key TEXT NOT NULL UNIQUE,
  mechanism TEXT NOT NULL,
  epsilon REAL NOT NULL,
  delta REAL NOT NULL,
  parameters TEXT NOT NULL,
  status TEXT NOT NULL,          -- charged (work started) | completed (work finished) | failed (work touched data, then failed)
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL,
  run_id TEXT NOT NULL,
  note TEXT NOT NULL DEFAULT ''
);
"""


@dataclass(frozen=True)
class LedgerEntry:
    id: int
    charge_key: str
    mechanism: str
    epsilon: float
    delta: float
    parameters: dict
    status: str
    created_at: float
    updated_at: float
    run_id: str
    note: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Budget:
    epsilon: float
    delta_per_mechanism: float


class PrivacyLedger:
    def __init__(self, path: Path, budget: Budget):
        self.path = Path(path)
        self.budget = budget
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        return db

    @staticmethod
    def _entry(row: sqlite3.Row) -> LedgerEntry:
        data = dict(row)
        data["parameters"] = json.loads(data["parameters"])
        return LedgerEntry(**data)

    def entries(self) -> list[LedgerEntry]:
        with self._connect() as db:
            return [self._entry(r) for r in db.execute("SELECT * FROM entries ORDER BY id")]

    def spent(self) -> tuple[float, float]:
        entries = self.entries()
        return sum(e.epsilon for e in entries), sum(e.delta for e in entries)

    def remaining(self) -> float:
        return self.budget.epsilon - self.spent()[0]

    def find(self, charge_key: str) -> LedgerEntry | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM entries WHERE charge_key = ?", (charge_key,)).fetchone()
        return self._entry(row) if row else None

    def charge(self, charge_key: str, mechanism: str, epsilon: float, delta: float, parameters: dict,
               run_id: str = "", note: str = "") -> tuple[LedgerEntry, bool]:
        """Charge before the work starts. Returns (entry, charged_now). Raises PrivacyBudgetError, saying what is
        left, if the charge would overspend. An existing entry with the same key is returned uncharged."""
        if epsilon < 0 or delta < 0:
            raise PrivacyBudgetError(f"{mechanism}: epsilon and delta must be >= 0")
        if delta > self.budget.delta_per_mechanism * (1 + 1e-9):
            raise PrivacyBudgetError(f"{mechanism}: delta {delta:g} is above the declared delta {self.budget.delta_per_mechanism:g}")
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT * FROM entries WHERE charge_key = ?", (charge_key,)).fetchone()
            if row:
                db.execute("COMMIT")
                return self._entry(row), False
            spent = db.execute("SELECT COALESCE(SUM(epsilon), 0) FROM entries").fetchone()[0]
            if spent + epsilon > self.budget.epsilon + 1e-9:
                db.execute("ROLLBACK")
                raise PrivacyBudgetError(
                    f"{mechanism} needs epsilon {epsilon:g}, but only {self.budget.epsilon - spent:g} of the declared "
                    f"{self.budget.epsilon:g} is left (spent {spent:g}); nothing was run")
            now = time.time()
            cursor = db.execute(
                "INSERT INTO entries (charge_key, mechanism, epsilon, delta, parameters, status, created_at, updated_at, run_id, note) "
                "VALUES (?, ?, ?, ?, ?, 'charged', ?, ?, ?, ?)",
                (charge_key, mechanism, float(epsilon), float(delta), json.dumps(parameters, sort_keys=True, default=str), now, now, run_id, note))
            entry_id = cursor.lastrowid
            db.execute("COMMIT")
        finally:
            db.close()
        return self.get(entry_id), True

    def get(self, entry_id: int) -> LedgerEntry:
        with self._connect() as db:
            return self._entry(db.execute("SELECT * FROM entries WHERE id = ?", (entry_id,)).fetchone())

    def update(self, entry_id: int, status: str, parameters: dict | None = None, epsilon: float | None = None) -> LedgerEntry:
        """Record how the work ended. The epsilon can only go down (the accountant's final figure), never up."""
        entry = self.get(entry_id)
        new_epsilon = entry.epsilon if epsilon is None else min(entry.epsilon, float(epsilon))
        merged = {**entry.parameters, **(parameters or {})}
        with self._connect() as db:
            db.execute("UPDATE entries SET status = ?, parameters = ?, epsilon = ?, updated_at = ? WHERE id = ?",
                       (status, json.dumps(merged, sort_keys=True, default=str), new_epsilon, time.time(), entry_id))
        return self.get(entry_id)

    def summary(self) -> dict:
        epsilon, delta = self.spent()
        return {"budget_epsilon": self.budget.epsilon, "delta_per_mechanism": self.budget.delta_per_mechanism,
                "spent_epsilon": round(epsilon, 6), "spent_delta": delta, "remaining_epsilon": round(self.budget.epsilon - epsilon, 6),
                "composition": "basic (sum of epsilons and of deltas)", "entries": [e.as_dict() for e in self.entries()]}


def ledger_for(home_pipeline_dir: Path, epsilon: float, delta: float) -> PrivacyLedger:
    return PrivacyLedger(home_pipeline_dir / "privacy_ledger.sqlite", Budget(epsilon, delta))
