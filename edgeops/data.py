"""Data sources, the seeded split, content digests and content-addressed storage of the splits.

Loading never throws away a bad row: values that are not numbers become NaN and are listed as problems
(row, column, value) so that validation can fail with the row ids. Only an unreadable source raises DataError.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from edgeops.errors import DataError
from edgeops.files import file_sha256
from edgeops.records.dataset import DataProblem, DatasetRef, StoredSplit
from edgeops.spec import DatasetSpec, Declaration

if TYPE_CHECKING:
    from edgeops.lineage import LineageRun

ROW_ID = "row_id"
SPLITS = ("train", "validation", "test")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm"}
MAX_PROBLEMS_KEPT = 1000


@dataclass
class LoadedData:
    frame: pd.DataFrame  # row_id, feature columns (float64, NaN where unreadable), label column
    features: list[str]
    label: str
    source: str
    problems: list[dict[str, Any]] = field(default_factory=list)  # {"row", "column", "value", "issue"}
    row_names: dict[int, str] = field(default_factory=dict)  # row id -> file, for image folders


def read_table(path: Path, scheme: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(str(path), "file not found")
    if path.stat().st_size == 0:
        raise DataError(str(path), "file is empty")
    try:
        if scheme == "csv":
            # dtype=str keeps every cell as written, so a bad value can be reported verbatim.
            return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pandas()
    except UnicodeDecodeError as err:
        raise DataError(str(path), f"not UTF-8 text (byte {err.start})") from None
    except pd.errors.EmptyDataError:
        raise DataError(str(path), "file has no header or rows") from None
    except pd.errors.ParserError as err:
        raise DataError(str(path), f"not a readable CSV: {str(err).strip()}") from None
    except Exception as err:  # pyarrow raises several types for truncated or foreign files
        if scheme == "parquet":
            raise DataError(str(path), f"not a readable Parquet file (truncated or another format): {err}") from None
        raise


def load_image_folder(folder: Path, spec: DatasetSpec) -> tuple[pd.DataFrame, dict[int, str]]:
    from PIL import Image, UnidentifiedImageError

    if not folder.is_dir():
        raise DataError(str(folder), "image folder not found")
    if spec.image_shape is None:
        raise DataError(str(folder), "an image folder needs dataset.image_shape (channels, height, width)")
    channels, height, width = spec.image_shape
    rows: list[list[float | str]] = []
    names: dict[int, str] = {}
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for image_path in sorted(p for p in label_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                with Image.open(image_path) as image:
                    pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.float64)
            except (UnidentifiedImageError, OSError) as err:
                raise DataError(str(image_path), f"not a readable image: {err}") from None
            if pixels.shape[:2] != (height, width):
                raise DataError(
                    str(image_path), f"image is {pixels.shape[1]}x{pixels.shape[0]}, declared {width}x{height}"
                )
            pixels = pixels.reshape(height, width, -1).transpose(2, 0, 1).reshape(-1)
            names[len(rows)] = str(image_path.relative_to(folder))
            rows.append([*pixels, label_dir.name])
    if not rows:
        raise DataError(str(folder), "no images found (expected <folder>/<label>/<image>)")
    columns = [f"pixel_{i}" for i in range(channels * height * width)] + [spec.label]
    return pd.DataFrame(rows, columns=columns), names


def load_source(declaration: Declaration) -> LoadedData:
    """Read the declared source into a numeric frame; cells that are not numbers become problems, not exceptions."""
    spec = declaration.spec.dataset
    row_names: dict[int, str] = {}
    if spec.scheme == "sklearn":
        from sklearn.datasets import load_digits

        raw = load_digits(as_frame=True).frame.rename(columns={"target": spec.label})
        source = spec.source
    elif spec.scheme == "images":
        folder = declaration.resolve(spec.location)
        raw, row_names = load_image_folder(folder, spec)
        source = str(folder)
    else:
        path = declaration.resolve(spec.location)
        raw = read_table(path, spec.scheme)
        source = str(path)
    if raw.empty:
        raise DataError(source, "no rows")
    if spec.label not in raw.columns:
        raise DataError(source, "declared label column is missing", column=spec.label)

    excluded = {spec.label, ROW_ID} | ({spec.split.column} if spec.split.column else set())
    features = list(spec.features) if spec.features else [c for c in raw.columns if c not in excluded]
    problems: list[dict[str, Any]] = []
    frame = pd.DataFrame({ROW_ID: np.arange(len(raw), dtype=np.int64)})
    for column in features:
        if column not in raw.columns:
            problems.append({"row": None, "column": column, "value": None, "issue": "declared column missing"})
            frame[column] = np.nan
            continue
        add_numeric_column(frame, raw[column], column, problems)
    add_numeric_column(frame, raw[spec.label], spec.label, problems)
    if spec.split.column:
        if spec.split.column not in raw.columns:
            raise DataError(source, "declared split column is missing", column=spec.split.column)
        frame[spec.split.column] = raw[spec.split.column].astype(str).to_numpy()
    for column in raw.columns:
        if column not in features and column not in excluded:
            problems.append({"row": None, "column": column, "value": None, "issue": "column not declared"})
    return LoadedData(
        frame=frame,
        features=features,
        label=spec.label,
        source=source,
        problems=problems[:MAX_PROBLEMS_KEPT],
        row_names=row_names,
    )


def add_numeric_column(frame: pd.DataFrame, values: pd.Series, column: str, problems: list[dict[str, Any]]) -> None:
    if pd.api.types.is_numeric_dtype(values):
        frame[column] = values.astype(np.float64).to_numpy()
        return
    text = values.astype(str).str.strip()
    numbers = pd.to_numeric(text, errors="coerce")
    blank = text.isin(["", "nan", "NaN", "NA", "null", "None"])
    for row in np.flatnonzero(numbers.isna().to_numpy() & ~blank.to_numpy())[:MAX_PROBLEMS_KEPT]:
        problems.append(
            {"row": int(row), "column": column, "value": str(values.iloc[row])[:80], "issue": "not a number"}
        )
    frame[column] = numbers.astype(np.float64).to_numpy()


# ---------------------------------------------------------------- split and digests
@dataclass
class SplitNotes:
    """How the split was made: recorded in the dataset's record."""

    dropped_duplicates: int = 0
    stratified: bool = True


