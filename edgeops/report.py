"""The results of an `edgeops run`, as one typed record: per pipeline the DP model's test accuracy, the privacy spent
and left, the card and whether it verifies; per target its size, accuracy and drop, latency at batch 1, peak memory,
energy, and every check as passed, failed (with its reason) or not measured (with why).

Check outcomes are three, not two. A check that could not be measured here (a GPU target on a host without CUDA, an
energy counter that is not readable) is reported by its asset as a WARN check whose description starts with
NOT_MEASURED_PREFIX; this module, the card and the release gates read it as "not measured", never as "failed".

Built from what the run left under the state folder (each asset's JSON reference, the privacy ledger) and the check
evaluations of the run's Dagster runs; plain Python, no dagster import.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import BaseModel, ConfigDict

from edgeops.asset_store import AssetStore
from edgeops.records import BenchmarkRecord

if TYPE_CHECKING:
    from rich.console import Console

    from edgeops.spec.declaration import Declaration
    from edgeops.spec.targets import TargetSpec

PASSED: Final = "passed"
FAILED: Final = "failed"
NOT_MEASURED: Final = "not measured"
Outcome = Literal["passed", "failed", "not measured"]
NOT_MEASURED_PREFIX = "not measured: "  # a check description that starts so is a not-measured outcome


def not_measured_description(reason: str) -> str:
    """The description of a not-measured check (the asset yields it with WARN severity)."""
    return f"{NOT_MEASURED_PREFIX}{reason}"


def check_outcome(passed: bool, description: str | None) -> Outcome:
    if passed:
        return PASSED
    return NOT_MEASURED if (description or "").startswith(NOT_MEASURED_PREFIX) else FAILED


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CheckSummary(_Record):
    name: str
    asset: str
    outcome: Outcome
    reason: str


class StepFailure(_Record):
    step: str
    reason: str


class TargetSummary(_Record):
    name: str
    device: str
    runtime: str
    size_bytes: int | None
    accuracy: float | None
    accuracy_drop_points: float | None
    latency_b1_p50_ms: float | None
    latency_b1_p95_ms: float | None
    peak_memory_kb: float | None
    memory_kind: str  # "host RSS beyond baseline" or "GPU memory allocated"
    energy: str  # "<x> mJ per inference" or "not measured (why)"
    not_measured: str | None  # why the benchmark measured nothing, when it did not
    checks: list[CheckSummary]
    failed_steps: list[StepFailure]
    ran: bool  # this invocation ran the target's stages (not so with --select dp_model, say)
    outcome: Outcome  # failed if a check or step failed, else not measured if any was, else passed


class PipelineSummary(_Record):
    name: str
    ok: bool  # the shared stages (data, training, card) succeeded
    dp_test_accuracy: float | None
    model_epsilon: float | None  # this model's training epsilon (the DP-SGD accountant's)
    model_delta: float | None
    ledger_epsilon_spent: float | None
    ledger_delta_spent: float | None
    epsilon_budget: float
    epsilon_left: float | None
    delta_budget: float  # the ledger's total delta (deltas compose like epsilons)
    card_id: str | None
    card_path: str | None
    card_state: str  # "verifies", "does not verify: ...", or why there is no card
    failed_steps: list[StepFailure]
    shared_checks: list[CheckSummary]  # checks on the unpartitioned stages that did not pass
    targets: list[TargetSummary]


class RunSummary(_Record):
    pipelines: list[PipelineSummary]
    event_log: str | None
    dagster_home: str
    mlflow_tracking_uri: str
    outputs: str
    cards: str
    dagster_ui: str = "http://127.0.0.1:3000/runs"
    mlflow_ui: str = "http://127.0.0.1:5000"

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.pipelines)


def _checks(runs: list[dict[str, Any]]) -> list[CheckSummary]:
    out = []
    for run in runs:
        for check in run.get("checks", []):
            out.append(
                CheckSummary(
                    name=check["check"],
                    asset=check["asset"],
                    outcome=check_outcome(check["passed"], check.get("description")),
                    reason=(check.get("description") or "").removeprefix(NOT_MEASURED_PREFIX),
                )
            )
    return out


def _energy(bench: BenchmarkRecord | None) -> str:
    if bench is None:
        return "not measured (no benchmark)"
    if not bench.measured:
        return f"not measured ({bench.reason or 'see the benchmark'})"
    energy = bench.energy
    if energy is None or not energy.measured:
        return f"not measured ({energy.reason if energy and energy.reason else 'no energy counter'})"
    per = bench.batch1.energy_mj_per_inference if bench.batch1 else None
    return f"{per:.4g} mJ per inference" if per is not None else f"measured ({energy.source or ''})"


def _target(spec_target: TargetSpec, store: AssetStore, pipeline: str, runs: list[dict[str, Any]]) -> TargetSummary:
    compressed = store.compressed_model_if_present(pipeline, spec_target.name)
    bench = store.benchmark(pipeline, spec_target.name)
    mine = [r for r in runs if r.get("partition") == spec_target.name]
    checks = _checks(mine)
    failed_steps = [
        StepFailure(step=s, reason=r.get("errors", {}).get(s, "")) for r in mine for s in r.get("failed_steps", [])
    ]
    measured = bench is not None and bench.measured
    batch1 = bench.batch1 if bench is not None and measured else None
    on_gpu = bench is not None and measured and bench.on_gpu
    memory = bench.memory_kb if bench is not None and measured else None
    outcomes = {c.outcome for c in checks}
    outcome: Outcome = (
        FAILED
        if FAILED in outcomes or failed_steps
        else NOT_MEASURED
        if NOT_MEASURED in outcomes or not measured
        else PASSED
    )
    return TargetSummary(
        name=spec_target.name,
        device=spec_target.device,
        runtime=spec_target.runtime,
        size_bytes=compressed.size_bytes if compressed else None,
        accuracy=compressed.accuracy if compressed else None,
        accuracy_drop_points=compressed.accuracy_drop_points if compressed else None,
        latency_b1_p50_ms=batch1.p50_ms if batch1 else None,
        latency_b1_p95_ms=batch1.p95_ms if batch1 else None,
        peak_memory_kb=memory,
        memory_kind="GPU memory allocated" if on_gpu else "host RSS beyond baseline",
        energy=_energy(bench),
        not_measured=None if measured else ((bench.reason if bench else None) or "no benchmark ran"),
        checks=checks,
        failed_steps=failed_steps,
        ran=bool(mine),
        outcome=outcome,
    )


def summarize(
    declarations: dict[str, Declaration],
    reports: list[Any],
    home: Path,
    cards_dir: Path,
    event_log: Path | None,
    settings_json: dict[str, Any],
) -> RunSummary:
    """`declarations`: pipeline name -> Declaration; `reports`: pipelines.launch's PipelineRunReport list."""
    from edgeops.ledger import ledger_for

    pipelines = []
    for report in reports:
        spec = declarations[report.pipeline].spec
        store = AssetStore.under_home(home)
        shared = [r for r in report.runs if r.get("partition") is None]
        dp = store.released_model(spec.name)
        ledger_path = home / "pipelines" / spec.name / "privacy_ledger.sqlite"
        spent = (
            ledger_for(home / "pipelines" / spec.name, spec.privacy.epsilon, spec.privacy.delta).spent()
            if ledger_path.exists()
            else None
        )
        card = store.model_card(spec.name)
        shared_checks = _checks(shared)
        card_checks = [c for c in shared_checks if c.name == "card_verifies"]
        if card_checks:
            card_state = (
                "verifies" if card_checks[-1].outcome == PASSED else f"does not verify: {card_checks[-1].reason}"
            )
        elif card:
            card_state = "not verified in this run (the card is from an earlier run)"
        else:
            card_state = "no card: the run stopped before the model_card stage"
        pipelines.append(
            PipelineSummary(
                name=spec.name,
                ok=report.core_success,
                dp_test_accuracy=dp.metrics.test.accuracy if dp else None,
                model_epsilon=dp.privacy.epsilon if dp else None,
                model_delta=dp.privacy.delta if dp else None,
                ledger_epsilon_spent=spent[0] if spent else None,
                ledger_delta_spent=spent[1] if spent else None,
                epsilon_budget=spec.privacy.epsilon,
                epsilon_left=(spec.privacy.epsilon - spent[0]) if spent else None,
                delta_budget=spec.privacy.delta,
                card_id=card.card_id if card else None,
                card_path=card.folder if card else None,
                card_state=card_state,
                failed_steps=[
                    StepFailure(step=s, reason=r.get("errors", {}).get(s, ""))
                    for r in shared
                    for s in r.get("failed_steps", [])
                ],
                shared_checks=[c for c in shared_checks if c.outcome != PASSED],
                targets=[_target(t, store, spec.name, report.runs) for t in spec.targets],
            )
        )
    return RunSummary(
        pipelines=pipelines, event_log=str(event_log) if event_log else None, **settings_json, cards=str(cards_dir)
    )


