"""DP-SGD with Opacus: the plan (noise multiplier derived before any private row is read) and the loop, whose
Poisson sampling and Gaussian noise come from a secret edgeops.noise source; resumable from its checkpoints."""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from edgeops.errors import PrivacyBudgetError, TrainingError
from edgeops.ledger import DP_SGD_LIBRARIES, DP_SGD_MODULES, NOT_IN_COMPUTATION, Computation, code_version
from edgeops.models import assert_dp_compatible
from edgeops.noise import NoiseSource, NoiseStream
from edgeops.progress import advance
from edgeops.scaling import feature_bounds
from edgeops.spec import PipelineSpec
from edgeops.training.data import Progress, TrainingData, new_model
from edgeops.training.evaluation import evaluate_logits, predict_logits
from edgeops.training.grad_samplers import register_grad_samplers

if TYPE_CHECKING:
    from opacus.optimizers.optimizer import DPOptimizer

    from edgeops.spec import TrainingSpec


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
    training: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(
        default_factory=dict
    )  # resolved inputs: feature bounds, classes, the weights it starts from
    noise_identity: str = ""  # edgeops.noise identity of the secret (a hash; the secret itself is never recorded)

    def computation(self, kind: str = "dpsgd") -> Computation:
        """What determines this run's output, for the ledger's charge key: the data digest, the resolved inputs, every
        hyperparameter (thresholds such as training.min_accuracy are not in `training`: see plan_dp_training), and the
        code that runs it."""
        hyperparameters = {
            k: v for k, v in self.__dict__.items() if k not in ("dataset_digest", "inputs", "noise_identity")
        }
        return Computation(
            kind=kind,
            dataset_digest=self.dataset_digest,
            inputs=self.inputs,
            hyperparameters=hyperparameters,
            code=code_version(*DP_SGD_MODULES, libraries=DP_SGD_LIBRARIES),
            noise_secret_identity=self.noise_identity or None,
        )

    def charge_key(self, kind: str = "dpsgd") -> str:
        return self.computation(kind).key()

    def computation_key(self, kind: str = "dpsgd") -> str:
        """What is computed, without the noise secret's identity: names the secret file a resume looks for."""
        return replace(self, noise_identity="").charge_key(kind)

    def ledger_parameters(self) -> dict[str, Any]:
        return {
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "delta": self.delta,
            "epsilon": self.target_epsilon,
            "accountant": self.accountant,
            "max_grad_norm": self.max_grad_norm,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "dataset_digest": self.dataset_digest,
            "seed": self.seed,
            "learning_rate": self.training.get("learning_rate"),
            "noise_identity": self.noise_identity,
        }


def plan_dp_training(
    spec: PipelineSpec,
    data: TrainingData,
    epsilon: float | None = None,
    epochs: int | None = None,
    purpose: str = "training",
    learning_rate: float | None = None,
) -> DpPlan:
    """Check the request and derive the noise multiplier before any private data is touched."""
    from opacus.accountants.utils import get_noise_multiplier

    privacy = spec.privacy
    update = {k: v for k, v in (("epochs", epochs), ("learning_rate", learning_rate)) if v}
    training = spec.training.model_copy(update=update) if update else spec.training
    target_epsilon = privacy.training_epsilon if epsilon is None else epsilon
    delta = spec.mechanism_delta
    n = len(data.y_train)
    if target_epsilon <= 0:
        raise PrivacyBudgetError("privacy.training_epsilon must be > 0")
    if privacy.delta >= 1 / n:  # the total over every run (each run's delta is below it)
        raise PrivacyBudgetError(
            f"privacy.delta = {privacy.delta:g} is not below 1/n = {1 / n:.3g} for {n} training rows; "
            "a delta that large allows releasing individual rows"
        )
    if training.batch_size > n:
        raise TrainingError(f"training.batch_size = {training.batch_size} is larger than the training split ({n} rows)")
    # Opacus's Poisson loader samples each row with q = 1 / len(loader) = 1 / ceil(n / batch_size), not batch_size / n:
    # record (and calibrate the noise for) the rate that really runs, or the re-derivation disagrees with the claim.
    batches_per_epoch = math.ceil(n / training.batch_size)
    sample_rate = 1.0 / batches_per_epoch
    steps = int(training.epochs * batches_per_epoch)
    noise = get_noise_multiplier(
        target_epsilon=target_epsilon,
        target_delta=delta,
        sample_rate=sample_rate,
        steps=steps,
        accountant=training.accountant,
        epsilon_tolerance=0.005,
    )
    low, high = feature_bounds(spec, data.features)
    return DpPlan(
        data.digest,
        n,
        training.epochs,
        training.batch_size,
        sample_rate,
        steps,
        float(noise),
        training.max_grad_norm,
        target_epsilon,
        delta,
        training.accountant,
        training.seed,
        {**training.model_dump(mode="json", exclude=set(NOT_IN_COMPUTATION)), "purpose": purpose},
        spec.model.model_dump(mode="json"),
        {"feature_bounds": [low.tolist(), high.tolist()], "classes": list(data.classes)}
        | ({"scaling": spec.dataset.scaling} if spec.dataset.scaling != "bounds" else {}),
    )


