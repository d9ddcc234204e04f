"""How long the Dagster code location takes to load with N declared pipelines (fresh interpreter each time).

Usage: python benchmarks/code_location_load.py [--pipelines 4] [--repeats 5]
Writes benchmarks/results/code_location_load.md. Goal (issue 9): with 4 pipelines declared, load in <= 5 s.
The extra pipelines are copies of the default declaration under other names, in a temporary project root.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from _common import ROOT, write_table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pipelines", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for count in (1, args.pipelines):
        root = Path(tempfile.mkdtemp(prefix="edgeops-load-"))
        shutil.copytree(ROOT / "expectations", root / "expectations")
        (root / "pipelines").mkdir()
        (root / "workspace.yaml").write_text((ROOT / "workspace.yaml").read_text())
        base = yaml.safe_load((ROOT / "pipelines" / "digits.yaml").read_text())
        for index in range(count):
            spec = dict(base, name="digits" if index == 0 else f"digits_{index}")
            (root / "pipelines" / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec))
        env = {**os.environ, "EDGEOPS_ROOT": str(root), "EDGEOPS_HOME": str(root / ".edgeops"), "PYTHONPATH": str(ROOT)}
        code = (
            "import time; t = time.perf_counter(); import pipelines.definitions as d; "
            "n = len(d.defs.resolve_asset_graph().get_all_asset_keys()); print(time.perf_counter() - t, n)"
        )
        samples = []
        for _ in range(args.repeats + 1):
            out = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            ).stdout.split()
            samples.append((float(out[0]), int(out[1])))
        times = [s[0] for s in samples[1:]]  # the first load warms the OS file cache
        rows.append(
            {
                "pipelines": count,
                "assets": samples[-1][1],
                "load_s_median": statistics.median(times),
                "load_s_max": max(times),
                "repeats": len(times),
                "goal": "<= 5 s" if count == args.pipelines else "",
                "met": statistics.median(times) <= 5 if count == args.pipelines else "",
            }
        )
    write_table(
        "code_location_load",
        rows,
        [
            "fresh Python process per load: import pipelines.definitions and resolve the asset graph",
            "heavy libraries (torch, mlflow, GX, evidently) are imported inside asset bodies, not at load",
        ],
    )


if __name__ == "__main__":
    main()
