"""Training: DP-SGD with Opacus (the released model), and a non-private reference (for comparison only).

Reproducible: seeded generators for Poisson sampling and for the noise, one thread, so the same declaration and
data give the same weights hash on one machine. Resumable: a checkpoint every few epochs holds the weights, the
optimizer state, both generators' states and the accountant's history, and the ledger charge is keyed so that a
resumed run is never charged twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from edgeops.errors import PrivacyBudgetError, TrainingError
from edgeops.ledger import PrivacyLedger
from edgeops.models import assert_dp_compatible, build_model, export_onnx, load_weights, save_weights, weights_sha256
from edgeops.progress import advance
from edgeops.spec import PipelineSpec
from edgeops.validation import feature_bounds

Progress = Callable[[str], None]


@dataclass
class TrainingData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[int]
    digest: str
    features: list[str]

    @classmethod
    def from_ref(cls, ref: dict, spec: PipelineSpec) -> "TrainingData":
        from edgeops.data import read_split, to_arrays

        arrays = [to_arrays(read_split(ref, name), ref) for name in ("train", "validation", "test")]
        classes = list(spec.dataset.classes)
        index = {c: i for i, c in enumerate(classes)}
        encode = lambda y: np.array([index[int(v)] for v in y], dtype=np.int64)  # noqa: E731
        (xt, yt), (xv, yv), (xs, ys) = arrays
        return cls(xt, encode(yt), xv, encode(yv), xs, encode(ys), classes, ref["digest"], ref["features"])


def new_model(spec: PipelineSpec, data: TrainingData) -> nn.Module:
    low, high = feature_bounds(spec, data.features)
    return build_model(spec.model, len(data.features), len(data.classes), spec.dataset.image_shape, low, high)


def public_synthetic_digits(spec: PipelineSpec, features: list[str], classes: list[int], samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """edgeops.synthetic's digits on the declared feature scale (they are drawn in 0..16, the UCI scan levels)."""
    from edgeops.synthetic import LEVELS, synthetic_digits

    low, high = feature_bounds(spec, features)
    x, y = synthetic_digits(samples, seed, classes)
    return (low + x / LEVELS * (high - low)).astype(np.float32), y


def pretrain_on_public(spec: PipelineSpec, data: TrainingData, progress: Progress = lambda _: None) -> tuple[nn.Module, dict]:
    """Non-private pre-training on public synthetic digits (no private row is read, so no privacy is spent). DP-SGD
    then starts from these weights and only pays for adapting them to the private handwriting."""
    pretrain = spec.training.pretrain
    started = time.perf_counter()
    torch.set_num_threads(1)
    torch.manual_seed(pretrain.seed)
    x, y = public_synthetic_digits(spec, data.features, data.classes, pretrain.samples, pretrain.seed)
    model = new_model(spec, data)
    optimizer = torch.optim.Adam(model.parameters(), lr=pretrain.learning_rate)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=pretrain.batch_size,
                                         shuffle=True, generator=torch.Generator().manual_seed(pretrain.seed))
    for epoch in range(pretrain.epochs):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
        advance("public pre-training", epoch + 1, pretrain.epochs)
    progress(f"pre-trained on {pretrain.samples} public synthetic digits for {pretrain.epochs} epochs (no privacy cost)")
    record = {**pretrain.model_dump(mode="json"), "seconds": time.perf_counter() - started, "weights_sha256": weights_sha256(model),
              "privacy": "public synthetic data (edgeops.synthetic, drawn from templates in code): no private row read, no privacy cost"}
    record = with_test_accuracy(model, record, data)
    return model.train(), record


def with_test_accuracy(model: nn.Module, record: dict, data: TrainingData) -> dict:
    """The pre-trained model's accuracy on this dataset's test split (the weights do not depend on the data; this does)."""
    accuracy = evaluate_logits(predict_logits(model, data.x_test), data.y_test, len(data.classes))["accuracy"]
    return {**record, "test_accuracy_before_dp": accuracy}


