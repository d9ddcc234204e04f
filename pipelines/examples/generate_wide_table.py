"""Generate the wide-scale table the example declaration wide_table.yaml reads (no large file is committed).

scikit-learn's make_classification: 20,000 rows, 30 features (10 informative, 5 redundant), 3 classes; column j is
rescaled by 10 ** (-2 + 6 j / 29) (1e-2 .. 1e4) and offset by 5 times that scale, the way real measurements in
different units look.

Usage (from the project root): python pipelines/examples/generate_wide_table.py [--rows 20000] [--out
data/wide_table.csv]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

FEATURES = 30
CLASSES = 3


def wide_table(rows: int = 20_000, seed: int = 0) -> pd.DataFrame:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=rows,
        n_features=FEATURES,
        n_informative=10,
        n_redundant=5,
        n_classes=CLASSES,
        n_clusters_per_class=1,
        class_sep=1.5,
        flip_y=0.0,
        random_state=seed,
    )
    scales = np.logspace(-2, 4, FEATURES)
    frame = pd.DataFrame(x * scales + 5 * scales, columns=[f"m{j:02d}" for j in range(FEATURES)])
    frame["label"] = y
    return frame


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="data/wide_table.csv")
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    wide_table(args.rows, args.seed).to_csv(out, index=False, float_format="%.6g")
    print(f"wrote {out} ({args.rows} rows)")


if __name__ == "__main__":
    main()
