"""`edgeops doctor`: what a run will do and what each step costs in epsilon, before any training.

It reads the declaration, counts the rows of each split (row counts are public in the DP accounting: the sampling
rate is built from them), and, where a validated dataset already has them, the DP statistics. It trains nothing and
spends no privacy.

Utility estimate: DP-SGD adds Gaussian noise of standard deviation sigma * C to the sum of a batch's clipped
per-sample gradients (C: max_grad_norm). Over the model's d parameters that noise has norm about sigma * C * sqrt(d);
the batch's summed gradient is at most B * C (B: the expected batch size). Their ratio, sigma * sqrt(d) / B, is the
noise-to-signal ratio per step at the most favourable signal (every clipped gradient pointing the same way); real
gradients disagree, so the true ratio is larger. Above NOISE_TO_SIGNAL_WARNING the noise dominates the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from edgeops.records import LedgerView
    from edgeops.spec import Declaration, PipelineSpec

NOISE_TO_SIGNAL_WARNING = (
    4.0  # a heuristic, not a calibrated bound: pipelines/digits.yaml (pre-trained) is at 1.83, the init example at 0.85
)
STATISTICS_ROWS_FACTOR = (
    2.0  # the DP histogram finds a feature when its densest bin holds this many times the threshold
)


class StepCost(BaseModel):
    """One step of a run that touches private data, and its epsilon."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    step: str
    epsilon: float
    delta: float = 0.0
    detail: str = ""


@dataclass
class DoctorReport:
    pipeline: str
    rows: dict[str, int]
    delta: float
    delta_bound: float
    costs: list[StepCost]
    budget_total: float
    budget_remaining: float
    noise: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    statistics: dict[str, Any] | None = None

    @property
    def run_epsilon(self) -> float:
        return sum(c.epsilon for c in self.costs)

    @property
    def budget_covers_run(self) -> bool:
        return self.run_epsilon <= self.budget_remaining + 1e-9

    def lines(self) -> list[str]:
        out = [
            f"pipeline {self.pipeline}",
            "rows: " + ", ".join(f"{name} {count}" for name, count in self.rows.items()),
            f"delta {self.delta:g}; bound 1/n_train = {self.delta_bound:.3g}: "
            + ("ok" if self.delta < self.delta_bound else "TOO LARGE"),
            f"DP-SGD: noise multiplier {self.noise['noise_multiplier']:.3f}, {self.noise['steps']} steps, sample rate "
            f"{self.noise['sample_rate']:.4f} (expected batch {self.noise['expected_batch']:.0f}); noise std per step "
            "on the summed gradient "
            f"{self.noise['noise_std']:.3g} (sigma x max_grad_norm), on the averaged gradient "
            f"{self.noise['noise_std_mean']:.3g} per parameter; "
            f"{self.noise['parameters']} parameters; noise-to-signal per step >= {self.noise['noise_to_signal']:.2f}",
            "epsilon per step of one run:",
        ]
        out += [
            f"  {c.step:28} epsilon {c.epsilon:g}"
            + (f", delta {c.delta:g}" if c.delta else "")
            + (f"  ({c.detail})" if c.detail else "")
            for c in self.costs
        ]
        out.append(
            f"one run spends epsilon {self.run_epsilon:g}; budget {self.budget_total:g}, remaining "
            f"{self.budget_remaining:g}: "
            + (
                "covers every step, each target's fine-tuning included"
                if self.budget_covers_run
                else "DOES NOT cover this run"
            )
        )
        if self.statistics:
            out.append(
                f"DP statistics already estimated (ledger entry {self.statistics.get('ledger_entry')}): constant "
                "columns "
                f"{self.statistics.get('constant_columns') or 'none'}; not located "
                f"{self.statistics.get('unlocated_columns') or 'none'}"
            )
        out += [f"WARNING: {w}" for w in self.warnings]
        return out


def noise_estimate(spec: PipelineSpec, n_train: int, parameters: int) -> dict[str, Any]:
    """The DP-SGD run's noise multiplier and the noise-to-signal ratio it implies (see the module docstring)."""
    from opacus.accountants.utils import get_noise_multiplier

    training = spec.training
    batches = math.ceil(n_train / min(training.batch_size, n_train))
    sample_rate = 1.0 / batches
    steps = training.epochs * batches
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the accountant's advice on its search range
        sigma = float(
            get_noise_multiplier(
                target_epsilon=spec.privacy.training_epsilon,
                target_delta=spec.privacy.delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=training.accountant,
                epsilon_tolerance=0.01,
            )
        )
    expected_batch = sample_rate * n_train
    return {
        "noise_multiplier": sigma,
        "steps": steps,
        "sample_rate": sample_rate,
        "expected_batch": expected_batch,
        "noise_std": sigma * training.max_grad_norm,
        "noise_std_mean": sigma * training.max_grad_norm / expected_batch,
        "parameters": parameters,
        "noise_to_signal": sigma * math.sqrt(parameters) / expected_batch,
    }


