"""Write scikit-learn's digits as PNG files, one folder per label: the input of the example digit_images.yaml.

Each 8x8 image's 17 grey levels (0..16) are mapped linearly onto 0..255 (round(v * 255 / 16)), 8-bit greyscale PNG.

Usage (from the project root): python pipelines/examples/generate_digit_images.py [--out data/digit_images]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def write_digit_images(out: Path, limit: int | None = None) -> int:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    count = len(digits.target) if limit is None else min(limit, len(digits.target))
    for index in range(count):
        folder = out / str(int(digits.target[index]))
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.rint(digits.images[index] * 255 / 16).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"{index:04d}.png")
    return count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="data/digit_images")
    args = parser.parse_args()
    print(f"wrote {write_digit_images(Path(args.out))} images under {args.out}")


if __name__ == "__main__":
    main()
