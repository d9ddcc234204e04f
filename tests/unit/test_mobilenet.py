"""The MobileNet-class family: declared by width multiplier and resolution, DP-compatible, rebuilt from its
architecture in a runtime's tool environment; impossible sizes are SpecErrors naming the field."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yaml
from helpers import REPO

from edgeops.errors import SpecError
from edgeops.spec import load_declaration, parse_spec

EXAMPLE = REPO / "pipelines" / "examples" / "digits32_mobilenet.yaml"


def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def problems_of(spec: dict) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as caught:
        parse_spec(yaml.safe_dump(spec), "pipelines/test.yaml")
    return caught.value.problems


def build(width: float = 0.5, resolution: int = 32, norm: str = "none"):
    from edgeops.models import build_model

    spec = parse_spec(
        yaml.safe_dump(
            {
                **example(),
                "model": {
                    "family": "mobilenet",
                    "width_multiplier": width,
                    "resolution": resolution,
                    "activation": "relu",
                    "norm": norm,
                },
            }
        ),
        "x.yaml",
    )
    torch.manual_seed(0)
    return build_model(spec.model, 64, 10, (1, 8, 8), np.zeros(64), np.full(64, 16.0))


def test_the_example_declaration_loads_from_the_examples_folder():
    declaration = load_declaration(EXAMPLE)
    assert declaration.spec.model.family == "mobilenet" and declaration.spec.model.resolution == 32
    assert declaration.root == REPO  # its expectations path resolves against the project, not pipelines/


@pytest.mark.parametrize(
    "field, value, path",
    [
        ("width_multiplier", 0.1, "model.width_multiplier"),
        ("width_multiplier", 8.0, "model.width_multiplier"),
        ("resolution", 30, "model.resolution"),
        ("resolution", 8, "model.resolution"),
        ("resolution", 512, "model.resolution"),
    ],
)
def test_impossible_sizes_name_the_field(field, value, path):
    spec = example()
    spec["model"][field] = value
    assert any(p == path for p, _ in problems_of(spec)), problems_of(spec)


def test_images_the_network_cannot_take_without_a_resolution_name_model_resolution():
    spec = example()
    del spec["model"]["resolution"]  # 8x8 images: three halvings leave a 1x1 map
    assert any("model.resolution" in message for _, message in problems_of(spec))


def test_mobilenet_fields_on_another_family_and_tanh_are_refused():
    spec = example()
    spec["model"] = {"family": "cnn", "channels": [16], "resolution": 32}
    assert any(p == "model" and "resolution" in m for p, m in problems_of(spec))
    spec = example()
    spec["model"]["activation"] = "tanh"
    assert any(p == "model" and "relu" in m for p, m in problems_of(spec))


def test_spec_and_models_agree_on_the_network_stride():
    from edgeops import models, spec

    assert models.MOBILENET_STRIDE == spec.MOBILENET_STRIDE
    assert np.prod([s for *_, s in models.MOBILENET_STAGES]) == models.MOBILENET_STRIDE


def test_the_model_is_depthwise_separable_dp_compatible_and_sized_by_the_width_multiplier():
    from edgeops.models import MOBILENET_STAGES, assert_dp_compatible

    small, large = build(0.5), build(1.0)
    assert_dp_compatible(small)
    depthwise = [m for m in small.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels > 1]
    assert len(depthwise) == sum(n for _, _, n, _ in MOBILENET_STAGES)  # one per inverted residual block
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in small.modules())
    assert sum(p.numel() for p in large.parameters()) > 2 * sum(p.numel() for p in small.parameters())
    assert small(torch.zeros(3, 64)).shape == (3, 10)


def test_norm_free_residual_blocks_are_the_identity_at_initialisation():
    from edgeops.models import InvertedResidual

    model = build(0.5)
    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual) and m.residual]
    assert len(blocks) >= 5
    x = torch.randn(2, blocks[0].block[0].in_channels, 8, 8)
    assert torch.equal(blocks[0](x), x)
    grouped = [m for m in build(0.5, norm="group").modules() if isinstance(m, InvertedResidual) and m.residual]
    assert not torch.equal(grouped[0](x), x)  # with GroupNorm the branches keep their random initialisation


def test_the_architecture_round_trips_and_a_pruned_one_is_refused():
    from edgeops.errors import TrainingError
    from edgeops.models import build_from_architecture, describe_architecture

    model = build(0.75, 48)
    architecture = describe_architecture(model)
    assert architecture["width_multiplier"] == 0.75 and architecture["resolution"] == 48
    rebuilt = build_from_architecture(copy.deepcopy(architecture))
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(4, 64) * 16
    assert torch.allclose(rebuilt.eval()(x), model.eval()(x))
    model.features[0] = torch.nn.Conv2d(1, 8, 3, padding=1)
    with pytest.raises(TrainingError, match="pruned MobileNet"):
        describe_architecture(model)


def test_multiply_accumulates_count_every_convolution_depthwise_included():
    """The MACs a target record (and every roofline) uses: each convolution's and linear layer's, counted here from
    the layers' shapes. torch_pruning's counter, used before, keys on the exact layer type and dropped the depthwise
    ones."""
    from edgeops.models import multiply_accumulates

    model = build(width=0.5, resolution=16)
    expected = []

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1]
            expected.append(output.numel() * module.in_channels // module.groups * kernel)
        elif isinstance(module, torch.nn.Linear):
            expected.append(module.in_features * module.out_features)

    layers = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    hooks = [m.register_forward_hook(count) for m in layers]
    with torch.no_grad():
        model(torch.zeros(1, 64))
    for hook in hooks:
        hook.remove()
    assert multiply_accumulates(model, 64) == sum(expected)
