"""On-device personalization: fine-tune the last layer of a deployed ONNX artifact on data that stays on the device.

Runs where the agent runs (numpy + onnxruntime; no torch on the device). The artifact's final Gemm is the head:
its weights are read from the graph (dequantized when the artifact is int8 QDQ), its input is exposed as an extra
output so the frozen backbone computes embeddings once, and the head is trained with mini-batch SGD on softmax
cross-entropy. Optional DP: each example's gradient is clipped and Gaussian noise is added to every step's sum over
Poisson-sampled batches (DP-SGD on the head); the sampling and the noise come from a fresh secret of edgeops.noise
(never from `seed`, which only splits the holdout). Its epsilon for the declared noise, sampling rate and steps is
computed
by `personalization_epsilon` (on the host, which prices the job) and reported. The device's data is not the pipeline's,
so it is not charged to the pipeline's ledger: the agent keeps the device's own ledger under its --home
(`device_ledger`), refuses a DP job that names no epsilon, and refuses one that would pass the device's total.

The device keeps its data: the job reports step latency, peak memory of the training, accuracy on a held-out part
of the local data before and after, and returns the weight delta, the metrics only, or nothing, as declared.
"""

from __future__ import annotations

import base64
import io
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:
    import onnx

    from edgeops.ledger import PrivacyLedger


class PersonalizationError(ValueError):
    pass


DEVICE_LEDGER = "privacy/personalization_ledger.sqlite"  # under the agent's --home
DEFAULT_DEVICE_EPSILON = 8.0  # the device's total over every DP personalization job (agent serve --device-epsilon)
DEFAULT_DEVICE_DELTA = 1e-5  # the device's total delta (agent serve --device-delta); each job asks for its own share
DEFAULT_JOB_DELTA = 1e-6


def device_ledger(
    home: Path, epsilon: float = DEFAULT_DEVICE_EPSILON, delta: float = DEFAULT_DEVICE_DELTA
) -> PrivacyLedger:
    """The device's own privacy ledger: every DP personalization job on its local data, summed (basic composition)."""
    from edgeops.ledger import Budget, PrivacyLedger

    return PrivacyLedger(Path(home) / DEVICE_LEDGER, Budget(epsilon, delta))


def personalization_epsilon(steps: int, sample_rate: float, noise_multiplier: float, delta: float) -> float | None:
    """Epsilon of DP fine-tuning of the head (the device user's data; not the pipeline's ledger)."""
    if noise_multiplier <= 0:
        return None
    from edgeops.privacy.accounting import rederive_epsilon

    return rederive_epsilon(noise_multiplier, sample_rate, steps, delta, "rdp")


def job_epsilon(
    rows: int, steps: int, batch_size: int, holdout: float, noise_multiplier: float, delta: float
) -> tuple[float, float]:
    """(epsilon, sample rate) of one DP personalization job on `rows` local rows, priced before it runs (the same split
    and Poisson rate `personalize` uses)."""
    train_rows = int(round(rows * (1 - holdout)))
    if train_rows < 2:
        raise PersonalizationError(f"{rows} local rows are too few to train and hold out")
    rate = min(batch_size, train_rows) / train_rows
    epsilon = personalization_epsilon(steps, rate, noise_multiplier, delta)
    if epsilon is None:
        raise PersonalizationError(
            f"noise_multiplier {noise_multiplier:g}: a job without DP noise has no epsilon to price"
        )
    return float(epsilon), rate


