"""Adversarial robustness of each target's artifact: FGSM and PGD at declared perturbation budgets.

The attacks are crafted with gradients of the float DP model (white-box for the float artifact) and replayed against
each compressed artifact on its own runtime (a transfer attack: quantized graphs have no useful gradients, and the
compressed models are derived from the same weights, so this is the attacker who knows the released float model).
Budgets are L-infinity, declared as a fraction of each feature's public span; adversarial inputs stay within the
bounds. Only the test split is attacked; nothing is trained or charged.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeops.records import AdversarialBudget, DpModel, RobustnessMeasurement, TargetArtifact

if TYPE_CHECKING:
    from torch import nn

    from edgeops.records import DatasetRef
    from edgeops.spec import PipelineSpec


def craft(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epsilon: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    steps: int,
    seed: int,
) -> np.ndarray:
    """FGSM when steps == 1 (one signed-gradient step of size epsilon), else PGD from a random start in the ball
    (step 2.5 * epsilon / steps, projected back onto the ball and the bounds after every step)."""
    import torch

    torch.manual_seed(seed)
    eps, lo, hi = (torch.as_tensor(a, dtype=torch.float32) for a in (epsilon, low, high))
    original = torch.from_numpy(x.astype(np.float32))
    labels = torch.from_numpy(y.astype(np.int64))
    adversarial = original.clone()
    if steps > 1:
        adversarial = torch.clamp(adversarial + (torch.rand_like(adversarial) * 2 - 1) * eps, lo, hi)
    step = eps if steps == 1 else 2.5 * eps / steps
    model.eval()
    for _ in range(steps):
        adversarial.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(adversarial), labels)
        (gradient,) = torch.autograd.grad(loss, adversarial)
        with torch.no_grad():
            adversarial = adversarial + step * gradient.sign()
            adversarial = torch.max(torch.min(adversarial, original + eps), original - eps)
            adversarial = torch.clamp(adversarial, lo, hi)
    return adversarial.detach().numpy()


def measure_robustness(
    spec: PipelineSpec, dp_model: DpModel, compressed: TargetArtifact, ref: DatasetRef
) -> RobustnessMeasurement:
    """Clean, FGSM and PGD accuracy of one target's artifact at each declared budget, on the artifact's own runtime."""
    from edgeops.compression.measurement import artifact_logits
    from edgeops.models import load_weights
    from edgeops.scaling import feature_bounds
    from edgeops.training.data import TrainingData, new_model

    settings = spec.robustness
    spec = ref.bounded(spec)
    data = TrainingData.from_ref(ref, spec)
    rows = min(settings.samples, len(data.y_test))
    x, y = data.x_test[:rows], data.y_test[:rows]
    low, high = feature_bounds(spec, data.features)
    model = load_weights(new_model(spec, data), Path(dp_model.weights_path)).eval()
    sets = [x]
    for fraction in settings.epsilons:
        epsilon = fraction * (high - low)
        budget = {"epsilon": epsilon, "low": low, "high": high, "seed": spec.training.seed}
        sets += [craft(model, x, y, steps=1, **budget), craft(model, x, y, steps=settings.pgd_steps, **budget)]
    # One call for every set: a runtime in a tool environment costs a process start per call.
    runtime = spec.target(compressed.target).runtime
    logits = artifact_logits(runtime, Path(compressed.artifact_path), np.concatenate(sets).astype(np.float32))
    accuracies = [float(np.mean(np.argmax(part, axis=1) == y)) for part in np.split(logits, len(sets))]
    return RobustnessMeasurement(
        attacks="crafted on the float DP model (white-box), replayed on this artifact (transfer)",
        norm="L-infinity",
        rows=rows,
        pgd_steps=settings.pgd_steps,
        runtime=runtime,
        clean_accuracy=accuracies[0],
        budgets=[
            AdversarialBudget(
                epsilon_fraction_of_span=fraction,
                fgsm_accuracy=accuracies[1 + 2 * index],
                pgd_accuracy=accuracies[2 + 2 * index],
            )
            for index, fraction in enumerate(settings.epsilons)
        ],
    )


CLEAN_ACCURACY = "clean_accuracy"  # the MLflow metric of the unperturbed rows' accuracy


def metric_names(fraction: float) -> tuple[str, str]:
    """The MLflow metrics of the FGSM and PGD accuracy at one budget."""
    tag = f"{fraction:g}".replace(".", "p")
    return f"fgsm_eps{tag}_accuracy", f"pgd_eps{tag}_accuracy"