def utility_warnings(spec: PipelineSpec, n_train: int, noise: dict[str, Any], n_features: int) -> list[str]:
    """Warnings, with numbers, when the data is too small for the requested epsilon to be useful."""
    warnings = []
    if noise["noise_to_signal"] > NOISE_TO_SIGNAL_WARNING:
        warnings.append(
            f"{n_train} training rows are few for training_epsilon {spec.privacy.training_epsilon:g}: the DP noise "
            "per step is "
            f"{noise['noise_to_signal']:.2f} x the largest possible gradient signal (warning above "
            f"{NOISE_TO_SIGNAL_WARNING:g}); "
            "the noise dominates every step, so expect accuracy far below the non-private reference. More rows, a "
            f"larger batch, a smaller model ({noise['parameters']} parameters) or "
            "a larger epsilon lower it"
        )
    if spec.dataset.needs_dp_statistics:
        import numpy as np

        from edgeops.privacy.feature_statistics import LOG_BIN_DECADES, signed_log

        low, high = cast("tuple[float, float]", spec.dataset.value_range)
        unit = max(abs(low), abs(high)) * 1e-9
        bins = max(int((signed_log(np.array(high), unit) - signed_log(np.array(low), unit)) / LOG_BIN_DECADES), 1)
        scale = n_features / (spec.privacy.statistics_epsilon / 4)
        threshold = scale * math.log(bins / 0.05)
        if n_train < STATISTICS_ROWS_FACTOR * threshold:
            needed = STATISTICS_ROWS_FACTOR * threshold
            warnings.append(
                f"{n_train} training rows are few for statistics_epsilon {spec.privacy.statistics_epsilon:g} over "
                f"{n_features} features: "
                f"the DP histogram that locates each feature's scale has Laplace noise {scale:.0f} per bin and needs "
                "about "
                f"{needed:.0f} rows in a feature's densest bin to find it reliably; features it misses may be scaled "
                "far off. Raise statistics_epsilon to about "
                f"{spec.privacy.statistics_epsilon * needed / max(n_train, 1):.1f} or declare "
                "feature_bounds"
            )
    return warnings


def diagnose(
    declaration: Declaration, ledger_summary: LedgerView | None = None, statistics: dict[str, Any] | None = None
) -> DoctorReport:
    """Everything `edgeops doctor` prints. Reads the source to count rows; trains nothing, spends nothing."""
    import numpy as np

    from edgeops.data import load_source, split_frame
    from edgeops.models import build_model
    from edgeops.spec import DistillStep, PruneStep

    spec = declaration.spec
    data = load_source(declaration)
    splits, _ = split_frame(data, spec.dataset)
    rows = {name: len(part) for name, part in splits.items()}
    n_train = rows["train"]
    n_features = len(data.features)
    placeholder = np.zeros(n_features, dtype=np.float32)
    parameters = sum(
        p.numel()
        for p in build_model(
            spec.model, n_features, len(spec.dataset.classes), spec.dataset.image_shape, placeholder, placeholder + 1
        ).parameters()
    )
    costs = []
    if spec.dataset.needs_dp_statistics:
        costs.append(
            StepCost(
                step="DP feature statistics",
                epsilon=spec.privacy.statistics_epsilon,
                detail=f"centre and spread of {n_features} features",
            )
        )
    costs.append(StepCost(step="DP-SGD training", epsilon=spec.privacy.training_epsilon, delta=spec.privacy.delta))
    if spec.privacy.baseline_epsilon > 0:
        costs.append(StepCost(step="diffprivlib baseline", epsilon=spec.privacy.baseline_epsilon))
    for target in spec.targets:
        for step in target.recipe:
            if isinstance(step, PruneStep) and step.finetune is not None:
                costs.append(
                    StepCost(
                        step=f"fine-tuning {target.name}",
                        epsilon=step.finetune.epsilon,
                        delta=spec.privacy.delta,
                        detail=f"DP-SGD after pruning {step.ratio:g}",
                    )
                )
            if isinstance(step, DistillStep):
                costs.append(
                    StepCost(step=f"distillation {target.name}", epsilon=step.epsilon, delta=spec.privacy.delta)
                )
    noise = noise_estimate(spec, n_train, parameters)
    warnings = utility_warnings(spec, n_train, noise, n_features)
    if spec.privacy.delta >= 1 / max(n_train, 1):
        warnings.insert(
            0,
            f"privacy.delta {spec.privacy.delta:g} is not below 1/n_train = {1 / max(n_train, 1):.3g}: training will "
            "be refused",
        )
    remaining = ledger_summary.remaining_epsilon if ledger_summary else spec.privacy.epsilon
    report = DoctorReport(
        spec.name,
        rows,
        spec.privacy.delta,
        1 / max(n_train, 1),
        costs,
        spec.privacy.epsilon,
        float(remaining),
        noise,
        warnings,
        statistics,
    )
    if not report.budget_covers_run:
        report.warnings.append(
            f"one run spends epsilon {report.run_epsilon:g}, the ledger has {remaining:g} left: the run would be "
            "refused "
            "at the first step that does not fit"
        )
    return report