@dataclass(frozen=True)
class Head:
    embedding: str  # tensor name of the head's input
    weight: np.ndarray  # (classes, embedding_dim)
    bias: np.ndarray  # (classes,)


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def find_head(model: onnx.ModelProto) -> Head:
    """The Gemm that produces the graph's first output (possibly through a Cast), with its weights as float arrays."""
    producers = {out: node for node in model.graph.node for out in node.output}
    values = _initializers(model)
    for node in model.graph.node:  # Constant nodes hold weights in some exports
        if node.op_type == "Constant":
            from onnx import numpy_helper

            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    name = model.graph.output[0].name
    node = producers.get(name)
    while (
        node is not None
        and node.op_type in {"Cast", "Identity", "QuantizeLinear", "DequantizeLinear"}
        and node.input[0] in producers
    ):
        node = producers[node.input[0]]
    if node is None or node.op_type != "Gemm":
        raise PersonalizationError(
            f"the artifact's output {name!r} does not come from a Gemm (last layer): "
            f"{node.op_type if node is not None else 'a graph input'}; only a linear head can be personalized"
        )

    def value(tensor: str) -> np.ndarray:
        if tensor in values:
            return values[tensor].astype(np.float32)
        source = producers.get(tensor)
        if source is not None and source.op_type == "DequantizeLinear":
            quantized, scale = values[source.input[0]].astype(np.float32), values[source.input[1]].astype(np.float32)
            zero = values[source.input[2]].astype(np.float32) if len(source.input) > 2 and source.input[2] else 0.0
            axis = next((a.i for a in source.attribute if a.name == "axis"), 1)
            if np.ndim(scale) == 1 and quantized.ndim > 1:
                shape = [1] * quantized.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), np.reshape(zero, shape) if np.ndim(zero) else zero
            return (quantized - zero) * scale
        if source is not None and source.op_type in {"Cast", "Identity"}:
            return value(source.input[0])
        raise PersonalizationError(
            f"head weight {tensor!r} is computed at run time ({source.op_type if source else 'input'}); cannot read it"
        )

    attributes = {a.name: a for a in node.attribute}
    weight = value(node.input[1])
    if attributes.get("transB") is None or attributes["transB"].i == 0:
        weight = weight.T
    bias = value(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(weight.shape[0], np.float32)
    return Head(embedding=node.input[0], weight=weight.astype(np.float32), bias=bias.reshape(-1).astype(np.float32))


def embedder(artifact: bytes, head: Head, threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """An ONNX Runtime session that returns the head's input for a batch."""
    import onnx
    import onnxruntime as ort

    model = onnx.load_from_string(artifact)
    del model.graph.output[:]
    model.graph.output.extend([onnx.helper.make_empty_tensor_value_info(head.embedding)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.astype(np.float32)})[0].reshape(len(x), -1).astype(np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return cast("np.ndarray", e / e.sum(axis=1, keepdims=True))


def _accuracy(embeddings: np.ndarray, labels: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> float:
    return float(np.mean(np.argmax(embeddings @ weight.T + bias, axis=1) == labels)) if len(labels) else float("nan")


def load_local_data(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """x.npy (N, features) float32 and y.npy (N,) int labels, read without pickle."""
    x_path, y_path = folder / "x.npy", folder / "y.npy"
    if not x_path.exists() or not y_path.exists():
        raise PersonalizationError(f"{folder}: needs x.npy and y.npy")
    try:
        x, y = np.load(x_path, allow_pickle=False), np.load(y_path, allow_pickle=False)
    except ValueError as err:
        raise PersonalizationError(f"{folder}: not plain .npy arrays ({err})") from None
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y) or not np.isfinite(x).all():
        raise PersonalizationError(
            f"{folder}: x.npy must be (N, features) finite and y.npy (N,), got {x.shape} and {y.shape}"
        )
    return x.astype(np.float32), y.astype(np.int64)


def personalize(
    artifact: bytes,
    x: np.ndarray,
    y: np.ndarray,
    *,
    steps: int = 100,
    learning_rate: float = 0.1,
    batch_size: int = 32,
    holdout: float = 0.3,
    weight_decay: float = 1e-3,
    clipping_norm: float | None = None,
    noise_multiplier: float = 0.0,
    returns: str = "metrics",
    seed: int = 0,
    threads: int = 1,
) -> dict[str, Any]:
    """Fine-tune the head on (x, y); evaluate on a held-out share of the same local data. See the module docstring."""
    if returns not in {"delta", "metrics", "nothing"}:
        raise PersonalizationError(f"returns must be delta, metrics or nothing, not {returns!r}")
    noise_std = 0.0
    if noise_multiplier > 0:
        if not clipping_norm:
            raise PersonalizationError("noise_multiplier > 0 needs clipping_norm")
        noise_std = noise_multiplier * clipping_norm
    import onnx
    import psutil

    rss_before = psutil.Process().memory_info().rss
    tracemalloc.start()
    started = time.perf_counter()
    head = find_head(onnx.load_from_string(artifact))
    embed = embedder(artifact, head, threads)
    rng = np.random.default_rng(seed)  # public: the holdout split and non-DP batches
    private = None
    if noise_multiplier > 0:  # DP: Poisson sampling and noise only from a fresh secret (edgeops.noise), never the seed
        from edgeops.noise import NoiseSource

        private = NoiseSource.fresh().stream("on-device dp personalization")
    order = rng.permutation(len(x))
    cut = int(round(len(x) * (1 - holdout)))
    train, held = order[:cut], order[cut:]
    classes = head.weight.shape[0]
    if y.min() < 0 or y.max() >= classes:
        raise PersonalizationError(f"local labels must lie in 0..{classes - 1} (the model's classes)")
    if len(train) < 2 or len(held) < 1:
        raise PersonalizationError(f"{len(x)} local rows are too few to train and hold out")
    embeddings = embed(x)
    e_train, y_train, e_held, y_held = embeddings[train], y[train], embeddings[held], y[held]
    weight, bias = head.weight.copy(), head.bias.copy()
    before = _accuracy(e_held, y_held, weight, bias)
    setup_seconds = time.perf_counter() - started
    step_ms = []
    batch = min(batch_size, len(train))
    for _ in range(steps):
        step_started = time.perf_counter()
        if private is not None:  # Poisson sampling (rate batch/n), as the accountant that prices this job assumes
            rows = private.poisson_rows(len(train), batch / len(train))
        else:
            rows = rng.choice(len(train), size=batch, replace=False)
        e, labels = e_train[rows], y_train[rows]
        error = _softmax(e @ weight.T + bias)
        error[np.arange(len(rows)), labels] -= 1.0
        if clipping_norm:
            # Per-example gradients of a linear head are outer products: their norm is |error| * sqrt(|e|^2 + 1).
            norms = np.linalg.norm(error, axis=1) * np.sqrt((e**2).sum(axis=1) + 1.0)
            error = error * np.minimum(1.0, clipping_norm / np.maximum(norms, 1e-12))[:, None]
        grad_w, grad_b = error.T @ e, error.sum(axis=0)
        if private is not None:
            grad_w = grad_w + private.gaussian(noise_std, grad_w.shape, np.float64)
            grad_b = grad_b + private.gaussian(noise_std, grad_b.shape, np.float64)
        weight -= learning_rate * (
            grad_w / batch + weight_decay * weight
        )  # divided by the expected batch, not the drawn one
        bias -= learning_rate * grad_b / batch
        step_ms.append((time.perf_counter() - step_started) * 1000)
    after = _accuracy(e_held, y_held, weight, bias)
    _, peak_traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    report = {
        "layers": "last (Gemm head)",
        "head_shape": list(head.weight.shape),
        "local_rows": len(x),
        "train_rows": len(train),
        "heldout_rows": len(held),
        "steps": steps,
        "batch_size": batch,
        "accuracy_before": before,
        "accuracy_after": after,
        "step_latency_ms": {"p50": float(np.percentile(step_ms, 50)), "p95": float(np.percentile(step_ms, 95))},
        "setup_seconds": setup_seconds,
        "total_seconds": time.perf_counter() - started,
        "peak_traced_mb": peak_traced / 2**20,
        "rss_growth_mb": (psutil.Process().memory_info().rss - rss_before) / 2**20,
        "energy": {"measured": False, "reason": "no energy counter readable by this process on this device"},
        "dp": {"clipping_norm": clipping_norm, "noise_multiplier": noise_multiplier, "sample_rate": batch / len(train)}
        if noise_multiplier
        else None,
        "returns": returns,
    }
    if returns == "nothing":
        return {"returns": "nothing", "completed": True}
    if returns == "delta":
        report["delta"] = {"weight_npy": _npy_b64(weight - head.weight), "bias_npy": _npy_b64(bias - head.bias)}
    return report


def _npy_b64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, array.astype(np.float32), allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode()
