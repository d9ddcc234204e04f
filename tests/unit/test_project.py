"""The project folder: `edgeops init`, the missing-folder errors, and card files read from the package."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from edgeops.cards.nist import load_catalogue, load_rules
from edgeops.errors import ProjectError
from edgeops.resources import CATALOGUE, MAPPING, card_file, read_card_file
from edgeops.settings import Settings
from edgeops.spec import discover_declarations


@pytest.fixture
def clean_env(monkeypatch):
    for variable in ("EDGEOPS_ROOT", "EDGEOPS_HOME", "DAGSTER_HOME", "EDGEOPS_PIPELINES_DIR"):
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_init_scaffolds_a_project_whose_example_declaration_loads(tmp_path, clean_env):
    from edgeops.cli import main

    result = CliRunner().invoke(main, ["init", str(tmp_path / "proj")])
    assert result.exit_code == 0, result.output
    root = tmp_path / "proj"
    for name in (
        "workspace.yaml",
        "README.md",
        ".gitignore",
        "pipelines/example.yaml",
        "expectations/example.json",
        "data",
        "model_cards",
    ):
        assert (root / name).exists(), name
    assert "# " in (root / "pipelines" / "example.yaml").read_text()  # commented for a reader
    clean_env.chdir(root)
    assert Settings.resolve().root == root.resolve()
    declarations = discover_declarations(root / "pipelines")
    assert [d.spec.name for d in declarations] == ["example"]
    suite = json.loads((root / "expectations" / "example.json").read_text())
    assert any(e["type"] == "expect_column_values_to_be_between" for e in suite["expectations"])
    # a second init never overwrites the user's files
    again = CliRunner().invoke(main, ["init", str(root)])
    assert again.exit_code == 2 and "already has" in again.output and "--force" in again.output


@pytest.mark.parametrize(
    "present, missing",
    [
        ((), "no workspace.yaml and no pipelines/"),
        (("workspace.yaml",), "no pipelines/"),
        (("pipelines",), "no workspace.yaml"),
    ],
)
def test_a_folder_that_is_not_a_project_names_what_is_missing_and_offers_init(tmp_path, clean_env, present, missing):
    folder = tmp_path / "somewhere"
    folder.mkdir()
    if "workspace.yaml" in present:
        (folder / "workspace.yaml").write_text("load_from: []\n")
    if "pipelines" in present:
        (folder / "pipelines").mkdir()
    clean_env.chdir(folder)
    with pytest.raises(ProjectError, match="edgeops init") as err:
        Settings.resolve()
    assert f"has {missing}." in str(err.value)
    clean_env.setenv("EDGEOPS_ROOT", str(folder))
    with pytest.raises(ProjectError, match=f"EDGEOPS_ROOT={folder}.*{missing}.*edgeops init"):
        Settings.resolve()


def test_cli_reports_the_missing_project_without_a_traceback(tmp_path, clean_env):
    from edgeops.cli import main

    clean_env.chdir(tmp_path)
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 2
    assert "no workspace.yaml and no pipelines/" in result.output and "edgeops init" in result.output
    assert "Traceback" not in result.output


def test_card_files_come_from_the_package_and_a_project_may_override_the_mapping(tmp_path):
    empty = tmp_path / "model_cards"
    empty.mkdir()
    assert "edgeops/resources/model_cards" in str(card_file(CATALOGUE, empty)).replace("\\", "/")
    catalogue = load_catalogue(empty)
    assert len(catalogue) == 72
    packaged_rules = load_rules(empty, {s["id"] for s in catalogue})
    override = yaml.safe_load(read_card_file(MAPPING))
    first = sorted(override["rules"])[0]
    del override["rules"][first]
    (empty / MAPPING).write_text(yaml.safe_dump(override))
    assert card_file(MAPPING, empty) == empty / MAPPING
    assert first in packaged_rules and first not in load_rules(empty, {s["id"] for s in catalogue})