def cached_pretraining(spec: PipelineSpec, data: TrainingData, cache: Path, progress: Progress = lambda _: None) -> tuple[nn.Module, dict]:
    """pretrain_on_public, kept by what determines it (pre-training config, model, bounds, classes): a retraining
    after drift starts from the same public weights without drawing and fitting them again."""
    low, high = feature_bounds(spec, data.features)
    key = hashlib.sha256(json.dumps([spec.training.pretrain.model_dump(mode="json"), spec.model.model_dump(mode="json"), low.tolist(),
                                     high.tolist(), data.classes], sort_keys=True).encode()).hexdigest()[:16]
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


# ---------------------------------------------------------------- evaluation
def evaluate_logits(logits: np.ndarray, labels: np.ndarray, n_classes: int, bins: int = 15) -> dict:
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
    per_class = {str(c): (float(correct[labels == c].mean()) if (labels == c).any() else None) for c in range(n_classes)}
    return {"accuracy": float(correct.mean()), "per_class_accuracy": per_class, "ece": float(ece), "n": int(len(labels))}


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    return model(torch.from_numpy(x)).numpy()


# ---------------------------------------------------------------- DP-SGD
@dataclass
class DpPlan:
    """Everything that determines one DP-SGD run; its hash is the ledger's charge key."""

    dataset_digest: str
    n_train: int
    epochs: int
    batch_size: int
    sample_rate: float
    steps: int
    noise_multiplier: float
    max_grad_norm: float
    target_epsilon: float
    delta: float
    accountant: str
    seed: int
    training: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)

    def charge_key(self) -> str:
        payload = json.dumps(self.__dict__, sort_keys=True, default=str)
        return "dpsgd:" + hashlib.sha256(payload.encode()).hexdigest()

    def ledger_parameters(self) -> dict:
        return {"noise_multiplier": self.noise_multiplier, "sample_rate": self.sample_rate, "steps": self.steps,
                "delta": self.delta, "epsilon": self.target_epsilon, "accountant": self.accountant,
                "max_grad_norm": self.max_grad_norm, "epochs": self.epochs, "batch_size": self.batch_size,
                "dataset_digest": self.dataset_digest, "seed": self.seed}


def plan_dp_training(spec: PipelineSpec, data: TrainingData, epsilon: float | None = None, epochs: int | None = None,
                     purpose: str = "training") -> DpPlan:
    """Check the request and derive the noise multiplier before any private data is touched."""
    from opacus.accountants.utils import get_noise_multiplier

    privacy = spec.privacy
    training = spec.training.model_copy(update={"epochs": epochs}) if epochs else spec.training
    target_epsilon = privacy.training_epsilon if epsilon is None else epsilon
    n = len(data.y_train)
    if target_epsilon <= 0:
        raise PrivacyBudgetError("privacy.training_epsilon must be > 0")
    if privacy.delta >= 1 / n:
        raise PrivacyBudgetError(f"privacy.delta = {privacy.delta:g} is not below 1/n = {1 / n:.3g} for {n} training rows; "
                                 "a delta that large allows releasing individual rows")
    if training.batch_size > n:
        raise TrainingError(f"training.batch_size = {training.batch_size} is larger than the training split ({n} rows)")
    # Opacus's Poisson loader samples each row with q = 1 / len(loader) = 1 / ceil(n / batch_size), not batch_size / n:
    # record (and calibrate the noise for) the rate that really runs, or the re-derivation disagrees with the claim.
    batches_per_epoch = math.ceil(n / training.batch_size)
    sample_rate = 1.0 / batches_per_epoch
    steps = int(training.epochs * batches_per_epoch)
    noise = get_noise_multiplier(target_epsilon=target_epsilon, target_delta=privacy.delta, sample_rate=sample_rate,
                                 steps=steps, accountant=training.accountant, epsilon_tolerance=0.005)
    return DpPlan(data.digest, n, training.epochs, training.batch_size, sample_rate, steps, float(noise), training.max_grad_norm,
                  target_epsilon, privacy.delta, training.accountant, training.seed,
                  {**training.model_dump(mode="json"), "purpose": purpose}, spec.model.model_dump(mode="json"))


