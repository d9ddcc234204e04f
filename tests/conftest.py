"""Shared fixtures: an isolated project (its own state folder, pipelines and cards) and small declarations."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"  # the suite shows nothing pickled is ever loaded


def matmul_onnx(size: int) -> bytes:
    """A one-MatMul ONNX model with the harness's input and output names: as slow as its size makes it."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((size, size)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["features", "w"], ["logits"])], "mm",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", size])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def stop_process_group(process, first_signal: int, timeout: float = 20) -> None:
    """Ask a server's whole process group to stop, then kill what is left (servers leave workers behind otherwise)."""
    import signal

    os.killpg(process.pid, first_signal)
    try:
        process.wait(timeout=timeout)
    except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: still running
        os.killpg(process.pid, signal.SIGKILL)


def needs_runtime(name: str) -> None:
    """ExecuTorch / LiteRT tests need `make runtimes`: they skip with that reason, except under CI, where they must run."""
    from edgeops import runtimes

    ready, why = runtimes.available(name)
    if not ready and os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the {name} tests: {why}")
    if not ready:
        pytest.skip(why)


def digits_declaration() -> dict:
    return yaml.safe_load((REPO / "pipelines" / "digits.yaml").read_text())


def tiny_digits(name: str = "digits") -> dict:
    """The default declaration on a tiny profile: few epochs, every stage still runs."""
    spec = digits_declaration()
    spec["name"] = name
    spec["training"].update(epochs=4, min_accuracy=0.3)
    spec["training"]["pretrain"].update(samples=2000, epochs=1)
    spec["model"]["channels"] = [16, 32]  # a quarter of the default's parameters: every stage runs, in half the time
    spec["targets"] = [t for t in spec["targets"] if t["name"] != "gpu_fp16"] + [
        {"name": "gpu_fp16", "runtime": "torch", "device": "cuda_gpu", "recipe": [{"step": "fp16"}]}]
    for target in spec["targets"]:
        for step in target.get("recipe", []):
            if step["step"] == "prune" and "finetune" in step:
                step["finetune"]["epochs"] = 1
        target.pop("budgets", None)
    spec["validation"]["expectations"] = f"expectations/{name}.json" if name != "digits" else "expectations/digits.json"
    return spec


def table_frame(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    """A small, separable table: 4 features within [0, 10], 3 classes."""
    rng = np.random.default_rng(seed)
    labels = np.arange(rows) % 3
    centres = np.array([[2, 2, 8, 5], [8, 2, 2, 5], [5, 8, 5, 2]], dtype=float)
    features = np.clip(centres[labels] + rng.normal(0, 0.8, (rows, 4)), 0, 10).round(3)
    frame = pd.DataFrame(features, columns=["f0", "f1", "f2", "f3"])
    frame["label"] = labels
    return frame


def table_declaration(name: str = "tabular", source: str = "csv:data/table.csv") -> dict:
    return {
        "name": name, "description": "A CSV-backed pipeline declared for the tests.", "owners": ["team:tests"],
        "dataset": {"source": source, "kind": "table", "label": "label", "n_features": 4, "feature_bounds": [0, 10],
                    "classes": [0, 1, 2], "min_rows": 30, "split": {"train": 0.6, "validation": 0.2, "test": 0.2, "seed": 1}},
        "validation": {"expectations": f"expectations/{name}.json", "poisoning": {"neighbours": 5, "disagreement": 0.8, "max_suspect_fraction": 0.05}},
        "privacy": {"epsilon": 20, "delta": 1e-4, "training_epsilon": 4, "baseline_epsilon": 1},
        "model": {"family": "mlp", "hidden": [16], "activation": "tanh", "norm": "none"},
        "training": {"epochs": 4, "batch_size": 32, "learning_rate": 1.0, "min_accuracy": 0.3},
        "targets": [{"name": "cpu_float", "device": "cpu"},
                    {"name": "cpu_int8", "device": "cpu", "recipe": [{"step": "int8"}]}],
        "devices": [{"name": "cpu", "kind": "local"}],
    }


class Project:
    """A throwaway project root: pipelines/, expectations/, model_cards/ (catalogue, rules, schemas), state folder."""

    def __init__(self, root: Path, monkeypatch):
        self.root = root
        (root / "pipelines").mkdir(parents=True)
        (root / "data").mkdir()
        shutil.copytree(REPO / "expectations", root / "expectations")
        (root / "model_cards").mkdir()
        for path in (REPO / "model_cards").iterdir():
            if path.is_file():
                shutil.copy(path, root / "model_cards" / path.name)
        (root / "workspace.yaml").write_text((REPO / "workspace.yaml").read_text())
        monkeypatch.setenv("EDGEOPS_ROOT", str(root))
        monkeypatch.setenv("EDGEOPS_HOME", str(root / ".edgeops"))
        monkeypatch.setenv("DAGSTER_HOME", str(root / ".edgeops" / "dagster"))
        for variable in ("EDGEOPS_MLFLOW_TRACKING_URI", "EDGEOPS_MLFLOW_ARTIFACT_ROOT", "EDGEOPS_PIPELINES_DIR", "EDGEOPS_SIGNING_KEY"):
            monkeypatch.delenv(variable, raising=False)

    def declare(self, spec: dict, suite_from_declaration: bool = True) -> Path:
        path = self.root / "pipelines" / f"{spec['name']}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        suite = self.root / spec["validation"]["expectations"]
        if suite_from_declaration and not suite.exists():
            from edgeops.data import load_source
            from edgeops.spec import Declaration, parse_spec, spec_sha256
            from edgeops.validation import generate_suite

            model = parse_spec(path.read_bytes(), str(path))
            declaration = Declaration(model, path, self.root, spec_sha256(model))
            import json

            suite.write_text(json.dumps(generate_suite(model, model.dataset.features or load_source(declaration).features)))
        return path

    def write_csv(self, frame: pd.DataFrame, name: str = "table.csv") -> Path:
        path = self.root / "data" / name
        frame.to_csv(path, index=False)
        return path

    def settings(self):
        from edgeops.settings import Settings

        return Settings.resolve()


@pytest.fixture
def project(tmp_path, monkeypatch) -> Project:
    return Project(tmp_path / "project", monkeypatch)


@pytest.fixture
def deep_copy():
    return copy.deepcopy
