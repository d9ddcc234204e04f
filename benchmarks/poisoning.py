"""Label-flip poisoning on digits: how much of an injected flip does the validation stage's poisoning scan catch,
and does the check stop the pipeline?

Usage: python benchmarks/poisoning.py [--seeds 5]
Writes benchmarks/results/poisoning.md (issue 10: label-flip poisoning at 1, 5 and 10% with the validation stage's
detection recall).

Flips: a random share of the training split gets a random wrong label (seeded). The scan is edgeops.validation's
k-nearest-neighbour label disagreement with the declaration's settings (k, disagreement threshold), on features
scaled by the public bounds. recall = flipped rows flagged / flipped rows; precision = flipped among flagged;
"check fails" = the flagged share exceeds validation.poisoning.max_suspect_fraction, which stops the pipeline.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np
from _common import ROOT, digits_training_data, wilson_interval, write_table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    from edgeops.scaling import feature_bounds
    from edgeops.validation import suspect_labels

    declaration, data, _ = digits_training_data()
    spec = declaration.spec
    config = spec.validation.poisoning
    bounds = feature_bounds(spec, data.features)
    clean_flags = len(suspect_labels(data.x_train, data.y_train, config.neighbours, config.disagreement, bounds)[0])
    rows = [
        {
            "flipped_share": 0.0,
            "seeds": 1,
            "flipped_rows": 0,
            "flagged_rows": clean_flags,
            "recall_median": None,
            "precision_median": None,
            "check_fails": clean_flags / len(data.y_train) > config.max_suspect_fraction,
        }
    ]
    for share in (0.01, 0.05, 0.10):
        recalls, precisions, fails, flagged_counts, caught_total, flipped_total = [], [], [], [], 0, 0
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            labels = data.y_train.copy()
            flipped = rng.choice(len(labels), size=int(round(share * len(labels))), replace=False)
            labels[flipped] = (labels[flipped] + rng.integers(1, len(data.classes), size=len(flipped))) % len(
                data.classes
            )
            flagged = suspect_labels(data.x_train, labels, config.neighbours, config.disagreement, bounds)[0]
            caught = np.intersect1d(flagged, flipped)
            recalls.append(len(caught) / len(flipped))
            caught_total, flipped_total = caught_total + len(caught), flipped_total + len(flipped)
            precisions.append(len(caught) / max(len(flagged), 1))
            flagged_counts.append(len(flagged))
            fails.append(len(flagged) / len(labels) > config.max_suspect_fraction)
        rows.append(
            {
                "flipped_share": share,
                "seeds": args.seeds,
                "flipped_rows": len(flipped),
                "flagged_rows": statistics.median(flagged_counts),
                "recall_median": statistics.median(recalls),
                "recall_min": min(recalls),
                "recall_pooled": round(caught_total / flipped_total, 4),
                "recall_95%_interval": "[{:.3f}, {:.3f}]".format(*wilson_interval(caught_total, flipped_total)),
                "precision_median": statistics.median(precisions),
                "check_fails": f"{sum(fails)}/{len(fails)}",
            }
        )
    notes = [
        f"digits training split, {len(data.y_train)} rows; scan k={config.neighbours}, disagreement >= "
        f"{config.disagreement:.0%}, "
        f"check fails above {config.max_suspect_fraction:.0%} flagged (the declaration's settings).",
        "A flipped label is a random other class. The scan reads only the training split and the public bounds.",
        "recall_pooled: flipped rows caught / flipped rows over all seeds; its 95% Wilson interval treats each flipped "
        "row as a "
        "trial (rows of one seed share a scan, so the interval is optimistic about seed-to-seed variation: recall_min "
        "shows that).",
    ]
    write_table("poisoning", rows, notes)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