def _lr_at(training, step: int, total: int, base: float) -> float:
    if training.lr_schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))
    return base


def train_dp(spec: PipelineSpec, data: TrainingData, plan: DpPlan, workdir: Path, progress: Progress = lambda _: None,
             initial_model: nn.Module | None = None, learning_rate: float | None = None, teacher_logits: np.ndarray | None = None,
             temperature: float = 2.0, distill_weight: float = 0.5) -> dict:
    """Run (or resume) DP-SGD according to the plan. Returns the trained model and its privacy record.
    `initial_model` fine-tunes an existing model (e.g. after pruning) instead of training a new one. `teacher_logits`
    (one row per training row) adds knowledge distillation: the loss mixes the hard-label cross-entropy with the
    temperature-scaled KL divergence to the teacher (weight `distill_weight`); each row and its teacher output are one
    example to DP-SGD, so the guarantee is per training row as usual."""
    from opacus import PrivacyEngine
    from safetensors.torch import load_file, save_file

    torch.set_num_threads(1)  # one thread: reductions in a fixed order, so the weights hash is reproducible
    torch.manual_seed(plan.seed)
    model = (initial_model if initial_model is not None else new_model(spec, data)).train()
    assert_dp_compatible(model)
    base_lr = learning_rate or spec.training.learning_rate
    optimizer = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=spec.training.momentum)
    sampling = torch.Generator().manual_seed(plan.seed)
    noise = torch.Generator().manual_seed(plan.seed + 1)
    tensors_in = [torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)]
    if teacher_logits is not None:
        tensors_in.append(torch.from_numpy(np.asarray(teacher_logits, dtype=np.float32)))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*tensors_in), batch_size=plan.batch_size, generator=sampling)
    engine = PrivacyEngine(accountant=plan.accountant)
    model, optimizer, loader = engine.make_private(module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=plan.noise_multiplier,
                                                   max_grad_norm=plan.max_grad_norm, poisson_sampling=True, noise_generator=noise,
                                                   grad_sample_mode=spec.training.grad_sample_mode)
    hard_loss = nn.CrossEntropyLoss()

    def criterion(logits, labels, teacher=None):
        if teacher is None:
            return hard_loss(logits, labels)
        soft = nn.functional.kl_div(nn.functional.log_softmax(logits / temperature, dim=1), nn.functional.softmax(teacher / temperature, dim=1),
                                    reduction="batchmean") * temperature ** 2
        return (1 - distill_weight) * hard_loss(logits, labels) + distill_weight * soft
    checkpoint = workdir / "checkpoint.safetensors"
    state_file = workdir / "checkpoint.json"
    start_epoch, step, curves = 0, 0, {"train_loss": [], "val_accuracy": [], "epsilon": []}
    if state_file.exists():
        state = json.loads(state_file.read_text())
        tensors = load_file(str(checkpoint))
        model._module.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        for group_index, group in enumerate(optimizer.original_optimizer.param_groups):
            for param_index, param in enumerate(group["params"]):
                buffer = tensors.get(f"momentum.{group_index}.{param_index}")
                if buffer is not None:
                    optimizer.original_optimizer.state[param]["momentum_buffer"] = buffer.clone()
        sampling.set_state(tensors["rng.sampling"])
        noise.set_state(tensors["rng.noise"])
        engine.accountant.history = [tuple(h) for h in state["accountant_history"]]
        start_epoch, step, curves = state["epoch"], state["step"], state["curves"]
        progress(f"resumed DP-SGD from epoch {start_epoch} (step {step}, accountant history restored)")
    ema = None
    if spec.training.ema_decay > 0:
        # Averaging the noisy iterates is post-processing of DP outputs: it costs no privacy and smooths the noise.
        ema = torch.optim.swa_utils.AveragedModel(model._module, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(spec.training.ema_decay))
        if state_file.exists() and (workdir / "ema.safetensors").exists():
            ema.module.load_state_dict(load_file(str(workdir / "ema.safetensors")))
            ema.n_averaged.fill_(max(step, 1))
    started = time.perf_counter()
    for epoch in range(start_epoch, plan.epochs):
        model.train()
        losses = []
        for x, y, *teacher in loader:
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(spec.training, step, plan.steps, base_lr)
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(x), y, teacher[0] if teacher else None) if len(y) else None
            if loss is not None:
                if not torch.isfinite(loss):
                    raise TrainingError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step}: lower training.learning_rate "
                                        f"(now {spec.training.learning_rate:g}); nothing was released")
                loss.backward()
                losses.append(loss.item())
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model._module)
            step += 1
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise TrainingError(f"parameters became non-finite at epoch {epoch + 1}: lower training.learning_rate "
                                f"(now {base_lr:g}); nothing was released")
        val = evaluate_logits(predict_logits(ema.module if ema is not None else model._module, data.x_val), data.y_val, len(data.classes))["accuracy"]
        curves["train_loss"].append(float(np.mean(losses)) if losses else float("nan"))
        curves["val_accuracy"].append(val)
        curves["epsilon"].append(float(engine.get_epsilon(plan.delta)))
        progress(f"epoch {epoch + 1}/{plan.epochs} loss {curves['train_loss'][-1]:.3f} val_acc {val:.3f} eps {curves['epsilon'][-1]:.2f}")
        advance(f"DP-SGD {plan.training.get('purpose', 'training')}", epoch + 1, plan.epochs, f"val_acc {val:.3f} eps {curves['epsilon'][-1]:.2f}")
        if (epoch + 1) % spec.training.checkpoint_every == 0 and epoch + 1 < plan.epochs:
            tensors = {f"model.{k}": v.detach().clone().contiguous() for k, v in model._module.state_dict().items()}
            for group_index, group in enumerate(optimizer.original_optimizer.param_groups):
                for param_index, param in enumerate(group["params"]):
                    buffer = optimizer.original_optimizer.state.get(param, {}).get("momentum_buffer")
                    if buffer is not None:
                        tensors[f"momentum.{group_index}.{param_index}"] = buffer.detach().clone().contiguous()
            tensors["rng.sampling"] = sampling.get_state()
            tensors["rng.noise"] = noise.get_state()
            workdir.mkdir(parents=True, exist_ok=True)
            if ema is not None:
                save_file({k: v.detach().clone().contiguous() for k, v in ema.module.state_dict().items()}, str(workdir / "ema.safetensors"))
            save_file(tensors, str(checkpoint.with_suffix(".tmp")))
            checkpoint.with_suffix(".tmp").replace(checkpoint)
            state_file.with_suffix(".tmp").write_text(json.dumps({"epoch": epoch + 1, "step": step, "curves": curves,
                                                                  "accountant_history": engine.accountant.history}))
            state_file.with_suffix(".tmp").replace(state_file)
    if step != plan.steps:
        raise TrainingError(f"ran {step} steps, planned {plan.steps}")
    recorded = {(round(sigma, 9), round(rate, 9)) for sigma, rate, _ in engine.accountant.history}
    if recorded != {(round(plan.noise_multiplier, 9), round(plan.sample_rate, 9))}:
        raise TrainingError(f"the accountant recorded (noise, sample rate) {recorded}, the plan says "
                            f"({plan.noise_multiplier}, {plan.sample_rate}): the privacy record would be wrong")
    released = ema.module if ema is not None else model._module
    epsilon = float(engine.get_epsilon(plan.delta))
    return {"model": released, "curves": curves, "epsilon": epsilon, "steps": step, "seconds": time.perf_counter() - started,
            "accountant_history": [list(h) for h in engine.accountant.history]}


