"""Data validation: the Great Expectations suite, plus what GX does not do (schema against the declaration,
leakage across splits, duplicates within a split, class balance, a label-noise / poisoning scan).

Each check returns a CheckOutcome: pass/fail, a one-line summary, counts, and example rows (by row id), so the
Dagster UI can show which rule failed, on how many rows, with examples. The label-noise / poisoning scan lives in
edgeops.label_noise; its names are re-exported here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from edgeops.checks import MAX_EXAMPLES, CheckOutcome
from edgeops.data import ROW_ID, SPLITS, read_split
from edgeops.errors import DataError, SpecError
from edgeops.label_noise import check_poisoning
from edgeops.label_noise import confident_learning_scan as confident_learning_scan
from edgeops.label_noise import standardise as standardise
from edgeops.label_noise import suspect_labels as suspect_labels
from edgeops.spec import Declaration, PipelineSpec

if TYPE_CHECKING:
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    from edgeops.ledger import PrivacyLedger
    from edgeops.lineage import LineageRun
    from edgeops.records import DatasetRef


def _all_rows(ref: DatasetRef) -> pd.DataFrame:
    parts = []
    for name in SPLITS:
        part = read_split(ref, name)
        part.insert(1, "split", name)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


# ---------------------------------------------------------------- schema
def expected_columns(declaration: Declaration) -> list[str]:
    """Feature columns by name: declared in the spec, else the ones the expectation suite expects to exist."""
    spec = declaration.spec
    if spec.dataset.features:
        return list(spec.dataset.features)
    path = declaration.resolve(spec.validation.expectations)
    if not path.is_file():
        return []
    suite = load_suite_json(path)
    return [
        e["kwargs"]["column"]
        for e in suite["expectations"]
        if e.get("type") == "expect_column_to_exist" and e["kwargs"].get("column") != spec.dataset.label
    ]


def check_schema(ref: DatasetRef, spec: PipelineSpec, declaration: Declaration | None = None) -> CheckOutcome:
    problems: list[dict[str, Any]] = [problem.model_dump() for problem in ref.problems]
    if declaration is not None:
        expected = expected_columns(declaration)
        present = set(ref.features)
        reported = {p["column"] for p in problems}
        problems += [
            {"row": None, "column": c, "value": None, "issue": "expected column missing"}
            for c in expected
            if c not in present and c not in reported
        ]
        if expected:
            problems += [
                {"row": None, "column": c, "value": None, "issue": "column not expected by the suite"}
                for c in ref.features
                if c not in expected and c not in reported
            ]
    declared = spec.dataset.n_features
    if declared is not None and len(ref.features) != declared:
        problems.insert(
            0,
            {
                "row": None,
                "column": None,
                "value": len(ref.features),
                "issue": f"{len(ref.features)} feature columns, declared n_features={declared}",
            },
        )
    columns = sorted({p["column"] for p in problems if p.get("column")})
    summary = (
        "schema matches the declaration"
        if not problems
        else (f"{len(problems)} schema problem(s) in columns {columns[:8]}" if columns else problems[0]["issue"])
    )
    return CheckOutcome("schema", not problems, summary, {"problems": len(problems)}, problems[:MAX_EXAMPLES])


# ---------------------------------------------------------------- Great Expectations
def generate_suite(spec: PipelineSpec, features: list[str]) -> dict[str, Any]:
    """A GX suite derived from the declaration: types, nulls, declared bounds, label domain, row counts."""
    expectations: list[dict[str, Any]] = [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": spec.dataset.min_rows}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": spec.dataset.label}},
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": spec.dataset.label, "value_set": [float(c) for c in spec.dataset.classes]},
        },
        {
            "type": "expect_column_distinct_values_to_contain_set",
            "kwargs": {"column": spec.dataset.label, "value_set": [float(c) for c in spec.dataset.classes]},
        },
    ]
    for column in features:
        low, high = spec.dataset.bounds_for(column)
        expectations += [
            {"type": "expect_column_to_exist", "kwargs": {"column": column}},
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": column}},
            {
                "type": "expect_column_values_to_be_in_type_list",
                "kwargs": {"column": column, "type_list": ["float64", "int64", "float32", "int32"]},
            },
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": column, "min_value": low, "max_value": high},
            },
        ]
    for item in expectations:
        item.setdefault("meta", {})
    return {"name": spec.name, "expectations": expectations, "meta": {"generated_by": "edgeops expectations generate"}}


def load_suite_json(path: Path) -> dict[str, Any]:
    try:
        suite = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SpecError(str(path), [("", f"not a readable expectation suite: {err}")]) from None
    if not isinstance(suite, dict) or not isinstance(suite.get("expectations"), list):
        raise SpecError(str(path), [("expectations", "an expectation suite needs a list 'expectations'")])
    return suite


def run_expectations(ref: DatasetRef, declaration: Declaration, gx_root: Path) -> CheckOutcome:
    """Run the pipeline's GX suite over all rows (every split) and build Data Docs under gx_root."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    suite_path = declaration.resolve(declaration.spec.validation.expectations)
    suite_json = load_suite_json(suite_path)
    name = declaration.spec.name
    frame = _all_rows(ref)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(gx_root))
    # GX draws a tqdm bar per validation on stderr ("Calculating Metrics"), ignoring TQDM_DISABLE: off, in this context
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    try:
        suite = gx.ExpectationSuite(name=name, expectations=suite_json["expectations"], meta=suite_json.get("meta", {}))
    except Exception as err:  # GX raises its own types for unknown expectation types or kwargs
        raise SpecError(str(suite_path), [("expectations", f"GX rejected the suite: {err}")]) from None
    suite = context.suites.add_or_update(suite)
    source = context.data_sources.add_or_update_pandas(f"edgeops_{name}")
    asset = next((a for a in source.assets if a.name == name), None) or source.add_dataframe_asset(name)
    batch = next(
        (b for b in asset.batch_definitions if b.name == "all_rows"), None
    ) or asset.add_batch_definition_whole_dataframe("all_rows")
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"{name}_dataset", data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=f"{name}_checkpoint",
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],  # type: ignore[attr-defined]  # GX: unexported
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 10},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame.drop(columns=["split"])})

    failed: list[dict[str, Any]]
    failed, evaluated = [], 0
    for validation in result.run_results.values():
        for item in validation.results:
            evaluated += 1
            if item.success:
                continue
            config = cast("ExpectationConfiguration", item.expectation_config)  # always set on a result
            details = item.result or {}
            indices = details.get("partial_unexpected_index_list") or []
            failed.append(
                {
                    "expectation": config.type,
                    "column": config.kwargs.get("column"),
                    "unexpected_count": details.get("unexpected_count"),
                    "examples": [str(v) for v in (details.get("partial_unexpected_list") or [])[:5]],
                    "row_ids": [int(frame.loc[i, ROW_ID]) for i in indices[:5] if i in frame.index],
                    "error": (item.exception_info or {}).get("exception_message")
                    if isinstance(item.exception_info, dict)
                    else None,
                }
            )
    docs = context.get_docs_sites_urls()
    if failed:
        # The unexpected values are private rows' un-noised values: kept in an owner-only file beside the Data Docs,
        # never in Dagster metadata or MLflow (which get the rule, the column, the count and the row ids).
        from edgeops.files import write_owner_only

        values_file = gx_root / "failed_values.json"
        write_owner_only(values_file, json.dumps(failed, default=str))
        failed = [{**f, "examples": f"{len(f['examples'])} value(s) kept owner-only in {values_file}"} for f in failed]
    summary = (
        f"all {evaluated} expectations passed"
        if not failed
        else f"{len(failed)} of {evaluated} expectations failed, e.g. {failed[0]['expectation']} on "
        f"{failed[0]['column']}"
    )
    return CheckOutcome(
        "expectations",
        not failed,
        summary,
        {"evaluated": evaluated, "failed": len(failed)},
        failed[:MAX_EXAMPLES],
        {"data_docs": docs[0]["site_url"] if docs else ""},
    )


