"""The declaration parser: every bad input gets a SpecError naming the file and the YAML path."""

from __future__ import annotations

import contextlib
import copy

import pytest
import yaml
from helpers import REPO, digits_declaration
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeops.errors import SpecError
from edgeops.spec import load_declaration, parse_spec


def parse(spec: dict):
    return parse_spec(yaml.safe_dump(spec), "pipelines/test.yaml")


def problems_of(spec: dict) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as caught:
        parse(spec)
    assert "pipelines/test.yaml" in str(caught.value)
    return caught.value.problems


def test_default_declaration_loads():
    declaration = load_declaration(REPO / "pipelines" / "digits.yaml")
    assert declaration.spec.name == "digits"
    assert {t.name for t in declaration.spec.targets} >= {
        "float_baseline",
        "mobile_int8",
        "mcu_pruned_int8",
        "gpu_fp16",
    }
    assert len(declaration.sha256) == 64


def test_unknown_key_is_named():
    spec = digits_declaration()
    spec["training"]["epohcs"] = 3
    assert ("training.epohcs", "Extra inputs are not permitted") in problems_of(spec)


def test_wrong_type_is_named():
    spec = digits_declaration()
    spec["training"]["batch_size"] = "many"
    assert any(path == "training.batch_size" for path, _ in problems_of(spec))


def test_negative_budget_is_named():
    spec = digits_declaration()
    spec["targets"][2]["budgets"]["max_size_kb"] = -32
    assert any(path == "targets.2.budgets.max_size_kb" for path, _ in problems_of(spec))


def test_nonpositive_epsilon():
    spec = digits_declaration()
    spec["privacy"]["training_epsilon"] = 0
    assert any(path == "privacy.training_epsilon" for path, _ in problems_of(spec))


def test_unknown_recipe_step_names_target_field():
    spec = digits_declaration()
    spec["targets"][1]["recipe"] = [{"step": "int4"}]
    assert any(path.startswith("targets.1.recipe.0") for path, _ in problems_of(spec))


def test_prune_ratio_outside_unit_interval():
    spec = digits_declaration()
    spec["targets"][2]["recipe"][0]["ratio"] = 1.5
    assert any(path == "targets.2.recipe.0.ratio" for path, _ in problems_of(spec))


def test_fp16_on_a_cpu_device_is_refused():
    spec = digits_declaration()
    spec["targets"][0]["recipe"] = [{"step": "fp16"}]
    ((_path, message),) = problems_of(spec)
    assert "targets.0.recipe: fp16 needs a cuda device" in message


def test_batchnorm_is_refused():
    spec = digits_declaration()
    spec["model"]["norm"] = "batch"
    assert any("not compatible with DP-SGD" in message for _, message in problems_of(spec))


def test_share_of_budget_larger_than_total():
    spec = digits_declaration()
    spec["privacy"]["training_epsilon"] = 50
    assert any("more than the total budget" in message for _, message in problems_of(spec))


def test_unknown_device_reference():
    spec = digits_declaration()
    spec["targets"][0]["device"] = "pixel9"
    assert any("unknown device 'pixel9'" in message for _, message in problems_of(spec))


def test_missing_files_are_named(project):
    spec = digits_declaration()
    spec["validation"]["expectations"] = "expectations/absent.json"
    spec["targets"][1]["recipe"][0]["calibration"] = {"source": "public", "path": "data/public.csv"}
    path = project.declare(spec, suite_from_declaration=False)
    with pytest.raises(SpecError) as caught:
        load_declaration(path)
    fields = [field for field, _ in caught.value.problems]
    assert "validation.expectations" in fields and "targets.1.recipe.0.calibration.path" in fields


def test_file_name_must_match_pipeline_name(project):
    spec = digits_declaration()
    spec["name"] = "other"
    path = project.root / "pipelines" / "digits.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match="must match the file name"):
        load_declaration(path)


@pytest.mark.parametrize(
    "text", [b"\xff\xfe\x00garbage", b"[1, 2, 3]", b"name: [unclosed", b"a: " + b"[" * 5000, b"", b"~"]
)
def test_malformed_files(text):
    with pytest.raises(SpecError):
        parse_spec(text, "pipelines/bad.yaml")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_fuzz_random_bytes_only_spec_errors(data):
    with contextlib.suppress(SpecError):
        parse_spec(data, "pipelines/fuzz.yaml")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["dataset", "privacy", "training", "targets", "devices", "model", "validation", "name"]),
    json_values,
)
def test_fuzz_mutated_sections_only_spec_errors(section, value):
    spec = copy.deepcopy(digits_declaration())
    spec[section] = value
    try:
        parse(spec)
    except SpecError as err:
        assert err.problems