def split_frame(data: LoadedData, spec: DatasetSpec) -> tuple[dict[str, pd.DataFrame], SplitNotes]:
    """A seeded, stratified split (or the source's own split column). Returns the splits and notes."""
    from sklearn.model_selection import train_test_split

    frame = data.frame
    notes = SplitNotes()
    if spec.split.column:
        splits = {name: frame[frame[spec.split.column] == name].drop(columns=[spec.split.column]) for name in SPLITS}
        unknown = sorted(set(frame[spec.split.column]) - set(SPLITS))
        if unknown:
            raise DataError(
                data.source, f"split column has values other than {SPLITS}: {unknown[:5]}", column=spec.split.column
            )
        notes.stratified = False
        return {k: v.reset_index(drop=True) for k, v in splits.items()}, notes
    if spec.split.deduplicate:
        before = len(frame)
        frame = frame.drop_duplicates(subset=[*data.features, data.label], keep="first")
        notes.dropped_duplicates = before - len(frame)
    labels = frame[data.label].fillna(-1)
    seed = spec.split.seed
    holdout = spec.split.validation + spec.split.test
    try:
        train, rest = train_test_split(frame, test_size=holdout, random_state=seed, stratify=labels)
        validation, test = train_test_split(
            rest, test_size=spec.split.test / holdout, random_state=seed, stratify=rest[data.label].fillna(-1)
        )
    except ValueError:
        # Too few rows of some class to stratify: split at random, and say so.
        notes.stratified = False
        train, rest = train_test_split(frame, test_size=holdout, random_state=seed)
        validation, test = train_test_split(rest, test_size=spec.split.test / holdout, random_state=seed)
    ordered = {
        name: part.sort_values(ROW_ID).reset_index(drop=True)
        for name, part in zip(SPLITS, (train, validation, test), strict=False)
    }
    return ordered, notes


def frame_digest(frame: pd.DataFrame, features: list[str], label: str) -> str:
    """sha256 over a canonical byte form: column names, row ids (int64), features (float64 LE), labels (float64 LE)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([ROW_ID, *features, label]).encode())
    digest.update(frame[ROW_ID].to_numpy(dtype="<i8").tobytes())
    digest.update(np.ascontiguousarray(frame[features].to_numpy(dtype="<f8")).tobytes())
    digest.update(frame[label].to_numpy(dtype="<f8").tobytes())
    return digest.hexdigest()


def store_splits(data: LoadedData, splits: dict[str, pd.DataFrame], notes: SplitNotes, out_root: Path) -> DatasetRef:
    """Write the splits under a folder named by their combined digest (never overwriting other data).

    Returns the dataset's record that downstream stages read: paths, digests, row counts, problems.
    """
    digests = {name: frame_digest(part, data.features, data.label) for name, part in splits.items()}
    combined = hashlib.sha256("".join(digests[name] for name in SPLITS).encode()).hexdigest()
    folder = out_root / combined[:16]
    folder.mkdir(parents=True, exist_ok=True)
    split_refs: dict[str, StoredSplit] = {}
    for name, part in splits.items():
        path = folder / f"{name}.parquet"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            part.to_parquet(tmp, index=False)
            tmp.replace(path)  # atomic: a killed run never leaves half a file under the final name
        split_refs[name] = StoredSplit(
            path=str(path), digest=digests[name], rows=len(part), file_sha256=file_sha256(path)
        )
    ref = DatasetRef(
        digest=combined,
        source=data.source,
        features=data.features,
        label=data.label,
        splits=split_refs,
        problems=[DataProblem.model_validate(problem) for problem in data.problems],
        row_names={str(k): v for k, v in list(data.row_names.items())[:MAX_PROBLEMS_KEPT]},
        dropped_duplicates=notes.dropped_duplicates,
        stratified=notes.stratified,
    )
    (folder / "manifest.json").write_text(json.dumps(ref.to_json(), indent=1))
    return ref


def read_split(ref: DatasetRef, name: str) -> pd.DataFrame:
    return pd.read_parquet(ref.splits[name].path)


def to_arrays(frame: pd.DataFrame, ref: DatasetRef) -> tuple[np.ndarray, np.ndarray]:
    return frame[ref.features].to_numpy(dtype=np.float32), frame[ref.label].to_numpy().astype(np.int64)


def ingest(declaration: Declaration, out_root: Path, run: LineageRun) -> DatasetRef:
    """Stage 1: load the declared source, split it, store the splits by digest and log them to MLflow."""
    data = load_source(declaration)
    splits, notes = split_frame(data, declaration.spec.dataset)
    ref = store_splits(data, splits, notes, out_root)
    run.log_params(
        {
            "source": data.source,
            "n_features": len(data.features),
            "split_seed": declaration.spec.dataset.split.seed,
            "stratified": notes.stratified,
            "dropped_duplicates": notes.dropped_duplicates,
        }
    )
    run.log_metrics(
        {f"rows_{name}": split.rows for name, split in ref.splits.items()} | {"load_problems": len(data.problems)}
    )
    from edgeops.lineage import DATASET_DIGEST_TAG

    run.set_tags({DATASET_DIGEST_TAG: ref.digest})
    return ref
