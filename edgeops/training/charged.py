"""DP-SGD charged to the privacy ledger first (`charged_dp_sgd`), on a secret noise source whose identity keys the
charge, and the owner-only records and noise statement of a charged run."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from edgeops.files import TRAINED_WEIGHTS_FILE, write_owner_only
from edgeops.ledger import DRAW_SEPARATOR, PrivacyLedger
from edgeops.models import load_weights, save_weights, weights_sha256
from edgeops.noise import NOT_PRIVATE, NoiseSecrets
from edgeops.spec import PipelineSpec
from edgeops.training.data import Progress, TrainingData, new_model
from edgeops.training.dpsgd import DpPlan, train_dp

if TYPE_CHECKING:
    from edgeops.ledger import LedgerEntry


def noise_statement(record: dict[str, Any] | None) -> str:
    """One line for metadata, tags and the card: "secret" or NOT PRIVATE (the deterministic test switch)."""
    if record is None:
        return "unknown (trained before edgeops.noise)"
    return (
        NOT_PRIVATE
        if not record.get("private")
        else "secret (ChaCha20 keystream keyed from os.urandom; identity " + record["identity"] + ")"
    )


@dataclass
class SecretDpRun:
    """The outcome of `charged_dp_sgd`: the model, its record (curves, epsilon, noise record) and where it lives."""

    model: nn.Module
    record: dict[str, Any]
    plan: DpPlan
    entry: object
    workdir: Path
    reused: bool


def charged_dp_sgd(
    spec: PipelineSpec,
    data: TrainingData,
    plan: DpPlan,
    ledger: PrivacyLedger,
    out_root: Path,
    *,
    skeleton: nn.Module | None,
    mechanism: str,
    note: str,
    run_id: str = "",
    progress: Progress = lambda _: None,
    home: Path | None = None,
    kind: str = "dpsgd",
    late_options: Callable[[], dict[str, Any]] | None = None,
    **train_options: Any,
) -> SecretDpRun:
    """DP-SGD on a secret noise source, charged first through `PrivacyLedger.spend`. The charge key holds the secret's
    identity (never the secret):
    - this computation completed before and its output is stored: that output is returned (no data read, no charge);
    - an interrupted run's owner-only secret file exists: the same secret, the same key, so a resume is charged once;
    - otherwise a fresh secret (os.urandom), a new key, a new visible charge.
    `skeleton` is the starting model (None: a new one, seeded by the plan); a reused output's weights are loaded into
    it.
    `kind` names the mechanism in the key; `late_options()` gives train_dp options that read private rows (a teacher's
    logits on the training split): it is called only after the charge."""
    store = NoiseSecrets(home)
    secret_name = plan.computation_key(kind)  # the computation without its secret: names the resume file

    def workdir_of(
        entry: LedgerEntry,
    ) -> Path:  # one folder per charge: a fresh draw never resumes an earlier draw's checkpoint
        return out_root / entry.charge_key.split(":")[1].replace(DRAW_SEPARATOR, "-draw")[:24]

    def stored(entry: LedgerEntry) -> bool:
        return (workdir_of(entry) / TRAINED_WEIGHTS_FILE).exists() and (workdir_of(entry) / "training.json").exists()

    def reuse(entry: LedgerEntry, done_plan: DpPlan) -> SecretDpRun:
        workdir = workdir_of(entry)
        skeleton_model = skeleton if skeleton is not None else new_model(spec, data)
        model = load_weights(skeleton_model, workdir / TRAINED_WEIGHTS_FILE)
        progress(
            "ledger: this computation (same data, inputs, configuration, code and noise secret) completed as entry "
            f"{entry.id}: "
            "its stored model is reused (no data read, no new charge)"
        )
        return SecretDpRun(model, json.loads((workdir / "training.json").read_text()), done_plan, entry, workdir, True)

    finished = store.finished_identity(secret_name)
    if finished:
        done_plan = replace(plan, noise_identity=finished)
        draws = ledger.draws(done_plan.charge_key(kind))
        if draws and draws[-1].status == "completed" and stored(draws[-1]):
            return reuse(draws[-1], done_plan)
    noise = store.open(secret_name, progress)
    plan = replace(plan, noise_identity=noise.identity)
    noise_record = {k: v for k, v in noise.record().items() if k != "identity"}
    why = note if noise.origin == "fresh" else f"{note}; noise secret: {noise.origin}"
    with ledger.spend(
        plan.computation(kind),
        mechanism,
        plan.target_epsilon,
        plan.delta,
        parameters={**plan.ledger_parameters(), "noise": noise_record},
        run_id=run_id,
        note=why,
        stored=stored,
        resumable=True,
    ) as spend:
        if spend.reused:  # the same secret completed this computation before (only the test switch repeats a secret)
            return reuse(spend.entry, plan)
        workdir = workdir_of(spend.entry)
        progress(
            f"ledger: {'resuming' if spend.resumed else 'charged'} epsilon {plan.target_epsilon:g}, delta "
            f"{plan.delta:g} "
            f"as entry {spend.entry.id}" + (f" ({spend.entry.note})" if "fresh draw" in spend.entry.note else "")
        )
        if late_options is not None:
            train_options = {**train_options, **late_options()}
        result = train_dp(
            spec, data, plan, workdir, progress=progress, initial_model=skeleton, noise=noise, **train_options
        )
        model = result.pop("model")
        save_weights(
            model, workdir / TRAINED_WEIGHTS_FILE, {"pipeline": spec.name, "charge_key": spend.entry.charge_key}
        )
        write_owner_only(workdir / "training.json", json.dumps(result))  # holds the un-noised training loss
        entry = spend.complete(
            output={"weights_sha256": weights_sha256(model)},
            parameters={"epsilon_accountant": result["epsilon"]},
            epsilon=result["epsilon"],
        )
    store.finish(secret_name, noise)
    return SecretDpRun(model, result, plan, entry, workdir, False)