def _lr_at(training: TrainingSpec, step: int, total: int, base: float) -> float:
    if training.lr_schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))
    return base


class SecretPoissonSampler(torch.utils.data.Sampler[list[int]]):
    """Opacus's UniformWithReplacementSampler (each row enters each batch independently with probability q), drawing
    its Bernoulli masks from the secret stream instead of a torch.Generator."""

    def __init__(self, num_samples: int, sample_rate: float, steps: int, stream: NoiseStream) -> None:
        self.num_samples, self.sample_rate, self.steps, self.stream = num_samples, sample_rate, steps, stream

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            yield self.stream.poisson_rows(self.num_samples, self.sample_rate).tolist()


def secret_poisson_loader(
    dataset: torch.utils.data.TensorDataset, sample_rate: float, steps_per_epoch: int, stream: NoiseStream
) -> torch.utils.data.DataLoader[Any]:
    """A DataLoader like Opacus's DPDataLoader (Poisson batches, empty batches allowed) on the secret sampler."""
    from opacus.data_loader import dtype_safe, shape_safe, wrap_collate_with_empty
    from torch.utils.data.dataloader import default_collate

    first = dataset[0]
    collate = wrap_collate_with_empty(
        collate_fn=default_collate,
        sample_empty_shapes=[(0, *shape_safe(x)) for x in first],
        dtypes=[dtype_safe(x) for x in first],
    )
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=SecretPoissonSampler(len(dataset), sample_rate, steps_per_epoch, stream),
        collate_fn=collate,
    )


def use_secret_noise(
    optimizer: DPOptimizer, stream: NoiseStream, before_noise: Callable[[DPOptimizer], None] | None = None
) -> None:
    """Replace the DPOptimizer's noise (torch.normal on a generator) with the secret stream's hardened Gaussian:
    the same std (noise_multiplier x max_grad_norm) added to the same summed clipped gradients. `before_noise`, if
    given, is called with the optimizer once per step after clipping and summing, before the noise: the privacy
    audit's gradient canaries (edgeops.audit) join the sum there, as clipped per-example gradients do."""
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    def add_noise() -> None:
        if before_noise is not None:
            before_noise(optimizer)
        for p in optimizer.params:
            _check_processed_flag(p.summed_grad)
            noise = stream.gaussian_like(p.summed_grad, optimizer.noise_multiplier * optimizer.max_grad_norm)
            p.grad = (p.summed_grad + noise).view_as(p)
            _mark_as_processed(p.summed_grad)

    optimizer.add_noise = add_noise


