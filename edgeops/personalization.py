"""Trainability per target: can this artifact be fine-tuned on its device, within the declared time and memory?

The measurement runs `edgeops.hil.personalize` (the code the device agent runs) on local data simulated the way a
device would see it: the held-out test split under the declared shift (`personalization.local_shift`), standing in for
one user's data. Accuracy before and after fine-tuning is measured on a held-out share of that local data, and the
share of the accuracy lost to the shift that fine-tuning wins back is compared with `min_recovery`.
Devices other than this host report "not measured": on an agent the same job runs through POST /v1/personalize
against the device's own data folder.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeops.errors import SpecError
from edgeops.hil.personalize import personalization_epsilon
from edgeops.records import FineTuneCheck, StepLatency, TrainabilityRecord
from edgeops.spec import Declaration, TargetSpec

if TYPE_CHECKING:
    from edgeops.records import DatasetRef


def simulated_local_data(declaration: Declaration, dataset: DatasetRef) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unshifted x, shifted x, y): the test split, as this user's device would see it."""
    from edgeops.drift import shift_batch
    from edgeops.training.data import TrainingData

    spec = declaration.spec
    shift = spec.personalization.local_shift
    data = TrainingData.from_ref(dataset, spec)
    rows = min(shift.rows, len(data.y_test))
    x, y = data.x_test[:rows], data.y_test[:rows]
    shifted, _ = shift_batch(
        x,
        y,
        shift.kind,
        shift.severity,
        declaration=declaration,
        features=data.features,
        rng=np.random.default_rng(spec.training.seed),
    )
    return x.astype(np.float32), shifted.astype(np.float32), y


def _not_measured(target: TargetSpec, reason: str) -> TrainabilityRecord:
    """The trainability record of a target this host cannot measure, with the reason."""
    return TrainabilityRecord(measured=False, target=target.name, reason=reason)


def measure_trainability(
    declaration: Declaration, target: TargetSpec, artifact_path: str, dataset: DatasetRef
) -> TrainabilityRecord:
    from edgeops.hil.personalize import PersonalizationError, personalize

    spec = declaration.spec
    settings = spec.personalization
    device = spec.device(target.device)
    if device.kind != "local":
        return _not_measured(
            target,
            f"device {device.name!r} is {device.kind}: the pipeline measures trainability on this host's CPU; on an "
            "agent the same job runs through POST /v1/personalize against the device's own data",
        )
    if target.runtime != "onnxruntime":
        return _not_measured(
            target,
            f"on-device personalization retrains the head of an ONNX artifact; {target.runtime} artifacts have no "
            "training path in the device agent",
        )
    artifact = Path(artifact_path).read_bytes()
    x, shifted, y = simulated_local_data(declaration, dataset)
    if settings.noise_multiplier > 0:  # priced before the job runs, against the job's own declared budget
        train_rows = int(round(len(y) * (1 - settings.holdout)))
        epsilon = personalization_epsilon(
            settings.steps,
            min(settings.batch_size, train_rows) / train_rows,
            settings.noise_multiplier,
            spec.mechanism_delta,
        )
        if epsilon is None or settings.epsilon is None:  # validation requires epsilon with noise_multiplier > 0
            raise SpecError(
                str(declaration.file),
                [("personalization.epsilon", "noise_multiplier > 0 needs epsilon (the job's own budget)")],
            )
        if epsilon > settings.epsilon:
            return TrainabilityRecord(
                measured=True,
                target=target.name,
                trainable=False,
                device_epsilon=epsilon,
                reason=f"the job would spend epsilon {epsilon:.3f} on the device's data, over personalization.epsilon "
                f"{settings.epsilon:g}; nothing was run",
            )
    job = partial(
        personalize,
        artifact,
        batch_size=settings.batch_size,
        holdout=settings.holdout,
        clipping_norm=settings.clipping_norm,
        returns="metrics",
        seed=spec.training.seed,
        threads=device.threads,
    )
    try:
        unshifted = job(x, y, steps=1, learning_rate=1e-12, noise_multiplier=0.0)
        result = job(
            shifted,
            y,
            steps=settings.steps,
            learning_rate=settings.learning_rate,
            noise_multiplier=settings.noise_multiplier,
        )
    except PersonalizationError as err:
        return TrainabilityRecord(measured=True, target=target.name, trainable=False, reason=str(err))
    lost = unshifted["accuracy_before"] - result["accuracy_before"]
    recovery = (result["accuracy_after"] - result["accuracy_before"]) / lost if lost > 0 else math.nan
    memory_mb = max(result["peak_traced_mb"], result["rss_growth_mb"])
    epsilon = (
        personalization_epsilon(
            settings.steps, result["dp"]["sample_rate"], settings.noise_multiplier, spec.mechanism_delta
        )
        if result["dp"]
        else None
    )
    checks = {
        "time": (
            result["total_seconds"] <= settings.max_seconds,
            f"{result['total_seconds']:.2f} s (budget {settings.max_seconds:g} s)",
        ),
        "memory": (
            memory_mb <= settings.max_extra_memory_mb,
            f"{memory_mb:.1f} MB extra (budget {settings.max_extra_memory_mb:g} MB)",
        ),
        "recovery": (
            bool(recovery >= settings.min_recovery) if lost > 0 else True,
            f"recovered {recovery:.0%} of the {100 * lost:.1f} points lost to the shift (need "
            f"{settings.min_recovery:.0%})"
            if lost > 0
            else "the shift cost no accuracy: nothing to recover",
        ),
    }
    return TrainabilityRecord(
        measured=True,
        target=target.name,
        trainable=all(ok for ok, _ in checks.values()),
        checks={k: FineTuneCheck(passed=ok, detail=text) for k, (ok, text) in checks.items()},
        shift=settings.local_shift.model_dump(),
        accuracy_unshifted=unshifted["accuracy_before"],
        accuracy_shifted_before=result["accuracy_before"],
        accuracy_shifted_after=result["accuracy_after"],
        recovery=recovery,
        step_latency_ms=StepLatency(**result["step_latency_ms"]),
        total_seconds=result["total_seconds"],
        extra_memory_mb=memory_mb,
        energy=result["energy"],
        device_epsilon=epsilon,
        steps=settings.steps,
        local_rows=result["local_rows"],
    )
