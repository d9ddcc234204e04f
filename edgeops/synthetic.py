"""Public synthetic digits: pen strokes drawn from fixed templates, with random geometry, rendered like the UCI scans.

Why: a DP model trained from scratch on ~1,250 private rows pays for every feature it learns out of the privacy
budget. Pre-training on data that contains no private row (here: digits drawn by a program, from templates written
in this file) is free under DP, and DP-SGD then only has to adapt the model to the real handwriting. No font files,
no downloads: the same seed gives the same images on every machine.

Rendering follows the UCI optdigits preprocessing that sklearn's digits come from: a 32x32 binary bitmap of the
glyph, scaled to fill the box, then the count of set pixels in each 4x4 block, i.e. 8x8 values in 0..16.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
from PIL import Image, ImageDraw

# Each digit: alternative glyphs; each glyph: strokes; each stroke: control points (x, y) in a unit box, y down.
# A stroke with `arc` is an elliptical arc: (cx, cy, rx, ry, start_degrees, end_degrees), clockwise on screen.
_Stroke = tuple[Any, ...]
TEMPLATES: dict[int, list[list[_Stroke]]] = {
    0: [[("arc", 0.5, 0.5, 0.32, 0.45, 0, 360)], [("arc", 0.5, 0.5, 0.26, 0.45, -20, 350)]],
    1: [
        [("line", (0.55, 0.05), (0.55, 0.95))],
        [("line", (0.2, 0.4), (0.6, 0.05), (0.6, 0.95))],
        [("line", (0.3, 0.28), (0.58, 0.05), (0.58, 0.95))],
        [("line", (0.3, 0.28), (0.58, 0.05), (0.58, 0.95)), ("line", (0.35, 0.95), (0.8, 0.95))],
    ],
    2: [
        [("arc", 0.5, 0.3, 0.3, 0.25, 180, 360), ("line", (0.8, 0.3), (0.2, 0.95), (0.85, 0.95))],
        [("arc", 0.5, 0.3, 0.3, 0.25, 160, 390), ("line", (0.77, 0.42), (0.2, 0.95), (0.85, 0.92))],
    ],
    3: [
        [("arc", 0.5, 0.28, 0.28, 0.23, 200, 450), ("arc", 0.5, 0.72, 0.32, 0.25, 270, 520)],
        [("line", (0.2, 0.05), (0.8, 0.05), (0.45, 0.45)), ("arc", 0.5, 0.7, 0.32, 0.27, 280, 510)],
    ],
    4: [
        [("line", (0.6, 0.05), (0.15, 0.65), (0.88, 0.65)), ("line", (0.65, 0.3), (0.65, 0.95))],
        [("line", (0.25, 0.05), (0.2, 0.55), (0.85, 0.55)), ("line", (0.7, 0.05), (0.7, 0.95))],
    ],
    5: [
        [("line", (0.8, 0.05), (0.3, 0.05), (0.25, 0.45)), ("arc", 0.5, 0.68, 0.3, 0.27, 240, 500)],
        [("line", (0.78, 0.07), (0.28, 0.07), (0.26, 0.42)), ("arc", 0.48, 0.66, 0.3, 0.28, 220, 510)],
    ],
    6: [
        [("line", (0.7, 0.05), (0.35, 0.4), (0.22, 0.7)), ("arc", 0.5, 0.7, 0.28, 0.25, 0, 360)],
        [("arc", 0.6, 0.6, 0.38, 0.55, 250, 180 + 10), ("arc", 0.5, 0.72, 0.27, 0.23, 0, 360)],
    ],
    7: [
        [("line", (0.15, 0.05), (0.85, 0.05), (0.4, 0.95))],
        [("line", (0.15, 0.05), (0.85, 0.05), (0.45, 0.95)), ("line", (0.3, 0.5), (0.9, 0.5))],
        [("line", (0.2, 0.15), (0.85, 0.05), (0.5, 0.95)), ("line", (0.35, 0.52), (0.95, 0.48))],
    ],
    8: [
        [("arc", 0.5, 0.27, 0.25, 0.22, 0, 360), ("arc", 0.5, 0.72, 0.3, 0.24, 0, 360)],
        [("arc", 0.5, 0.28, 0.22, 0.23, 0, 360), ("arc", 0.5, 0.73, 0.26, 0.22, 0, 360)],
    ],
    9: [
        [("arc", 0.5, 0.3, 0.28, 0.25, 0, 360), ("line", (0.78, 0.3), (0.7, 0.95))],
        [("arc", 0.48, 0.3, 0.27, 0.25, 0, 360), ("line", (0.75, 0.35), (0.45, 0.95))],
        [("arc", 0.5, 0.28, 0.27, 0.24, 0, 360), ("line", (0.77, 0.3), (0.76, 0.72), (0.62, 0.92), (0.3, 0.9))],
    ],
}

CANVAS = 32  # the UCI bitmaps
LEVELS = 16  # values run 0..16
BLOCK = 4  # 32 / 4 = 8 pixels a side, each the count of set pixels in a 4x4 block (0..16)


def _stroke_points(stroke: _Stroke, rng: np.random.Generator, jitter: float) -> np.ndarray:
    if stroke[0] == "arc":
        _, cx, cy, rx, ry, start, end = stroke
        angles = np.radians(np.linspace(start, end, 40))
        points = np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1)
        # a smooth random wobble (low frequency) instead of independent noise per point, like a hand's drift
        wobble = rng.normal(0, jitter, size=(3, 2))
        phase = np.linspace(0, 1, len(points))[:, None]
        return cast(
            np.ndarray, points + wobble[0] * (1 - phase) + wobble[1] * phase + wobble[2] * np.sin(np.pi * phase)
        )
    points = np.array(stroke[1:], dtype=float)
    points = points + rng.normal(0, jitter, size=points.shape)
    # resample each segment densely, so the smooth distortion below can bend straight strokes
    return np.concatenate(
        [np.linspace(a, b, 12, endpoint=False) for a, b in zip(points[:-1], points[1:], strict=False)] + [points[-1:]]
    )


def _bend(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth random displacement field over the glyph (an elastic distortion, like a hand's uneven pressure)."""
    amplitude = rng.uniform(0.0, 0.05, size=2)
    frequency = rng.uniform(0.5, 1.5, size=2)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    dx = amplitude[0] * np.sin(2 * np.pi * frequency[0] * points[:, 1] + phase[0])
    dy = amplitude[1] * np.sin(2 * np.pi * frequency[1] * points[:, 0] + phase[1])
    return cast(np.ndarray, points + np.stack([dx, dy], axis=1))


