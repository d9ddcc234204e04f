"""What a recipe carries from step to step (`WorkingModel`), what every step sees (`CompressionContext`), and the
registry of step handlers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np

from edgeops.spec import Declaration, TargetSpec

if TYPE_CHECKING:
    import torch

    from edgeops.ledger import PrivacyLedger


@dataclass
class WorkingModel:
    """What the recipe carries from step to step."""

    torch_model: torch.nn.Module
    onnx_path: Path | None = None
    half: bool = False  # the torch runtime's fp16: weights stored and computed in half precision
    int8_calibration: np.ndarray | None = (
        None  # ExecuTorch/LiteRT int8: the runtime's own quantizer calibrates on these at export
    )
    notes: list[dict[str, Any]] = field(
        default_factory=list
    )  # one per step: what it did, what data it read, privacy cost


StepHandler = Callable[[object, WorkingModel, "CompressionContext"], WorkingModel]
STEP_HANDLERS: dict[type, StepHandler] = {}
_Handler = TypeVar("_Handler", bound=Callable[..., WorkingModel])


def step_handler(step_type: type) -> Callable[[_Handler], _Handler]:
    def register(function: _Handler) -> _Handler:
        STEP_HANDLERS[step_type] = function
        return function

    return register


@dataclass
class CompressionContext:
    declaration: Declaration
    target: TargetSpec
    workdir: Path
    n_features: int
    feature_low: np.ndarray
    feature_high: np.ndarray
    seed: int
    ledger: object = None  # PrivacyLedger, for steps that read private data
    training_data: object = None  # TrainingData, only for DP fine-tuning and distillation
    run_id: str = ""
    teacher_sha256: str = ""  # weights hash of the DP model (keys a distillation charge)
    feature_statistics: dict[str, Any] | None = (
        None  # the dataset's DP statistics (centre, spread), when its bounds came from them
    )


def dp_outputs(ctx: CompressionContext) -> Path:
    """Where DP-SGD compression steps keep their outputs by charge key (outside the per-attempt staging folder), so
    an unchanged step is reused, charged once, and never redrawn with fresh noise under an old charge."""
    return Path(cast("PrivacyLedger", ctx.ledger).path).parent / "dp_steps"


def ensure_onnx(model: WorkingModel, ctx: CompressionContext) -> Path:
    from edgeops.models import export_onnx

    if model.onnx_path is None:
        model.onnx_path = ctx.workdir / "float.onnx"
        export_onnx(model.torch_model, ctx.n_features, model.onnx_path)
    return model.onnx_path
