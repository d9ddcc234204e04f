"""Wall time of the default pipeline (what `make run` runs after install), and the share spent in orchestration and
lineage versus the stage functions themselves.

Usage: python benchmarks/pipeline_overhead.py [--repeats 3]
Writes benchmarks/results/pipeline_overhead.md. Goal (issue 2): orchestration + lineage < 20% of wall time.
Each repeat uses a fresh state folder (so every stage really computes, and MLflow's sqlite store is created anew,
as on a first `make run`). Every asset records `stage_seconds` (its core function, MLflow calls excluded) and
`lineage_seconds` (time inside MLflow calls); data checks record `stage_seconds`. Orchestration is the rest.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import ROOT, write_table


def one_run() -> dict:
    home = Path(tempfile.mkdtemp(prefix="edgeops-overhead-"))
    os.environ["EDGEOPS_HOME"] = str(home)
    os.environ["EDGEOPS_ROOT"] = str(ROOT)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    from edgeops.settings import Settings
    from pipelines.instance import ensure_instance
    from pipelines.launch import run_pipelines

    settings = Settings.resolve()
    start = time.perf_counter()
    reports = run_pipelines(settings, "digits")
    wall = time.perf_counter() - start
    instance = ensure_instance(settings)
    stage = lineage = card_seconds = 0.0
    for report in reports:
        for run in report.runs:
            for record in instance.all_logs(run["run_id"]):
                event = record.dagster_event
                if event is None:
                    continue
                metadata = {}
                if event.event_type_value == "ASSET_MATERIALIZATION":
                    metadata = event.event_specific_data.materialization.metadata
                elif event.event_type_value == "ASSET_CHECK_EVALUATION":
                    metadata = event.event_specific_data.metadata
                stage += float(metadata["stage_seconds"].value) if "stage_seconds" in metadata else 0.0
                card_seconds += float(metadata["generation_seconds"].value) if "generation_seconds" in metadata else 0.0
                lineage += float(metadata["lineage_seconds"].value) if "lineage_seconds" in metadata else 0.0
    return {
        "wall_s": wall,
        "stage_s": stage,
        "lineage_s": lineage,
        "orchestration_s": wall - stage - lineage,
        "runs": sum(len(r.runs) for r in reports),
        "card_generation_s": card_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    samples = [one_run() for _ in range(args.repeats)]
    rows = []
    for sample in samples:
        overhead = (sample["lineage_s"] + sample["orchestration_s"]) / sample["wall_s"]
        rows.append({**{k: round(v, 2) for k, v in sample.items()}, "orchestration+lineage_share": round(overhead, 3)})
    median_share = statistics.median(r["orchestration+lineage_share"] for r in rows)
    rows.append(
        {
            "wall_s": statistics.median(r["wall_s"] for r in rows),
            "stage_s": statistics.median(r["stage_s"] for r in rows),
            "lineage_s": statistics.median(r["lineage_s"] for r in rows),
            "orchestration_s": statistics.median(r["orchestration_s"] for r in rows),
            "runs": "median",
            "card_generation_s": statistics.median(r["card_generation_s"] for r in rows),
            "orchestration+lineage_share": median_share,
        }
    )
    write_table(
        "pipeline_overhead",
        rows,
        [
            "default pipeline (digits, 4 targets), embedded profile: sqlite Dagster + MLflow, in-process executor",
            f"fresh state folder per repeat; goal: orchestration + lineage < 20% (median: {median_share:.1%})",
            "card_generation_s: building, rendering and signing the model card from MLflow records (verification runs "
            "after; goal <= 5 s, issue 7)",
        ],
    )


if __name__ == "__main__":
    main()
