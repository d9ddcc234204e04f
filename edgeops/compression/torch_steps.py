"""The torch steps, which change the float model before it is exported: structured pruning (with optional DP-SGD
fine-tuning) and knowledge distillation into a smaller student (DP-SGD). Each DP-SGD step is charged to the ledger
before it reads a private row."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from edgeops.compression.recipe import CompressionContext, WorkingModel, dp_outputs, step_handler
from edgeops.errors import CompressionError
from edgeops.spec import DistillStep, DpFinetuneSpec, PruneStep

if TYPE_CHECKING:
    import torch

    from edgeops.ledger import LedgerEntry, PrivacyLedger
    from edgeops.training.charged import SecretDpRun
    from edgeops.training.data import TrainingData


def _torch_model(model: WorkingModel, ctx: CompressionContext, step: str) -> torch.nn.Module:
    import torch

    if not isinstance(model.torch_model, torch.nn.Module):
        raise CompressionError(
            f"target {ctx.target.name!r}: {step} needs a torch model, got {type(model.torch_model).__name__}"
        )
    return model.torch_model


def _private_inputs(ctx: CompressionContext, step: str) -> tuple[PrivacyLedger, TrainingData]:
    """The ledger and the private training split: a step that reads private rows cannot run without its charge."""
    from edgeops.ledger import PrivacyLedger
    from edgeops.training.data import TrainingData

    if not isinstance(ctx.ledger, PrivacyLedger):
        raise CompressionError(f"target {ctx.target.name!r}: {step} reads private data and needs the privacy ledger")
    if not isinstance(ctx.training_data, TrainingData):
        raise CompressionError(f"target {ctx.target.name!r}: {step} needs the private training split")
    return ctx.ledger, ctx.training_data


@step_handler(PruneStep)
def _prune(step: PruneStep, model: WorkingModel, ctx: CompressionContext) -> WorkingModel:
    """Structured pruning with torch-pruning: channels are removed (parameters and MACs fall), not masked.
    L1-magnitude importance on the DP weights only: post-processing, no data, no privacy cost."""
    import torch
    import torch_pruning as tp

    if model.onnx_path is not None:
        raise CompressionError(f"target {ctx.target.name!r}: prune must come before ONNX steps")
    net = _torch_model(model, ctx, "prune")
    example = torch.zeros(1, ctx.n_features)
    classifier = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1:]
    before = sum(p.numel() for p in net.parameters())
    pruner = tp.pruner.MetaPruner(
        net,
        example,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=step.ratio,
        ignored_layers=classifier,
        round_to=None,
    )
    pruner.step()
    after = sum(p.numel() for p in net.parameters())
    note = {
        "step": "prune",
        "ratio": step.ratio,
        "parameters_before": before,
        "parameters_after": after,
        "data": "none (L1 magnitude of the DP weights)",
        "privacy": "post-processing, no cost",
    }
    if step.finetune is not None:
        note.update(_dp_finetune(step, step.finetune, net, ctx))
    model.notes.append(note)
    return model


def _dp_finetune(
    step: PruneStep, finetune: DpFinetuneSpec, net: torch.nn.Module, ctx: CompressionContext
) -> dict[str, Any]:
    """DP-SGD fine-tuning of the pruned model on the private training split, charged to the ledger first."""
    ledger, data = _private_inputs(ctx, "DP fine-tuning after pruning")
    outcome = _charged_step_training(
        ctx,
        ledger,
        data,
        finetune,
        net,
        purpose=f"fine-tuning after pruning ({ctx.target.name}, ratio {step.ratio})",
        plan_model={"pruned_from": ctx.declaration.spec.model.model_dump(mode="json"), "ratio": step.ratio},
        plan_inputs={"starts_from_weights_sha256": ctx.teacher_sha256},
        mechanism=f"dp-sgd fine-tuning after pruning (target {ctx.target.name})",
        kind="dpsgd-finetune",
    )
    net.load_state_dict(outcome.model.state_dict())
    return {"data": "private training split (DP-SGD fine-tuning)", **_charge_note(outcome, "finetune")}


def _charged_step_training(
    ctx: CompressionContext,
    ledger: PrivacyLedger,
    data: TrainingData,
    settings: DpFinetuneSpec | DistillStep,
    skeleton: torch.nn.Module,
    *,
    purpose: str,
    plan_model: dict[str, Any],
    plan_inputs: dict[str, Any],
    mechanism: str,
    kind: str,
    **train_options: Any,
) -> SecretDpRun:
    """A torch step's DP-SGD run on the private training split with the step's epsilon, epochs and learning rate,
    starting from `skeleton`: planned (`plan_model` and `plan_inputs`, what it starts from, join the plan's charge key)
    and charged to the ledger before it reads a private row (edgeops.training.charged)."""
    from edgeops.training.charged import charged_dp_sgd
    from edgeops.training.dpsgd import plan_dp_training

    spec = ctx.declaration.spec
    plan = plan_dp_training(
        spec,
        data,
        epsilon=settings.epsilon,
        epochs=settings.epochs,
        purpose=purpose,
        learning_rate=settings.learning_rate,
    )
    plan.model = plan_model
    plan.inputs = {**plan.inputs, **plan_inputs}
    return charged_dp_sgd(
        spec,
        data,
        plan,
        ledger,
        dp_outputs(ctx),
        skeleton=skeleton,
        mechanism=mechanism,
        note="compression step on private data",
        run_id=ctx.run_id,
        kind=kind,
        learning_rate=settings.learning_rate,
        **train_options,
    )


def _charge_note(outcome: SecretDpRun, parameters_key: str) -> dict[str, Any]:
    """What a step's note says of its charged DP-SGD run: the charge, the run's ledger parameters under
    `parameters_key`, and where its noise came from."""
    from edgeops.training.charged import noise_statement

    result, plan, entry = outcome.record, outcome.plan, cast("LedgerEntry", outcome.entry)
    return {
        "privacy": f"charged epsilon {result['epsilon']:.3f}, delta {plan.delta:g} (ledger entry {entry.id})",
        parameters_key: {**plan.ledger_parameters(), "epsilon": result["epsilon"], "ledger_entry": entry.id},
        "noise": noise_statement(result.get("noise")),
    }


@step_handler(DistillStep)
def _distill(step: DistillStep, model: WorkingModel, ctx: CompressionContext) -> WorkingModel:
    """Knowledge distillation: a smaller student trained with DP-SGD on the private training split to match the DP
    model's temperature-softened outputs and the labels. The teacher's outputs on training rows depend on those rows,
    so they are part of each DP-SGD example; the run is charged to the ledger before any training row is read (the
    teacher's outputs included)."""
    import torch

    from edgeops.models import build_model
    from edgeops.training.evaluation import predict_logits

    if model.onnx_path is not None:
        raise CompressionError(f"target {ctx.target.name!r}: distill must come before ONNX steps")
    spec = ctx.declaration.spec
    ledger, data = _private_inputs(ctx, "distill")
    teacher = _torch_model(model, ctx, "distill")
    teacher_parameters = sum(p.numel() for p in teacher.parameters())
    student_spec = spec.model.model_copy(update=step.student.model_dump())
    torch.manual_seed(ctx.seed)
    from edgeops.scaling import model_input_bounds

    student = build_model(
        student_spec,
        ctx.n_features,
        len(data.classes),
        spec.dataset.image_shape,
        *model_input_bounds(spec, data.features),
    )
    student_parameters = sum(p.numel() for p in student.parameters())
    outcome = _charged_step_training(
        ctx,
        ledger,
        data,
        step,
        student,
        purpose=f"distillation ({ctx.target.name})",
        plan_model={
            "student": step.student.model_dump(mode="json"),
            "teacher_weights": ctx.teacher_sha256,
            "temperature": step.temperature,
            "weight": step.weight,
        },
        plan_inputs={"teacher_weights_sha256": ctx.teacher_sha256, "student_init_seed": ctx.seed},
        mechanism=f"dp-sgd distillation into a student (target {ctx.target.name})",
        kind="dpsgd-distill",
        # the teacher's logits read the training rows: computed only after the charge
        late_options=lambda: {"teacher_logits": predict_logits(teacher, data.x_train)},
        temperature=step.temperature,
        distill_weight=step.weight,
    )
    model.torch_model = outcome.model.eval()
    model.notes.append(
        {
            "step": "distill",
            "student": step.student.model_dump(mode="json"),
            "parameters_teacher": teacher_parameters,
            "parameters_student": student_parameters,
            "temperature": step.temperature,
            "weight": step.weight,
            "data": "private training split (DP-SGD distillation)",
            **_charge_note(outcome, "distill"),
        }
    )
    return model
