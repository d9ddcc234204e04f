"""The declaration: one YAML file per pipeline, parsed once into a frozen pydantic model.

Unknown keys are rejected and every error names the file and the YAML path (``targets.1.budgets.max_size_kb``).
Targets, devices and budgets are data; nothing here runs anything.

Every name is importable from here (``from edgeops.spec import PipelineSpec``); each section lives in its own module:

- ``base``: the frozen, extra="forbid" base model (Frozen), NAME_PATTERN, PositiveFloat and Fraction
- ``data``: the dataset (source, bounds, scaling, split) and validation (expectations, poisoning scan) sections
- ``privacy``: the total (epsilon, delta) budget, its shares, and the canary audit
- ``training``: the model (cnn, mlp, mobilenet) and training (central DP-SGD, federated, public pre-training) sections
- ``targets``: compression targets (runtime, recipe steps, budgets, gated checks) and devices (local, cuda, agents)
- ``lifecycle``: monitoring (drift), release gates, robustness, personalization, delivery (fleet, rollout), card
- ``pipeline``: PipelineSpec, the top level, and the checks that span sections
- ``declaration``: parse_spec (YAML to a PipelineSpec, errors as SpecError), spec_sha256, Declaration, loading
"""

from __future__ import annotations

from edgeops.errors import SpecError
from edgeops.spec.base import NAME_PATTERN, Fraction, Frozen, PositiveFloat
from edgeops.spec.data import DatasetSpec, PoisoningScanSpec, SplitSpec, ValidationSpec
from edgeops.spec.declaration import (
    MAX_SPEC_BYTES,
    Declaration,
    discover_declarations,
    load_declaration,
    parse_spec,
    spec_sha256,
)
from edgeops.spec.lifecycle import (
    CardSpec,
    ColumnDrift,
    DeliverySpec,
    FleetDevice,
    LocalShift,
    MonitoringSpec,
    PersonalizationSpec,
    ReleaseSpec,
    RobustnessSpec,
    RolloutStage,
)
from edgeops.spec.pipeline import PipelineSpec
from edgeops.spec.privacy import AuditSpec, PrivacySpec
from edgeops.spec.targets import (
    GATED_CHECKS,
    AgentEndpoint,
    Budgets,
    CalibrationSpec,
    DeviceSpec,
    DistillStep,
    DpFinetuneSpec,
    Fp16Step,
    Int8Step,
    PowerMeterSpec,
    PruneStep,
    RecipeStep,
    StudentSpec,
    TargetSpec,
    agent_transport_problem,
)
from edgeops.spec.training import MOBILENET_STRIDE, FederatedSpec, ModelSpec, PretrainSpec, TrainingSpec

__all__ = [
    "GATED_CHECKS",
    "MAX_SPEC_BYTES",
    "MOBILENET_STRIDE",
    "NAME_PATTERN",
    "AgentEndpoint",
    "AuditSpec",
    "Budgets",
    "CalibrationSpec",
    "CardSpec",
    "ColumnDrift",
    "DatasetSpec",
    "Declaration",
    "DeliverySpec",
    "DeviceSpec",
    "DistillStep",
    "DpFinetuneSpec",
    "FederatedSpec",
    "FleetDevice",
    "Fp16Step",
    "Fraction",
    "Frozen",
    "Int8Step",
    "LocalShift",
    "ModelSpec",
    "MonitoringSpec",
    "PersonalizationSpec",
    "PipelineSpec",
    "PoisoningScanSpec",
    "PositiveFloat",
    "PowerMeterSpec",
    "PretrainSpec",
    "PrivacySpec",
    "PruneStep",
    "RecipeStep",
    "ReleaseSpec",
    "RobustnessSpec",
    "RolloutStage",
    "SpecError",
    "SplitSpec",
    "StudentSpec",
    "TargetSpec",
    "TrainingSpec",
    "ValidationSpec",
    "agent_transport_problem",
    "discover_declarations",
    "load_declaration",
    "parse_spec",
    "spec_sha256",
]