# ---------------------------------------------------------------- leakage and duplicates
def _row_hashes(frame: pd.DataFrame, features: list[str]) -> np.ndarray:
    return cast(np.ndarray, pd.util.hash_pandas_object(frame[features].round(9), index=False).to_numpy())


def check_leakage(ref: DatasetRef) -> CheckOutcome:
    """Rows whose features appear in two splits (train/test leakage)."""
    splits = {name: read_split(ref, name) for name in SPLITS}
    hashes = {
        name: pd.Series(part[ROW_ID].to_numpy(), index=_row_hashes(part, ref.features)) for name, part in splits.items()
    }
    examples, counts = [], {}
    for first, second in (("train", "test"), ("train", "validation"), ("validation", "test")):
        shared = hashes[first].index.intersection(hashes[second].index).unique()
        counts[f"{first}_{second}"] = len(shared)
        for h in shared[:MAX_EXAMPLES]:
            examples.append(
                {
                    "splits": f"{first}/{second}",
                    f"{first}_row": int(np.atleast_1d(hashes[first].loc[h])[0]),
                    f"{second}_row": int(np.atleast_1d(hashes[second].loc[h])[0]),
                }
            )
    total = sum(counts.values())
    summary = "no row appears in two splits" if total == 0 else f"{total} row(s) appear in two splits: {counts}"
    return CheckOutcome("leakage", total == 0, summary, counts, examples[:MAX_EXAMPLES])


def check_duplicates(ref: DatasetRef, max_fraction: float) -> CheckOutcome:
    counts, examples, worst = {}, [], 0.0
    for name in SPLITS:
        part = read_split(ref, name)
        hashes = pd.Series(_row_hashes(part, ref.features))
        duplicated = hashes.duplicated(keep="first").to_numpy()
        counts[name] = int(duplicated.sum())
        worst = max(worst, counts[name] / max(len(part), 1))
        for row in part.loc[duplicated, ROW_ID].head(MAX_EXAMPLES):
            examples.append({"split": name, "row": int(row)})
    passed = worst <= max_fraction
    summary = f"duplicates within splits: {counts} (worst share {worst:.2%}, allowed {max_fraction:.2%})"
    return CheckOutcome("duplicates", passed, summary, counts, examples[:MAX_EXAMPLES])