def train_nonprivate(spec: PipelineSpec, data: TrainingData, epochs: int | None = None, progress: Progress = lambda _: None) -> nn.Module:
    """The same model trained without DP, for comparison only: never exported, registered or released."""
    torch.set_num_threads(1)
    torch.manual_seed(spec.training.seed)
    model = new_model(spec, data)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)),
                                         batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(spec.training.seed))
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


# ---------------------------------------------------------------- the stage
def run_dp_training(spec: PipelineSpec, ref: dict, ledger: PrivacyLedger, out_root: Path, run, dagster_run_id: str = "",
                    progress: Progress = lambda _: None) -> dict:
    """Stage: plan, charge the ledger (refusing overspend), train or resume, save safetensors + ONNX, log to MLflow."""
    from edgeops.validation import with_dp_bounds

    spec = with_dp_bounds(spec, ref)
    data = TrainingData.from_ref(ref, spec)
    plan = plan_dp_training(spec, data)
    key = plan.charge_key()
    workdir = out_root / key.split(":")[1][:16]
    final = workdir / "model.safetensors"
    entry, charged_now = ledger.charge(key, "dp-sgd (opacus)", plan.target_epsilon, plan.delta, plan.ledger_parameters(),
                                       run_id=dagster_run_id, note="DP-SGD training of the released model")
    if not charged_now:
        progress(f"ledger: this exact run (same data, configuration and seed) was charged before as entry {entry.id}; not charged again")
    if final.exists() and entry.status == "completed":
        model = load_weights(new_model(spec, data), final)
        record = json.loads((workdir / "training.json").read_text())
        progress("identical seeded run already completed: reusing its model (no new data access, no new charge)")
    else:
        initial, pretrain = cached_pretraining(spec, data, out_root / "pretrained", progress) if spec.training.pretrain else (None, None)
        try:
            result = train_dp(spec, data, plan, workdir, progress, initial_model=initial)
        except Exception as err:
            ledger.update(entry.id, "failed", {"error": str(err)[:500]})
            raise
        model = result["model"]
        record = {"epsilon": result["epsilon"], "steps": result["steps"], "seconds": result["seconds"], "curves": result["curves"],
                  "accountant_history": result["accountant_history"], "pretrain": pretrain}
        save_weights(model, final, {"pipeline": spec.name, "charge_key": key})
        (workdir / "training.json").write_text(json.dumps(record))
        ledger.update(entry.id, "completed", {"epsilon_accountant": record["epsilon"]}, epsilon=record["epsilon"])
        run.log_metric_series({f"train/{k}": v for k, v in record["curves"].items()})
    onnx_path = workdir / "model.onnx"
    if not onnx_path.exists():
        export_onnx(model, len(data.features), onnx_path)
    metrics = {split: evaluate_logits(predict_logits(model, x), y, len(data.classes))
               for split, x, y in (("validation", data.x_val, data.y_val), ("test", data.x_test, data.y_test))}
    privacy = {**plan.ledger_parameters(), "epsilon": record["epsilon"], "claimed_epsilon": record["epsilon"],
               "target_epsilon": plan.target_epsilon, "ledger_entry": entry.id, "unit": "sample (one row of the training split)",
               "sampling": "Poisson", "clipping": "flat per-sample"}
    run.log_params({f"dp.{k}": v for k, v in privacy.items()} | {"model.family": spec.model.family,
                                                                 "parameters": sum(p.numel() for p in model.parameters())})
    run.log_metrics({"test_accuracy": metrics["test"]["accuracy"], "test_ece": metrics["test"]["ece"],
                     "validation_accuracy": metrics["validation"]["accuracy"], "epsilon": record["epsilon"]})
    weights_sha = run.log_artifact(final, "model")
    onnx_sha = run.log_artifact(onnx_path, "model")
    run.set_tags({"weights_sha256": weights_sha256(model)})
    return {"weights_path": str(final), "onnx_path": str(onnx_path), "weights_file_sha256": weights_sha, "onnx_sha256": onnx_sha,
            "weights_sha256": weights_sha256(model), "dataset_digest": ref["digest"], "metrics": metrics, "privacy": privacy,
            "training_seconds": record["seconds"], "mlflow_run_id": run.run_id, "parameters": sum(p.numel() for p in model.parameters()),
            "features": data.features, "classes": data.classes, "ref": ref, "pretrain": record.get("pretrain")}
