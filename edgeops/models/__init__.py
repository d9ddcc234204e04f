"""Model families, DP-compatible by construction, and their files (safetensors and ONNX, never pickles).

Every name is importable from here (``from edgeops.models import build_model``); each part lives in its own module:

- ``families``: the families (`cnn`, `mlp`, `mobilenet`), build_model, describe_architecture and its inverse
  build_from_architecture, assert_dp_compatible
- ``weights``: save_weights and load_weights (safetensors), weights_sha256
- ``onnx_export``: export_onnx and strip_for_device

A package, not one module, so that ``ledger.code_version("models")`` still covers every file of it. The private
helpers are re-exported too (``name as name``), so whatever reached into the former edgeops/models.py still works.
"""

from __future__ import annotations

from edgeops.models.families import (
    ACTIVATIONS,
    MLP,
    MOBILENET_LAST,
    MOBILENET_STAGES,
    MOBILENET_STEM,
    MOBILENET_STRIDE,
    Architecture,
    ArchitectureSpec,
    BoundsScaler,
    DepthwiseConv2d,
    InvertedResidual,
    MobileNet,
    SmallCNN,
    assert_dp_compatible,
    build_from_architecture,
    build_model,
    describe_architecture,
    make_divisible,
    mobilenet_channels,
    multiply_accumulates,
)
from edgeops.models.families import _bias as _bias
from edgeops.models.families import _conv as _conv
from edgeops.models.families import _mobilenet_norm as _mobilenet_norm
from edgeops.models.families import _norm as _norm
from edgeops.models.families import _norm_1d as _norm_1d
from edgeops.models.onnx_export import _DEFAULT_ATTRIBUTES as _DEFAULT_ATTRIBUTES
from edgeops.models.onnx_export import _ELEMENTWISE as _ELEMENTWISE
from edgeops.models.onnx_export import _is_default as _is_default
from edgeops.models.onnx_export import _known_shapes as _known_shapes
from edgeops.models.onnx_export import _scalar_is_equivalent as _scalar_is_equivalent
from edgeops.models.onnx_export import export_onnx, strip_for_device
from edgeops.models.weights import load_weights, save_weights, weights_sha256

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "MOBILENET_LAST",
    "MOBILENET_STAGES",
    "MOBILENET_STEM",
    "MOBILENET_STRIDE",
    "Architecture",
    "ArchitectureSpec",
    "BoundsScaler",
    "DepthwiseConv2d",
    "InvertedResidual",
    "MobileNet",
    "SmallCNN",
    "assert_dp_compatible",
    "build_from_architecture",
    "build_model",
    "describe_architecture",
    "export_onnx",
    "load_weights",
    "make_divisible",
    "mobilenet_channels",
    "multiply_accumulates",
    "save_weights",
    "strip_for_device",
    "weights_sha256",
]