def check_class_balance(ref: DatasetRef, spec: PipelineSpec) -> CheckOutcome:
    train = read_split(ref, "train")
    shares = train[ref.label].value_counts(normalize=True)
    low, high = spec.validation.min_class_fraction, spec.validation.max_class_fraction
    bad = [{"class": str(k), "share": round(float(v), 4)} for k, v in shares.items() if not low <= v <= high]
    missing = [c for c in spec.dataset.classes if float(c) not in set(shares.index.astype(float))]
    bad += [{"class": str(c), "share": 0.0} for c in missing if low > 0]
    summary = (
        f"class shares in train within [{low:.2%}, {high:.2%}]"
        if not bad
        else f"{len(bad)} class(es) outside [{low:.2%}, {high:.2%}]"
    )
    return CheckOutcome("class_balance", not bad, summary, {"classes": len(shares)}, bad)


CHECKS = ("schema", "expectations", "leakage", "duplicates", "class_balance", "poisoning_scan")


def run_check(name: str, ref: DatasetRef, declaration: Declaration, gx_root: Path) -> CheckOutcome:
    """Run one named check and record its outcome beside the dataset (so acceptance can re-read it)."""
    spec = declaration.spec
    runners = {
        "schema": lambda: check_schema(ref, spec, declaration),
        "expectations": lambda: run_expectations(ref, declaration, gx_root),
        "leakage": lambda: check_leakage(ref),
        "duplicates": lambda: check_duplicates(ref, spec.validation.max_duplicate_fraction),
        "class_balance": lambda: check_class_balance(ref, spec),
        "poisoning_scan": lambda: check_poisoning(ref, spec),
    }
    schema = check_schema(ref, spec, declaration) if name != "schema" else None
    if (
        schema is not None
        and not schema.passed
        and any(p["column"] and "missing" in p["issue"] for p in schema.examples)
    ):
        # Later checks would only repeat the schema failure with noise; say so instead.
        outcome = CheckOutcome(
            name, False, "not run: the data does not match the declared schema (see the schema check)"
        )
    else:
        outcome = runners[name]()
    folder = Path(ref.splits["train"].path).parent / "checks"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(outcome.as_dict(), indent=1, default=str))
    return outcome


def run_validation_stage(
    raw: DatasetRef,
    declaration: Declaration,
    ledger: PrivacyLedger,
    run: LineageRun,
    *,
    dagster_run_id: str = "",
    warn: Callable[[str], object] | None = None,
) -> DatasetRef:
    """Stage: the dataset that passed every check and, without declared feature bounds, its DP feature statistics
    (charged to the ledger before the data is read), logged to MLflow."""
    from edgeops.privacy.feature_statistics import run_statistics_stage

    ref = accept_dataset(raw, declaration, run)
    statistics = run_statistics_stage(declaration.spec, ref, ledger, dagster_run_id, warn=warn)
    if statistics is None:
        return ref
    run.log_json(statistics.to_json(), "privacy/dp_statistics.json")
    run.log_params({"dp_statistics.epsilon": statistics.epsilon, "dp_statistics.mechanism": statistics.mechanism})
    return ref.model_copy(update={"dp_statistics": statistics})


def accept_dataset(ref: DatasetRef, declaration: Declaration, run: LineageRun) -> DatasetRef:
    """Stage 2: the dataset passed every check. Re-read the recorded outcomes (a guard for runs that skipped the
    checks), log the splits as MLflow datasets with their digests, and return the validated reference."""

    folder = Path(ref.splits["train"].path).parent / "checks"
    outcomes = {}
    for name in CHECKS:
        path = folder / f"{name}.json"
        if not path.exists():
            raise DataError(
                ref.source,
                f"check {name!r} has not run on dataset {ref.digest[:12]}; materialize raw_dataset with its checks",
            )
        outcomes[name] = json.loads(path.read_text())
    failed = [name for name, outcome in outcomes.items() if not outcome["passed"]]
    if failed:
        raise DataError(
            ref.source,
            f"dataset {ref.digest[:12]} failed checks {failed}: " + "; ".join(outcomes[n]["summary"] for n in failed),
        )
    for name in SPLITS:
        split = read_split(ref, name)
        run.log_dataset(
            split,
            f"{declaration.spec.name}-{name}",
            ref.splits[name].digest,
            ref.splits[name].path,
            ref.label,
            "training" if name == "train" else name,
        )
    from edgeops.lineage import DATASET_DIGEST_TAG

    run.set_tags(
        {DATASET_DIGEST_TAG: ref.digest}
    )  # lineage finds this run (and its split inputs) from a version's digest
    run.log_json(outcomes, "validation/outcomes.json")
    run.log_metrics({f"check_{name}_passed": float(o["passed"]) for name, o in outcomes.items()})
    return ref.model_copy(update={"checks": {name: o["summary"] for name, o in outcomes.items()}})
