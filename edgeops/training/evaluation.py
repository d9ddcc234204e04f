"""Evaluation of a model's logits: accuracy, per-class accuracy and calibration."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from torch import nn


def evaluate_logits(logits: np.ndarray, labels: np.ndarray, n_classes: int, bins: int = 15) -> dict[str, Any]:
    """Accuracy, per-class accuracy and expected calibration error (equal-width confidence bins)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    predicted = probs.argmax(axis=1)
    correct = predicted == labels
    confidence = probs.max(axis=1)
    ece = 0.0
    for low in np.linspace(0, 1, bins, endpoint=False):
        in_bin = (confidence > low) & (confidence <= low + 1 / bins)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    per_class = {
        str(c): (float(correct[labels == c].mean()) if (labels == c).any() else None) for c in range(n_classes)
    }
    return {"accuracy": float(correct.mean()), "per_class_accuracy": per_class, "ece": float(ece), "n": len(labels)}


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    return cast(np.ndarray, model(torch.from_numpy(x)).numpy())