# ---------------------------------------------------------------- rendering
def _num(value: Any, fmt: str = ".4g", unit: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{unit}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _check_text(check: CheckSummary) -> str:
    return f"{check.asset}/{check.name}" + (
        "" if check.outcome == PASSED else f" ({check.reason})" if check.reason else ""
    )


def plain_lines(summary: RunSummary) -> list[str]:
    """Concise lines for logs and pipes: one block per pipeline, one line per target, one per check that did not
    pass."""
    lines = []
    for p in summary.pipelines:
        lines.append(
            f"{p.name}: {'ok' if p.ok else 'FAILED'}; DP model test accuracy {_pct(p.dp_test_accuracy)} at "
            f"(epsilon {_num(p.model_epsilon, '.3g')}, delta {_num(p.model_delta, 'g')}); ledger spent epsilon "
            f"{_num(p.ledger_epsilon_spent, '.3g')} of {p.epsilon_budget:g}, left {_num(p.epsilon_left, '.3g')} "
            f"(delta {_num(p.ledger_delta_spent, '.2g')} spent of {p.delta_budget:g})"
        )
        lines.append(f"  card {p.card_id or '-'}: {p.card_state}" + (f"  {p.card_path}" if p.card_path else ""))
        for step in p.failed_steps:
            lines.append(f"  failed step {step.step}: {step.reason}")
        for check in p.shared_checks:
            lines.append(f"  {check.outcome} check {_check_text(check)}")
        previous_energy = None
        for t in p.targets:
            if not t.ran:
                lines.append(
                    f"  {t.name} [{t.device}]: not run by this invocation (--select); its last results are in the card "
                    "and the UIs"
                )
                continue
            energy = "as above" if t.energy == previous_energy and t.energy.startswith("not measured") else t.energy
            previous_energy = t.energy
            if t.not_measured is not None and t.energy == f"not measured ({t.not_measured})":
                energy = "not measured (same reason)"
            measured = (
                f"p50/p95 {_num(t.latency_b1_p50_ms)}/{_num(t.latency_b1_p95_ms)} ms at batch 1, memory "
                f"{_num(t.peak_memory_kb, '.0f')} KB"
                if t.not_measured is None
                else f"latency and memory not measured ({t.not_measured})"
            )
            lines.append(
                f"  {t.name} [{t.device}] {t.outcome}: {_num(t.size_bytes and t.size_bytes / 1024, '.1f', ' KB')}, "
                "accuracy "
                f"{_pct(t.accuracy)} (drop {_num(t.accuracy_drop_points, '.2f')} points), {measured}, energy {energy}"
            )
            for step in t.failed_steps:
                lines.append(f"    failed step {step.step}: {step.reason}")
            for check in t.checks:
                if check.outcome != PASSED:
                    lines.append(f"    {check.outcome} check {_check_text(check)}")
            passed = [c.name for c in t.checks if c.outcome == PASSED]
            if passed:
                lines.append(f"    passed: {', '.join(passed)}")
    lines += paths_lines(summary)
    return lines


def paths_lines(summary: RunSummary) -> list[str]:
    return [
        f"Event log:  {summary.event_log}" if summary.event_log else "Event log:  printed above (--verbose)",
        f"Cards:      {summary.cards}",
        f"Dagster:    {summary.dagster_home}   (make ui, then {summary.dagster_ui})",
        f"MLflow:     {summary.mlflow_tracking_uri}   (make ui, then {summary.mlflow_ui})",
    ]


def print_rich(summary: RunSummary, console: Console) -> None:
    """A table per pipeline in a terminal (rich)."""
    from rich.table import Table

    colour = {PASSED: "green", FAILED: "red", NOT_MEASURED: "yellow"}
    for p in summary.pipelines:
        console.print(
            f"[bold]{p.name}[/bold]: {'[green]ok[/green]' if p.ok else '[red]FAILED[/red]'} · DP model test accuracy "
            f"{_pct(p.dp_test_accuracy)} at (epsilon {_num(p.model_epsilon, '.3g')}, delta {_num(p.model_delta, 'g')}) "
            "· ledger "
            f"epsilon spent {_num(p.ledger_epsilon_spent, '.3g')} of {p.epsilon_budget:g}, left "
            f"{_num(p.epsilon_left, '.3g')}",
            highlight=False,
        )
        console.print(
            f"card {p.card_id or '-'}: {p.card_state}" + (f"  {p.card_path}" if p.card_path else ""), highlight=False
        )
        for step in p.failed_steps:
            console.print(f"[red]failed step {step.step}[/red]: {step.reason}", highlight=False)
        for check in p.shared_checks:
            console.print(f"[{colour[check.outcome]}]{check.outcome}[/] check {_check_text(check)}", highlight=False)
        energy_notes: dict[str, list[str]] = {}
        table = Table(show_lines=False, pad_edge=False)
        for column in (
            "target",
            "device",
            "size",
            "accuracy (drop)",
            "p50 / p95 ms (b1)",
            "peak memory",
            "energy",
            "checks",
        ):
            table.add_column(column, overflow="fold")
        for t in p.targets:
            if not t.ran:
                table.add_row(t.name, t.device, "", "", "not run by this invocation", "", "", "")
                continue
            checks = [
                f"[{colour[c.outcome]}]{c.name}: {c.outcome}[/]"
                + (f" ({c.reason})" if c.outcome != PASSED and c.reason else "")
                for c in t.checks
            ] + [f"[red]step {s.step} failed[/] ({s.reason})" for s in t.failed_steps]
            energy = t.energy
            if energy.startswith("not measured (") and t.not_measured is None:  # one note under the table per reason
                energy_notes.setdefault(energy.removeprefix("not measured (")[:-1], []).append(t.name)
                energy = "not measured*"
            table.add_row(
                f"[{colour[t.outcome]}]{t.name}[/]",
                t.device,
                _num(t.size_bytes and t.size_bytes / 1024, ".1f", " KB"),
                f"{_pct(t.accuracy)} ({_num(t.accuracy_drop_points, '.2f')})",
                f"{_num(t.latency_b1_p50_ms)} / {_num(t.latency_b1_p95_ms)}"
                if t.not_measured is None
                else "not measured (see checks)",
                _num(t.peak_memory_kb, ".0f", " KB"),
                "not measured (see checks)" if t.not_measured is not None else energy,
                "\n".join(checks),
            )
        console.print(table)
        for reason, names in energy_notes.items():
            console.print(f"* energy not measured for {', '.join(names)}: {reason}", highlight=False)
    for line in paths_lines(summary):
        console.print(line, highlight=False)
