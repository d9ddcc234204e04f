"""The top-level declaration, PipelineSpec: every section, and the checks that span sections (names unique,
targets on declared devices, recipes each runtime can build, the delta of one run, the fleet)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from edgeops.spec.base import NAME_PATTERN, Frozen
from edgeops.spec.data import DatasetSpec, ValidationSpec
from edgeops.spec.lifecycle import (
    CardSpec,
    DeliverySpec,
    MonitoringSpec,
    PersonalizationSpec,
    ReleaseSpec,
    RobustnessSpec,
)
from edgeops.spec.privacy import PrivacySpec
from edgeops.spec.targets import DeviceSpec, DistillStep, Fp16Step, Int8Step, PruneStep, TargetSpec
from edgeops.spec.training import MOBILENET_STRIDE, ModelSpec, TrainingSpec


class PipelineSpec(Frozen):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    owners: list[str] = []
    dataset: DatasetSpec
    validation: ValidationSpec
    privacy: PrivacySpec
    model: ModelSpec
    training: TrainingSpec = TrainingSpec()
    targets: list[TargetSpec] = Field(min_length=1)
    devices: list[DeviceSpec] = Field(min_length=1)
    card: CardSpec = CardSpec()
    release: ReleaseSpec = ReleaseSpec()
    monitoring: MonitoringSpec = MonitoringSpec()
    delivery: DeliverySpec = DeliverySpec()
    personalization: PersonalizationSpec = PersonalizationSpec()
    robustness: RobustnessSpec = RobustnessSpec()

    @field_validator("owners")
    @classmethod
    def _owner_form(cls, owners: list[str]) -> list[str]:
        for owner in owners:
            if not (owner.startswith("team:") or re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", owner)):
                raise ValueError(f"owner {owner!r} must be an email address or team:<name>")
        return owners

    @model_validator(mode="after")
    def _cross_references(self) -> PipelineSpec:
        devices = {d.name: d for d in self.devices}
        if len(devices) != len(self.devices):
            raise ValueError("device names must be unique")
        if len({t.name for t in self.targets}) != len(self.targets):
            raise ValueError("target names must be unique")
        if self.dataset.needs_dp_statistics and self.privacy.statistics_epsilon <= 0:
            raise ValueError(
                "privacy.statistics_epsilon: dataset.feature_bounds is not declared, so per-feature bounds are "
                "estimated "
                "with DP statistics; give them a share of the budget (e.g. 0.5)"
            )
        one_run_delta = self.mechanism_delta * len(self.delta_mechanisms)
        if one_run_delta > self.privacy.delta * (1 + 1e-9):
            raise ValueError(
                f"privacy.mechanism_delta: one run spends delta {one_run_delta:g} ({len(self.delta_mechanisms)} "
                "(epsilon, delta) "
                f"mechanisms x {self.mechanism_delta:g}: {', '.join(self.delta_mechanisms)}), more than privacy.delta "
                f"{self.privacy.delta:g} (deltas add up like epsilons)"
            )
        if self.model.norm == "batch":
            raise ValueError(
                "model.norm: batch is not compatible with DP-SGD (per-sample gradients); use group or none"
            )
        if self.model.family in ("cnn", "mobilenet") and self.dataset.kind != "image":
            raise ValueError(f"model.family: {self.model.family} needs dataset.kind: image")
        if (
            self.model.family == "mobilenet"
            and self.model.resolution is None
            and self.dataset.image_shape
            and (
                self.dataset.image_shape[1] != self.dataset.image_shape[2]
                or self.dataset.image_shape[1] % MOBILENET_STRIDE
                or self.dataset.image_shape[1] < 16
            )
        ):
            raise ValueError(
                f"model.resolution: the images are {self.dataset.image_shape[1]}x{self.dataset.image_shape[2]}, which "
                "family "
                f"mobilenet cannot take as they are (square, a multiple of {MOBILENET_STRIDE}, at least 16); declare a "
                "resolution to resize them to in the graph"
            )
        digits_shaped = tuple(self.dataset.image_shape or ()) == (1, 8, 8) and set(self.dataset.classes or []) <= set(
            range(10)
        )
        if self.training.pretrain is not None and self.training.mode != "central":
            raise ValueError(
                "training.pretrain: public pre-training starts central DP-SGD only; training.mode is "
                f"{self.training.mode!r} "
                "(federated rounds start from random weights)"
            )
        if self.training.pretrain is not None and not digits_shaped:
            raise ValueError(
                f"training.pretrain.source: {self.training.pretrain.source} draws 8x8 digits 0-9; this dataset has "
                f"image_shape {self.dataset.image_shape} and classes {self.dataset.classes}"
            )
        for index, target in enumerate(self.targets):
            if not digits_shaped and any(
                isinstance(s, Int8Step) and s.calibration.source == "synthetic_digits" for s in target.recipe
            ):
                raise ValueError(
                    f"targets.{index}.recipe: calibration source synthetic_digits draws 8x8 digits 0-9; this dataset "
                    "has "
                    f"image_shape {self.dataset.image_shape} and classes {self.dataset.classes}"
                )
            device = devices.get(target.device)
            if device is None:
                raise ValueError(
                    f"targets.{index}.device: unknown device {target.device!r} (declared: {sorted(devices)})"
                )
            kinds = [type(step) for step in target.recipe]
            # int8 is each runtime's own quantizer: ONNX Runtime's QDQ graph, ExecuTorch's and LiteRT's PT2E quantizers
            # (XNNPACK);
            # fp16 is an ONNX graph rewrite, or the torch runtime's own half precision
            if target.runtime == "torch" and Int8Step in kinds:
                raise ValueError(
                    f"targets.{index}.recipe: int8 needs runtime onnxruntime, executorch or litert (each quantizes in "
                    "its "
                    "own way); a torch target takes prune, distill and fp16 steps"
                )
            if target.runtime in ("executorch", "litert") and any(
                isinstance(s, Int8Step) and not s.per_channel for s in target.recipe
            ):
                raise ValueError(
                    f"targets.{index}.recipe: int8 on a {target.runtime} target is per-channel (its quantizer's "
                    "recommended configuration); per_channel: false is an ONNX Runtime option"
                )
            if target.runtime in ("executorch", "litert") and Fp16Step in kinds:
                raise ValueError(
                    f"targets.{index}.recipe: fp16 rewrites the ONNX graph, so it needs runtime onnxruntime (or "
                    "torch); "
                    f"a {target.runtime} target takes prune, distill and int8 steps"
                )
            if target.runtime not in ("onnxruntime", "torch") and device.kind == "cuda":
                raise ValueError(
                    f"targets.{index}.runtime: {target.runtime} runs on CPUs here; device {target.device!r} is a cuda "
                    "device "
                    "(use runtime torch or onnxruntime)"
                )
            if Fp16Step in kinds and device.kind != "cuda":
                raise ValueError(
                    f"targets.{index}.recipe: fp16 needs a cuda device; {target.device!r} is {device.kind} "
                    "(ONNX Runtime's CPU provider has no fast fp16 kernels)"
                )
            if Fp16Step in kinds and Int8Step in kinds:
                raise ValueError(f"targets.{index}.recipe: fp16 and int8 cannot be combined")
            if len(kinds) != len(set(kinds)):
                raise ValueError(f"targets.{index}.recipe: a step appears twice")
            if PruneStep in kinds and kinds.index(PruneStep) != 0:
                raise ValueError(f"targets.{index}.recipe: prune must come first (it works on float weights)")
            if DistillStep in kinds and kinds.index(DistillStep) != 0:
                raise ValueError(f"targets.{index}.recipe: distill must come first (it replaces the float model)")
            if DistillStep in kinds and PruneStep in kinds:
                raise ValueError(
                    f"targets.{index}.recipe: distill and prune cannot be combined (each replaces the float model)"
                )
            student = next((s.student for s in target.recipe if isinstance(s, DistillStep)), None)
            if student is not None and student.family == "cnn" and self.dataset.kind != "image":
                raise ValueError(f"targets.{index}.recipe: a cnn student needs dataset.kind: image")
        targets = {t.name for t in self.targets}
        fleet = {d.name for d in self.delivery.fleet}
        if len(fleet) != len(self.delivery.fleet):
            raise ValueError("delivery.fleet: device names must be unique")
        for index, member in enumerate(self.delivery.fleet):
            if member.target not in targets:
                raise ValueError(
                    f"delivery.fleet.{index}.target: unknown target {member.target!r} (declared: {sorted(targets)})"
                )
        for index, stage in enumerate(self.delivery.stages):
            unknown = sorted(set(stage.devices or []) - fleet)
            if unknown:
                raise ValueError(f"delivery.stages.{index}.devices: not in delivery.fleet: {unknown}")
        return self

    def incoming_folder(self) -> str:
        return self.monitoring.incoming or f"data/incoming/{self.name}"

    # ------------------------------------------------------------ the privacy budget of one run
    @property
    def delta_mechanisms(self) -> list[str]:
        """The (epsilon, delta) mechanisms one full run charges; each is charged privacy delta `mechanism_delta`."""
        names = [
            name
            for name, on in (
                ("dp-sgd", self.training.mode in ("central", "both")),
                ("dp-fedavg", self.training.mode in ("federated", "both")),
            )
            if on
        ]
        for target in self.targets:
            for step in target.recipe:
                if isinstance(step, PruneStep) and step.finetune is not None:
                    names.append(f"{target.name}:finetune")
                elif isinstance(step, DistillStep):
                    names.append(f"{target.name}:distill")
        return names

    def nominal_run_epsilon(self) -> float:
        """Epsilon of one full run as declared (DP-FedAvg counted at training_epsilon; its real figure comes from its
        noise)."""
        training = self.privacy.training_epsilon * (2 if self.training.mode == "both" else 1)
        statistics = self.privacy.statistics_epsilon if self.dataset.needs_dp_statistics else 0.0
        steps = 0.0
        for target in self.targets:
            for step in target.recipe:
                if isinstance(step, PruneStep) and step.finetune is not None:
                    steps += step.finetune.epsilon
                elif isinstance(step, DistillStep):
                    steps += step.epsilon
        return training + statistics + self.privacy.baseline_epsilon + steps

    @property
    def mechanism_delta(self) -> float:
        """The delta each (epsilon, delta) mechanism is run at: declared, or the total split evenly (see
        PrivacySpec)."""
        if self.privacy.mechanism_delta is not None:
            return self.privacy.mechanism_delta
        runs = max(1, int(self.privacy.epsilon / self.nominal_run_epsilon() + 1e-9))
        return self.privacy.delta / (runs * max(1, len(self.delta_mechanisms)))

    def target(self, name: str) -> TargetSpec:
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(f"pipeline {self.name!r} has no target {name!r}")

    def device(self, name: str) -> DeviceSpec:
        for device in self.devices:
            if device.name == name:
                return device
        raise KeyError(f"pipeline {self.name!r} has no device {name!r}")