def render_digit(label: int, rng: np.random.Generator) -> np.ndarray:
    """One synthetic digit as 64 values in 0..16 (sklearn digits' layout)."""
    glyph = TEMPLATES[label][rng.integers(len(TEMPLATES[label]))]
    strokes = [_bend(_stroke_points(s, rng, jitter=0.04), rng) for s in glyph]
    # random affine: rotation, shear, anisotropic scale (the scans were normalised to the box afterwards)
    angle = np.radians(rng.normal(0, 8))
    shear = rng.normal(0, 0.15)
    scale = np.diag(
        [rng.uniform(0.55, 1.0), rng.uniform(0.9, 1.1)]
    )  # the UCI writers wrote narrow: most digits are taller than wide
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    transform = rotation @ np.array([[1, shear], [0, 1]]) @ scale
    strokes = [(p - 0.5) @ transform.T for p in strokes]
    # fit the glyph into the box keeping its aspect ratio, as the UCI normalisation did
    every = np.concatenate(strokes)
    low, high = every.min(axis=0), every.max(axis=0)
    size = max(high - low) or 1.0
    width = rng.uniform(3.5, 6.5)
    margin = width / 2 + 0.5
    fit = (CANVAS - 2 * margin) / size
    offset = margin + ((CANVAS - 2 * margin) - (high - low) * fit) / 2
    image = Image.new("1", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(image)
    for points in strokes:
        xy = [tuple(v) for v in (points - low) * fit + offset]
        draw.line(xy, fill=1, width=int(round(width)), joint="curve")
    bitmap = np.asarray(image, dtype=np.float32)
    return cast(np.ndarray, bitmap.reshape(8, BLOCK, 8, BLOCK).sum(axis=(1, 3)).reshape(64))


def synthetic_digits(n: int, seed: int, classes: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """n synthetic digits, balanced over `classes` (0..9 by default), as float32 features and class indices."""
    classes = list(range(10)) if classes is None else list(classes)
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(classes)
    rng.shuffle(labels)
    x = np.stack([render_digit(classes[i], rng) for i in labels]).astype(np.float32)
    return x, labels.astype(np.int64)
