"""`edgeops init DIR`: scaffold a project folder outside this repository, from the files shipped in the package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeops.errors import ProjectError
from edgeops.resources import packaged

EXAMPLE_PIPELINE = "example"
# packaged name -> name in the project (a file called .gitignore would be dropped by some packaging tools)
TEMPLATE_FILES = {
    "workspace.yaml": "workspace.yaml",
    "README.md": "README.md",
    "gitignore": ".gitignore",
    "pipelines/example.yaml": f"pipelines/{EXAMPLE_PIPELINE}.yaml",
    "data/README.md": "data/README.md",
    "expectations/README.md": "expectations/README.md",
}
FOLDERS = ("pipelines", "expectations", "data", "model_cards")


def init_project(folder: Path, force: bool = False) -> list[Path]:
    """Write pipelines/ (a commented, runnable example declaration), expectations/ (its suite), data/, model_cards/,
    workspace.yaml, a README stub and a .gitignore. Refuses to overwrite any existing file unless `force`."""
    folder = Path(folder).resolve()
    if folder.exists() and not folder.is_dir():
        raise ProjectError(f"{folder} exists and is not a folder")
    targets = {folder / name: packaged("project", *source.split("/")) for source, name in TEMPLATE_FILES.items()}
    suite = folder / "expectations" / f"{EXAMPLE_PIPELINE}.json"
    existing = sorted(str(p.relative_to(folder)) for p in [*targets, suite] if p.exists())
    if existing and not force:
        raise ProjectError(
            f"{folder} already has {', '.join(existing)}; nothing was written (pass --force to overwrite them)"
        )
    for name in FOLDERS:
        (folder / name).mkdir(parents=True, exist_ok=True)
    written = []
    for path, source in targets.items():
        path.write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
        written.append(path)
    suite.write_text(json.dumps(example_suite(folder), indent=1) + "\n", encoding="utf-8")
    written.append(suite)
    return written


def example_suite(folder: Path) -> dict[str, Any]:
    """The expectation suite the example declaration implies (what `edgeops expectations generate` would write)."""
    from edgeops.data import load_source
    from edgeops.spec import Declaration, parse_spec, spec_sha256
    from edgeops.validation import generate_suite

    file = folder / "pipelines" / f"{EXAMPLE_PIPELINE}.yaml"
    spec = parse_spec(file.read_bytes(), str(file))
    declaration = Declaration(spec, file, folder, spec_sha256(spec))
    return generate_suite(spec, list(spec.dataset.features or load_source(declaration).features))
