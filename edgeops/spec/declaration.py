"""Parsing and loading: YAML text to a PipelineSpec (every error a SpecError naming the file and YAML path), its
canonical hash, and a Declaration (the spec plus its file and project root, with the files it names checked)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from edgeops.errors import SpecError
from edgeops.spec.pipeline import PipelineSpec
from edgeops.spec.targets import Int8Step

MAX_SPEC_BYTES = 1_000_000


@dataclass(frozen=True)
class Declaration:
    """A validated spec plus where it came from."""

    spec: PipelineSpec
    file: Path
    root: Path  # project root: relative paths in the spec resolve against it
    sha256: str

    def resolve(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else self.root / path


def parse_spec(text: str | bytes, file: str = "<string>") -> PipelineSpec:
    """Parse and validate YAML text. Raises SpecError naming the file and each YAML path."""
    if isinstance(text, bytes):
        if len(text) > MAX_SPEC_BYTES:
            raise SpecError(file, [("", f"file is larger than {MAX_SPEC_BYTES} bytes")])
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise SpecError(file, [("", f"not UTF-8 text (byte {err.start})")]) from None
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(file, [("", f"file is larger than {MAX_SPEC_BYTES} bytes")])
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError(file, [("", f"not valid YAML: {err}".replace("\n", " "))]) from None
    except RecursionError:
        raise SpecError(file, [("", "YAML nested too deeply")]) from None
    if not isinstance(data, dict):
        raise SpecError(file, [("", f"the top level must be a mapping, got {type(data).__name__}")])
    from edgeops.noise import declaration_noise_requests

    if requests := declaration_noise_requests(data):
        raise SpecError(file, requests)
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as err:
        problems = []
        for item in err.errors(include_url=False):
            loc = tuple(
                p
                for p in item["loc"]
                if p not in {"prune", "int8", "fp16", "distill"} and not str(p).startswith(("tuple[", "dict["))
            )
            problems.append((".".join(str(p) for p in loc), item["msg"]))
        raise SpecError(file, problems) from None
    except RecursionError:
        raise SpecError(file, [("", "declaration nested too deeply")]) from None


def spec_sha256(spec: PipelineSpec) -> str:
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def load_declaration(file: str | Path, root: str | Path | None = None) -> Declaration:
    """Read one pipelines/<name>.yaml and check that the files it names exist."""
    path = Path(file)
    if not path.is_file():
        raise SpecError(str(path), [("", "file not found")])
    spec = parse_spec(path.read_bytes(), str(path))
    folder = path.resolve().parent  # pipelines/<name>.yaml, or an example in pipelines/examples/<name>.yaml
    root_dir = Path(root) if root else (folder.parent.parent if folder.parent.name == "pipelines" else folder.parent)
    declaration = Declaration(spec=spec, file=path, root=root_dir, sha256=spec_sha256(spec))
    missing = []
    if spec.dataset.scheme in {"csv", "parquet", "images"} and not declaration.resolve(spec.dataset.location).exists():
        missing.append(("dataset.source", f"{declaration.resolve(spec.dataset.location)} does not exist"))
    if not declaration.resolve(spec.validation.expectations).is_file():
        missing.append(
            ("validation.expectations", f"{declaration.resolve(spec.validation.expectations)} does not exist")
        )
    for index, target in enumerate(spec.targets):
        for step_index, step in enumerate(target.recipe):
            if (
                isinstance(step, Int8Step)
                and step.calibration.path
                and not declaration.resolve(step.calibration.path).is_file()
            ):
                missing.append(
                    (
                        f"targets.{index}.recipe.{step_index}.calibration.path",
                        f"{declaration.resolve(step.calibration.path)} does not exist (target {target.name!r})",
                    )
                )
    if spec.card.attestations and not declaration.resolve(spec.card.attestations).is_file():
        missing.append(("card.attestations", f"{declaration.resolve(spec.card.attestations)} does not exist"))
    if path.stem != spec.name:
        missing.append(("name", f"must match the file name {path.stem!r}"))
    if missing:
        raise SpecError(str(path), missing)
    return declaration


def discover_declarations(pipelines_dir: Path) -> list[Declaration]:
    """Every pipelines/*.yaml, sorted by name. One bad file raises; the error names it."""
    return [load_declaration(path, pipelines_dir.resolve().parent) for path in sorted(pipelines_dir.glob("*.yaml"))]
