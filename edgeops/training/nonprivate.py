"""Training without DP: public pre-training on synthetic digits (no private row read, no privacy cost) and the
non-private reference (for comparison only, never released)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeops.errors import TrainingError
from edgeops.models import load_weights, save_weights, weights_sha256
from edgeops.progress import advance
from edgeops.scaling import feature_bounds
from edgeops.spec import PipelineSpec, PretrainSpec
from edgeops.training.data import Progress, TrainingData, new_model
from edgeops.training.evaluation import evaluate_logits, predict_logits


def public_synthetic_digits(
    spec: PipelineSpec, features: list[str], classes: list[int], samples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """edgeops.synthetic's digits on the declared feature scale (they are drawn in 0..16, the UCI scan levels)."""
    from edgeops.synthetic import LEVELS, synthetic_digits

    low, high = feature_bounds(spec, features)
    x, y = synthetic_digits(samples, seed, classes)
    return (low + x / LEVELS * (high - low)).astype(np.float32), y


def pretrain_on_public(
    spec: PipelineSpec, data: TrainingData, progress: Progress = lambda _: None
) -> tuple[nn.Module, dict[str, Any]]:
    """Non-private pre-training on public synthetic digits (no private row is read, so no privacy is spent). DP-SGD
    then starts from these weights and only pays for adapting them to the private handwriting."""
    pretrain = _declared_pretraining(spec)
    started = time.perf_counter()
    torch.set_num_threads(1)
    torch.manual_seed(pretrain.seed)
    x, y = public_synthetic_digits(spec, data.features, data.classes, pretrain.samples, pretrain.seed)
    model = new_model(spec, data)
    optimizer = torch.optim.Adam(model.parameters(), lr=pretrain.learning_rate)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
        batch_size=pretrain.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(pretrain.seed),
    )
    for epoch in range(pretrain.epochs):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(xb), yb).backward()  # type: ignore[no-untyped-call]  # torch: unannotated
            optimizer.step()
        advance("public pre-training", epoch + 1, pretrain.epochs)
    progress(
        f"pre-trained on {pretrain.samples} public synthetic digits for {pretrain.epochs} epochs (no privacy cost)"
    )
    record = {
        **pretrain.model_dump(mode="json"),
        "seconds": time.perf_counter() - started,
        "weights_sha256": weights_sha256(model),
        "privacy": "public synthetic data (edgeops.synthetic, drawn from templates in code): no private row read, no "
        "privacy cost",
    }
    record = with_test_accuracy(model, record, data)
    return model.train(), record


def with_test_accuracy(model: nn.Module, record: dict[str, Any], data: TrainingData) -> dict[str, Any]:
    """The pre-trained model's accuracy on this dataset's test split (the weights do not depend on the data; this
    does)."""
    accuracy = evaluate_logits(predict_logits(model, data.x_test), data.y_test, len(data.classes))["accuracy"]
    return {**record, "test_accuracy_before_dp": accuracy}


def _declared_pretraining(spec: PipelineSpec) -> PretrainSpec:
    if spec.training.pretrain is None:
        raise TrainingError(f"pipeline {spec.name!r} declares no public pre-training (training.pretrain)")
    return spec.training.pretrain


def cached_pretraining(
    spec: PipelineSpec, data: TrainingData, cache: Path, progress: Progress = lambda _: None
) -> tuple[nn.Module, dict[str, Any]]:
    """pretrain_on_public, kept by what determines it (pre-training config, model, bounds, classes): a retraining
    after drift starts from the same public weights without drawing and fitting them again."""
    low, high = feature_bounds(spec, data.features)
    key = hashlib.sha256(
        json.dumps(
            [
                _declared_pretraining(spec).model_dump(mode="json"),
                spec.model.model_dump(mode="json"),
                low.tolist(),
                high.tolist(),
                data.classes,
            ]
            + ([spec.dataset.scaling] if spec.dataset.scaling != "bounds" else []),
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    weights, record_file = cache / f"{key}.safetensors", cache / f"{key}.json"
    if weights.exists() and record_file.exists():
        record = json.loads(record_file.read_text())
        model = load_weights(new_model(spec, data), weights)
        if weights_sha256(model) == record["weights_sha256"]:
            progress(f"public pre-training {key} reused (weights hash verified)")
            record = with_test_accuracy(model, record, data)
            return model.train(), record
    model, record = pretrain_on_public(spec, data, progress)
    save_weights(model, weights, {"pretrain": key})
    record_file.write_text(json.dumps(record))
    return model, record


def train_nonprivate(
    spec: PipelineSpec, data: TrainingData, epochs: int | None = None, progress: Progress = lambda _: None
) -> nn.Module:
    """The same model trained without DP, for comparison only: never exported, registered or released."""
    torch.set_num_threads(1)
    torch.manual_seed(spec.training.seed)
    model = new_model(spec, data)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)),
        batch_size=64,
        shuffle=True,
        generator=torch.Generator().manual_seed(spec.training.seed),
    )
    criterion = nn.CrossEntropyLoss()
    for epoch in range(epochs or spec.training.epochs):
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            optimizer.step()
        advance("non-private reference", epoch + 1, epochs or spec.training.epochs)
        if (epoch + 1) % 10 == 0:
            progress(f"reference epoch {epoch + 1}")
    return model.eval()
