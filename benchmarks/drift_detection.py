"""Drift detection on digits: detection rate per shift kind and severity, false alarms over unshifted batches,
and the time of one report on 100,000 rows x 64 features.

Usage: python benchmarks/drift_detection.py [--batches 80] [--side-batches 10] [--clean 120]
Writes benchmarks/results/drift_detection.md. Goals (issue 6): detection >= 95% at medium severity; false alarms
<= 5% over unshifted batches; both judged on the 95% Wilson interval (detection: its lower end >= 95%, which
80 batches all detected give; false alarms: its upper end <= 5%, which needs >= 73 clean batches with none flagged); a
100,000 x 64 report in <= 30 s (with the declared sampling, stated).
Decisions use the default declaration's monitoring section; the detection runs skip the HTML rendering (the
verdict does not depend on it); the timing run includes it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import declared_dp_model, digits_training_data, wilson_interval, write_table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=80, help="per shift kind at medium severity (the goal's rate)")
    parser.add_argument(
        "--side-batches", type=int, default=10, help="per shift kind at low and high severity (reported only)"
    )
    parser.add_argument("--clean", type=int, default=120, help="unshifted batches (false alarms)")
    parser.add_argument("--rows", type=int, default=200)
    args = parser.parse_args()
    from edgeops.drift import drift_report, load_batch, simulate

    declaration, data, ref = digits_training_data()
    model = declared_dp_model(declaration, data, Path(tempfile.mkdtemp()))  # with the declared public pre-training
    work = Path(tempfile.mkdtemp())

    def detect(paths) -> list[bool]:
        out = []
        for path in paths:
            frame, _ = load_batch(path, declaration, ref.features)
            out.append(drift_report(declaration, ref, model, frame, work / "r", write_html=False).drift_detected)
        return out

    rows = []
    clean = detect(
        simulate(declaration, ref, "none", "medium", work / "clean", batches=args.clean, rows=args.rows, seed=100)
    )
    # Goals are judged on the 95% Wilson interval, not the point rate: met only when the whole interval is on the
    # right side (false alarms: upper end <= 5%; detection: lower end >= 95%, which needs >= 73 batches all detected).
    low_c, high_c = wilson_interval(sum(clean), len(clean))
    rows.append(
        {
            "shift": "none (unshifted, held-out test rows)",
            "severity": "-",
            "batches": len(clean),
            "flagged": sum(clean),
            "rate": sum(clean) / len(clean),
            "95% interval": f"[{low_c:.3f}, {high_c:.3f}]",
            "goal": "false alarms <= 5%",
            "met": high_c <= 0.05,
        }
    )
    for kind in ("rotation", "noise", "brightness", "contrast", "occlusion"):
        for severity in ("low", "medium", "high"):
            count = args.batches if severity == "medium" else args.side_batches
            flagged = detect(
                simulate(
                    declaration, ref, kind, severity, work / f"{kind}-{severity}", batches=count, rows=args.rows, seed=7
                )
            )
            low, high = wilson_interval(sum(flagged), len(flagged))
            rows.append(
                {
                    "shift": kind,
                    "severity": severity,
                    "batches": len(flagged),
                    "flagged": sum(flagged),
                    "rate": sum(flagged) / len(flagged),
                    "95% interval": f"[{low:.3f}, {high:.3f}]",
                    "goal": ">= 95% (interval's lower end)" if severity == "medium" else "(reported)",
                    "met": (low >= 0.95) if severity == "medium" else "",
                }
            )
        print(rows[-1], flush=True)

    # 100,000 x 64: digits test rows resampled with small noise, the declared max_rows sampling applied, HTML included.
    rng = np.random.default_rng(0)
    test = pd.read_parquet(ref.splits["test"].path)
    big = test.sample(100_000, replace=True, random_state=1).reset_index(drop=True)
    big[ref.features] = np.clip(big[ref.features].to_numpy() + rng.normal(0, 0.3, (100_000, 64)), 0, 16)
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        summary = drift_report(declaration, ref, model, big, work / "big")
        timings.append(time.perf_counter() - start)
    median = sorted(timings)[1]
    rows.append(
        {
            "shift": "timing: 100,000 rows x 64 features",
            "severity": "-",
            "batches": 3,
            "flagged": "",
            "rate": f"{median:.1f} s median ({', '.join(f'{t:.1f}' for t in timings)})",
            "goal": "<= 30 s",
            "met": median <= 30,
        }
    )
    write_table(
        "drift_detection",
        rows,
        [
            f"reference: the {declaration.spec.monitoring.reference_split} split "
            f"({ref.splits[declaration.spec.monitoring.reference_split].rows} rows); "
            f"batches of {args.rows} rows drawn from the held-out test split, then shifted",
            f"rule: features KS p<{declaration.spec.monitoring.threshold} on >= "
            f"{declaration.spec.monitoring.drift_share:.0%} of columns, or prediction "
            f"chi-square p<{declaration.spec.monitoring.prediction_threshold}, or >= "
            f"{declaration.spec.monitoring.drift_share:.0%} of 8 embedding projections + 2 pixel statistics drifted",
            f"timing run: sampled to max_rows={declaration.spec.monitoring.max_rows} (recorded in the summary: "
            f"rows_sampled={summary.rows_sampled}), HTML report written",
        ],
    )


if __name__ == "__main__":
    main()