def train_dp(
    spec: PipelineSpec,
    data: TrainingData,
    plan: DpPlan,
    workdir: Path,
    *,
    progress: Progress = lambda _: None,
    initial_model: nn.Module | None = None,
    learning_rate: float | None = None,
    teacher_logits: np.ndarray | None = None,
    temperature: float = 2.0,
    distill_weight: float = 0.5,
    noise: NoiseSource | None = None,
    before_noise: Callable[[DPOptimizer], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) DP-SGD according to the plan. Returns the trained model and its privacy record.
    `initial_model` fine-tunes an existing model (e.g. after pruning) instead of training a new one. `teacher_logits`
    (one row per training row) adds knowledge distillation: the loss mixes the hard-label cross-entropy with the
    temperature-scaled KL divergence to the teacher (weight `distill_weight`); each row and its teacher output are one
    example to DP-SGD, so the guarantee is per training row as usual. `noise` is the secret (edgeops.noise); None
    draws a fresh one. The noise and the Poisson sampling come only from it; `plan.seed` seeds the initialisation.
    `before_noise`: the privacy audit's hook (see use_secret_noise); never set for a released model."""
    from opacus import PrivacyEngine
    from safetensors.torch import load_file, save_file

    noise = noise if noise is not None else NoiseSource.fresh()
    torch.set_num_threads(
        1
    )  # one thread: reductions in a fixed order (public randomness and test-mode noise reproduce)
    torch.manual_seed(plan.seed)  # public: the initialisation
    model = (initial_model if initial_model is not None else new_model(spec, data)).train()
    assert_dp_compatible(model)
    base_lr = learning_rate or spec.training.learning_rate
    optimizer = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=spec.training.momentum)
    sampling, gaussian = noise.stream("dp-sgd poisson sampling"), noise.stream("dp-sgd gaussian noise")
    tensors_in = [torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)]
    if teacher_logits is not None:
        tensors_in.append(torch.from_numpy(np.asarray(teacher_logits, dtype=np.float32)))
    loader = secret_poisson_loader(
        torch.utils.data.TensorDataset(*tensors_in), plan.sample_rate, round(1 / plan.sample_rate), sampling
    )
    with warnings.catch_warnings():  # "Secure RNG turned off": Opacus's own RNG is not used; edgeops.noise replaces it
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant=plan.accountant)
    register_grad_samplers()  # edgeops's own exact rules (depthwise convolutions), used by grad_sample_mode hooks
    # poisson_sampling=False: the loader above already samples (secretly); Opacus takes q = 1 / len(loader) from it
    model, optimizer, loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.max_grad_norm,
        poisson_sampling=False,
        grad_sample_mode=spec.training.grad_sample_mode,
    )
    use_secret_noise(optimizer, gaussian, before_noise)
    hard_loss = nn.CrossEntropyLoss()

    def criterion(logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None = None) -> torch.Tensor:
        if teacher is None:
            return cast(torch.Tensor, hard_loss(logits, labels))
        soft = (
            nn.functional.kl_div(
                nn.functional.log_softmax(logits / temperature, dim=1),
                nn.functional.softmax(teacher / temperature, dim=1),
                reduction="batchmean",
            )
            * temperature**2
        )
        return cast(torch.Tensor, (1 - distill_weight) * hard_loss(logits, labels) + distill_weight * soft)

    checkpoint = workdir / "checkpoint.safetensors"
    state_file = workdir / "checkpoint.json"
    curves: dict[str, list[float]]
    start_epoch, step, curves = 0, 0, {"train_loss": [], "val_accuracy": [], "epsilon": []}
    if state_file.exists():
        state = json.loads(state_file.read_text())
        tensors = load_file(str(checkpoint))
        model._module.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
        for group_index, group in enumerate(optimizer.original_optimizer.param_groups):
            for param_index, param in enumerate(group["params"]):
                buffer = tensors.get(f"momentum.{group_index}.{param_index}")
                if buffer is not None:
                    optimizer.original_optimizer.state[param]["momentum_buffer"] = buffer.clone()
        if state.get("noise_identity") != noise.identity:
            raise TrainingError(
                f"{state_file}: the checkpoint was made with another noise secret; it cannot be resumed with this one"
            )
        sampling.draws, gaussian.draws = int(state["noise_draws"]["sampling"]), int(state["noise_draws"]["gaussian"])
        engine.accountant.history = [tuple(h) for h in state["accountant_history"]]
        start_epoch, step, curves = state["epoch"], state["step"], state["curves"]
        progress(f"resumed DP-SGD from epoch {start_epoch} (step {step}, accountant history restored)")
    ema = None
    if spec.training.ema_decay > 0:
        # Averaging the noisy iterates is post-processing of DP outputs: it costs no privacy and smooths the noise.
        ema = torch.optim.swa_utils.AveragedModel(
            model._module,
            multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(  # type: ignore[no-untyped-call]  # torch: unannotated
                spec.training.ema_decay
            ),
        )
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
                    raise TrainingError(
                        f"loss became {loss.item()} at epoch {epoch + 1}, step {step}: lower training.learning_rate "
                        f"(now {spec.training.learning_rate:g}); nothing was released"
                    )
                loss.backward()  # type: ignore[no-untyped-call]  # torch: Tensor.backward is unannotated
                losses.append(loss.item())
            else:
                # An empty Poisson batch is still a step (noise only, as the accountant counts it). Opacus reads the
                # per-example gradients, which no backward pass made here: give it none (it raised before).
                for param in optimizer.params:
                    param.grad_sample = torch.zeros((0, *param.shape), dtype=param.dtype)
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model._module)
            step += 1
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise TrainingError(
                f"parameters became non-finite at epoch {epoch + 1}: lower training.learning_rate "
                f"(now {base_lr:g}); nothing was released"
            )
        val = evaluate_logits(
            predict_logits(ema.module if ema is not None else model._module, data.x_val), data.y_val, len(data.classes)
        )["accuracy"]
        curves["train_loss"].append(float(np.mean(losses)) if losses else float("nan"))
        curves["val_accuracy"].append(val)
        curves["epsilon"].append(float(engine.get_epsilon(plan.delta)))
        progress(
            f"epoch {epoch + 1}/{plan.epochs} val_acc {val:.3f} eps {curves['epsilon'][-1]:.2f}"
        )  # no un-noised loss in logs
        advance(
            f"DP-SGD {plan.training.get('purpose', 'training')}",
            epoch + 1,
            plan.epochs,
            f"val_acc {val:.3f} eps {curves['epsilon'][-1]:.2f}",
        )
        if (epoch + 1) % spec.training.checkpoint_every == 0 and epoch + 1 < plan.epochs:
            tensors = {f"model.{k}": v.detach().clone().contiguous() for k, v in model._module.state_dict().items()}
            for group_index, group in enumerate(optimizer.original_optimizer.param_groups):
                for param_index, param in enumerate(group["params"]):
                    buffer = optimizer.original_optimizer.state.get(param, {}).get("momentum_buffer")
                    if buffer is not None:
                        tensors[f"momentum.{group_index}.{param_index}"] = buffer.detach().clone().contiguous()
            workdir.mkdir(parents=True, exist_ok=True)
            if ema is not None:
                save_file(
                    {k: v.detach().clone().contiguous() for k, v in ema.module.state_dict().items()},
                    str(workdir / "ema.safetensors"),
                )
            save_file(tensors, str(checkpoint.with_suffix(".tmp")))
            checkpoint.with_suffix(".tmp").replace(checkpoint)
            state_file.with_suffix(".tmp").write_text(
                json.dumps(
                    {
                        "epoch": epoch + 1,
                        "step": step,
                        "curves": curves,
                        "accountant_history": engine.accountant.history,
                        "noise_identity": noise.identity,
                        "noise_draws": {"sampling": sampling.draws, "gaussian": gaussian.draws},
                    }
                )
            )
            state_file.with_suffix(".tmp").replace(state_file)
    if step != plan.steps:
        raise TrainingError(f"ran {step} steps, planned {plan.steps}")
    recorded = {(round(sigma, 9), round(rate, 9)) for sigma, rate, _ in engine.accountant.history}
    if recorded != {(round(plan.noise_multiplier, 9), round(plan.sample_rate, 9))}:
        raise TrainingError(
            f"the accountant recorded (noise, sample rate) {recorded}, the plan says "
            f"({plan.noise_multiplier}, {plan.sample_rate}): the privacy record would be wrong"
        )
    released = ema.module if ema is not None else model._module
    epsilon = float(engine.get_epsilon(plan.delta))
    return {
        "model": released,
        "curves": curves,
        "epsilon": epsilon,
        "steps": step,
        "seconds": time.perf_counter() - started,
        "accountant_history": [list(h) for h in engine.accountant.history],
        "noise": noise.record(),
    }
