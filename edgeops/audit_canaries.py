"""The canaries of the one-run canary audit (edgeops.audit) and one DP-SGD run scored on them: the input canaries and
the public filler they join, the white-box gradient canaries (`GradientCanaries`, train_dp's `before_noise` hook) and
`_train_and_score`, which trains through edgeops.training and scores each canary. edgeops.audit holds the statistics,
the result and the audit run itself; it re-exports `GradientCanaries`.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import torch
    from opacus.optimizers import DPOptimizer
    from torch import nn

    from edgeops.spec import PipelineSpec
    from edgeops.training.dpsgd import DpPlan


def _canaries(
    spec: PipelineSpec, features: list[str], n_classes: int, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Canaries: random binary images within the declared feature bounds (each value at its low or high bound with
    probability 1/2), each with a uniformly random label. Far from the data and nearly orthogonal to each other, so a
    canary's inclusion moves its own loss more than the others do."""
    from edgeops.scaling import feature_bounds

    low, high = feature_bounds(spec, features)
    x = np.where(rng.random((count, len(features))) < 0.5, low, high).astype(np.float32)
    return x, rng.integers(0, n_classes, size=count).astype(np.int64)


def _public_filler(
    spec: PipelineSpec, features: list[str], classes: list[int], count: int, seed: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The rest of the training set: edgeops.synthetic's digits where the declared input is sklearn digits-shaped
    (64 features, classes within 0-9), else uniform random inputs within the bounds with random labels. The guarantee
    under audit does not depend on the data, so neither choice changes what the audit proves; only its power."""
    from edgeops.scaling import feature_bounds
    from edgeops.training.nonprivate import public_synthetic_digits

    if len(features) == 64 and set(classes) <= set(range(10)):
        return public_synthetic_digits(spec, features, classes, count, seed)
    low, high = feature_bounds(spec, features)
    return (low + rng.random((count, len(features))) * (high - low)).astype(np.float32), rng.integers(
        0, len(classes), size=count
    )


def _canary_loss(model: nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from edgeops.privacy.membership import _per_example_loss
    from edgeops.training.evaluation import predict_logits

    return _per_example_loss(predict_logits(model, x), y)


class GradientCanaries:
    """The white-box canaries of one audit run: `coordinates` (flat indices into `parameter`, the tensor the optimizer
    updates), which are `included`, and the public generator that samples the included ones at each step with
    `sample_rate` (Poisson, like the rows). Called by train_dp once per step, after clipping, before the noise."""

    def __init__(
        self,
        parameter: torch.Tensor,
        coordinates: np.ndarray,
        included: np.ndarray,
        sample_rate: float,
        rng: np.random.Generator,
    ) -> None:
        self.parameter, self.coordinates, self.included = parameter, coordinates, included
        self.sample_rate, self.rng = sample_rate, rng

    def __call__(self, optimizer: DPOptimizer) -> None:
        import torch

        if not any(p is self.parameter for p in optimizer.params):  # e.g. a frozen tensor Opacus does not update
            raise ValueError("the canaries' weight tensor is not one the DP optimizer updates")
        sampled = self.included & (self.rng.random(len(self.coordinates)) < self.sample_rate)
        summed: torch.Tensor = self.parameter.summed_grad  # type: ignore[attr-defined]  # set by Opacus's optimizer
        # A clipped per-example gradient of norm exactly C each, on its own coordinate (in place: summed_grad is
        # contiguous, Opacus sums the per-example gradients into a fresh tensor).
        summed.view(-1)[torch.from_numpy(self.coordinates[sampled])] += optimizer.max_grad_norm

    @staticmethod
    def target_parameter(model: nn.Module) -> int:
        """The index of the model's largest weight tensor (a matrix or kernel, not a bias): the most coordinates."""
        parameters = list(model.parameters())
        return max(range(len(parameters)), key=lambda i: parameters[i].numel() if parameters[i].dim() > 1 else -1)


def _train_and_score(
    spec: PipelineSpec,
    features: list[str],
    classes: list[int],
    *,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    x_can: np.ndarray,
    y_can: np.ndarray,
    seed: int,
    pretrained_cache: Path | None,
    workdir: Path | None,
    noise: Literal["declared", "off"],
    gradient_canaries: tuple[int, np.ndarray, int] | None = None,
) -> tuple[np.ndarray, DpPlan]:
    """One DP-SGD run through edgeops.training (plan, optional public pre-training, train_dp) and each canary's score.
    `gradient_canaries`: (count, included, seed) for white-box canaries; None scores the input canaries by loss."""
    import copy

    import torch

    from edgeops.errors import TrainingError
    from edgeops.training.data import TrainingData, new_model
    from edgeops.training.dpsgd import plan_dp_training, train_dp
    from edgeops.training.nonprivate import cached_pretraining

    data = TrainingData(
        x_train, y_train, x_val, y_val, x_val, y_val, list(classes), f"public-synthetic-audit:{seed}", list(features)
    )
    plan = plan_dp_training(spec, data, purpose="privacy audit (public synthetic data)")
    if noise == "off":
        # The accountant is not consulted for training; RDP reports an infinite epsilon for zero noise where PRV cannot.
        plan = replace(plan, noise_multiplier=0.0, accountant="rdp")
    if spec.training.pretrain:
        cache = pretrained_cache or Path(tempfile.mkdtemp(prefix="edgeops-audit-pretrain-"))
        cache.mkdir(parents=True, exist_ok=True)
        initial = cached_pretraining(spec, data, cache)[0]
    else:
        torch.manual_seed(plan.seed)
        initial = new_model(spec, data)
    hook = None
    if gradient_canaries is not None:
        count, included, canary_seed = gradient_canaries
        target = GradientCanaries.target_parameter(initial)
        weights = list(initial.parameters())[target]  # the same tensor the optimizer updates (Opacus wraps, not copies)
        if weights.numel() < count:
            raise TrainingError(
                f"{count} gradient canaries need as many coordinates; the model's largest weight tensor has "
                f"{weights.numel()}: declare fewer privacy.audit.canaries"
            )
        # The same public generator draws the coordinates for the declared run and its noise-off control.
        canary_rng = np.random.default_rng([canary_seed, 7])
        coordinates = canary_rng.choice(weights.numel(), count, replace=False)
        hook = GradientCanaries(weights, coordinates, included, plan.sample_rate, canary_rng)
        before = weights.detach().flatten()[torch.from_numpy(coordinates)].numpy().copy()
    else:
        before = _canary_loss(copy.deepcopy(initial), x_can, y_can)
    with tempfile.TemporaryDirectory(
        prefix="edgeops-audit-", dir=workdir
    ) as folder:  # fresh: train_dp resumes from checkpoints
        model = train_dp(spec, data, plan, Path(folder), initial_model=initial.train(), before_noise=hook)["model"]
    if hook is not None:
        # The returned model's tensor at the same place (the trained module itself, or its EMA copy: same order).
        after = list(model.parameters())[target].detach().flatten()[torch.from_numpy(hook.coordinates)]
        return before - after.numpy(), plan
    return before - _canary_loss(model, x_can, y_can), plan
