"""A state folder that cannot be written, a disk that is full, a disk that fills up mid-run: each a clear error
naming the folder, and what the last good run left (model files, registered versions, cards) is untouched.

Real faults, not mocks: a small tmpfs is a real full filesystem; root without CAP_DAC_OVERRIDE (setpriv) gets a real
EACCES from a mode-555 folder. Both need root; outside CI the tests skip without it, with CI=true they must run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import Project, table_declaration, table_frame

EDGEOPS = str(Path(sys.executable).parent / "edgeops")


def _needs_root(tool: str) -> None:
    why = None
    if os.geteuid() != 0:
        why = "needs root (a tmpfs mount, or dropping CAP_DAC_OVERRIDE with setpriv)"
    elif not shutil.which(tool):
        why = f"needs {tool}"
    if why and os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the state-folder fault tests: {why}")
    if why:
        pytest.skip(why)


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a given size, unmounted afterwards."""
    _needs_root("mount")
    mounts = []

    def mount(size_mb: int) -> Path:
        point = tmp_path / f"disk{len(mounts)}"
        point.mkdir()
        completed = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(point)], capture_output=True, text=True
        )
        if completed.returncode != 0 and os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the state-folder fault tests: mount tmpfs failed: {completed.stderr}")
        if completed.returncode != 0:
            pytest.skip(f"mount tmpfs failed (needs root in a sandbox that allows mounts): {completed.stderr}")
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", "-l", str(point)], check=False)


def edgeops_run(project: Project, home: Path, *prefix: str, env: dict | None = None) -> subprocess.CompletedProcess:
    variables = {
        **os.environ,
        "EDGEOPS_ROOT": str(project.root),
        "EDGEOPS_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        **(env or {}),
    }
    return subprocess.run(
        [*prefix, EDGEOPS, "run", "--no-progress"],
        cwd=project.root,
        env=variables,
        capture_output=True,
        text=True,
        timeout=600,
    )


def table_project(project: Project) -> Project:
    project.write_csv(table_frame(300))
    project.declare(table_declaration())
    return project


def test_a_state_folder_this_user_cannot_write_is_named_before_anything_runs(project, tmp_path):
    _needs_root("setpriv")
    table_project(project)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    no_override = (
        "setpriv",
        "--bounding-set=-dac_override,-dac_read_search",
        "--inh-caps=-dac_override,-dac_read_search",
    )
    completed = edgeops_run(project, locked / "state", *no_override)
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert f"state folder {locked / 'state'} is not writable by uid 0: Permission denied" in completed.stderr
    assert "Traceback" not in completed.stderr and list(locked.iterdir()) == []


def test_a_full_disk_is_named_before_anything_runs(project, small_disk):
    table_project(project)
    disk = small_disk(2)
    completed = edgeops_run(project, disk / "state")
    assert completed.returncode == 2
    assert f"state folder {disk / 'state'}: only" in completed.stderr and "MB free" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (disk / "state" / "dagster").exists()  # refused before Dagster or MLflow wrote anything


def fingerprint(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def registered_versions(home: Path) -> list[tuple[str, str, str]]:
    import sqlite3

    with sqlite3.connect(home / "mlflow.db") as db:
        return sorted(db.execute("select name, version, source from model_versions").fetchall())


def test_a_disk_that_fills_mid_run_keeps_the_last_good_results_and_a_rerun_completes(project, small_disk):
    table_project(project)
    disk = small_disk(160)  # room for a run (~10 MB) above the 100 MB preflight
    home = disk / "state"
    first = edgeops_run(project, home)
    assert first.returncode == 0, first.stderr[-3000:]
    cards = project.root / "model_cards" / "generated" / "tabular"
    good_cards, good_models = fingerprint(cards), fingerprint(home / "pipelines" / "tabular" / "models")
    good_versions = registered_versions(home)

    # A new model version (another seed), on a disk with almost no room left: it must fail clearly, mid-run.
    spec = yaml.safe_load((project.root / "pipelines" / "tabular.yaml").read_text())
    spec["training"]["seed"] = 7
    (project.root / "pipelines" / "tabular.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    ballast = disk / "ballast"
    free = shutil.disk_usage(disk).free
    with open(ballast, "wb") as handle:
        handle.truncate(0)
        handle.write(b"\0" * max(free - 256 * 1024, 0))  # tmpfs: written bytes are real pages
    filled = edgeops_run(project, home, env={"EDGEOPS_MIN_FREE_MB": "0"})  # past the preflight, as if it filled later
    assert filled.returncode == 2, filled.stderr[-3000:]
    assert f"the filesystem of the state folder {home} filled up during the run" in filled.stderr

    assert fingerprint(cards) == good_cards  # no card replaced or half-written
    assert {
        k: v for k, v in fingerprint(home / "pipelines" / "tabular" / "models").items() if k in good_models
    } == good_models
    assert set(good_versions) <= set(registered_versions(home))  # every earlier version still registered, same source

    ballast.unlink()
    rerun = edgeops_run(project, home)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    card_folders_before = {Path(k).parts[0] for k in good_cards}
    card_folders_after = {p.name for p in cards.iterdir() if p.is_dir()}
    assert (
        card_folders_before < card_folders_after and len(card_folders_after - card_folders_before) == 1
    )  # the new version's card
