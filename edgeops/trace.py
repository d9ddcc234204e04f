"""`edgeops lineage`: from a registered version, an artifact's sha256 or a card id, back to the split digests and the
validated-data run, forward to every benchmark, robustness and trainability run of that artifact, its card and its
release decisions. From MLflow records alone, through the tags defined once in edgeops/lineage.py (the stages write
them, this module queries them).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from edgeops.errors import EdgeopsError
from edgeops.lineage import (
    ARTIFACT_SHA256_TAG,
    CARD_FOLDER_TAG,
    CARD_ID_TAG,
    CARD_REVIEW_TAG,
    DATASET_DIGEST_TAG,
    RELEASE_ACTION_TAG,
    RELEASE_DECISION_TAG,
    RELEASE_MODEL_TAG,
    RELEASE_REASON_TAG,
    RELEASE_VERSION_TAG,
    STAGE_BENCHMARK,
    STAGE_CARD,
    STAGE_RAW,
    STAGE_ROBUSTNESS,
    STAGE_TAG,
    STAGE_TRAINABILITY,
    STAGE_VALIDATED,
    TARGET_TAG,
    VERSION_DATASET_DIGEST_TAG,
    VERSION_PARENT_RUN_TAG,
    VERSION_PARENT_WEIGHTS_TAG,
    VERSION_SHA256_TAG,
)
from edgeops.records import LATENCY_B1_P95_MS

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import ModelVersion, Run


class LineageNotFound(EdgeopsError):
    """Nothing in MLflow matches the reference."""


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RunLink(_Record):
    run_id: str
    name: str
    status: str
    metrics: dict[str, float] = {}
    device: str | None = None


class DatasetLink(_Record):
    digest: str | None
    splits: dict[str, str]  # MLflow dataset name -> its digest, as the validated-data run logged them
    validated_run: str | None
    raw_run: str | None


class CardLink(_Record):
    card_id: str | None
    folder: str | None
    review: str
    run_id: str | None


class ReleaseLink(_Record):
    run_id: str
    action: str | None
    decision: str | None
    reason: str | None


class Chain(_Record):
    model: str
    version: str
    target: str | None
    sha256: str | None
    aliases: list[str]
    recipe: str | None
    compression_run: str
    dp_model_run: str | None
    dp_weights_sha256: str | None
    dp_epsilon: float | None
    dataset: DatasetLink
    benchmarks: list[RunLink]
    robustness: list[RunLink]
    trainability: list[RunLink]
    card: CardLink
    releases: list[ReleaseLink]


class Trace(_Record):
    ref: str
    kind: Literal["model_version", "artifact_sha256", "card_id"]
    chains: list[Chain]


_SHA256 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"(?:models:/)?([^/@\s]+)/(\d+)")


def _quote(value: str) -> str:
    return str(value).replace("'", "\\'")


def _versions(client: MlflowClient, ref: str) -> tuple[str, list[ModelVersion]]:
    if _SHA256.fullmatch(ref):
        return "artifact_sha256", client.search_model_versions(f"tags.`{VERSION_SHA256_TAG}` = '{ref}'")
    match = _VERSION.fullmatch(ref)
    if match:
        try:
            return "model_version", [client.get_model_version(match.group(1), match.group(2))]
        except Exception:
            pass  # a card id has the same shape (pipeline/version)
    cards = client.search_model_versions(f"tags.`{CARD_ID_TAG}` = '{_quote(ref)}'")
    return ("card_id" if cards or not match else "model_version"), cards


def _stage_runs(client: MlflowClient, experiment: str, stage: str, extra: str = "") -> list[Any]:  # mlflow Runs
    return client.search_runs(
        [experiment],
        f"tags.`{STAGE_TAG}` = '{stage}'" + (f" and {extra}" if extra else ""),
        max_results=500,
        order_by=["attributes.start_time ASC"],
    )


def _link(run: Run) -> RunLink:
    return RunLink(
        run_id=run.info.run_id,
        name=run.info.run_name,
        status=run.info.status,
        metrics=dict(run.data.metrics),
        device=run.data.params.get("device"),
    )


def trace(client: MlflowClient, ref: str) -> Trace:
    """The lineage of every registered version that `ref` names. Raises LineageNotFound when none does."""
    ref = ref.strip()
    kind, versions = _versions(client, ref)
    if not versions:
        what = {
            "artifact_sha256": "no registered version has artifact sha256",
            "model_version": "no registered model version",
            "card_id": "no registered version carries card id",
        }[kind]
        raise LineageNotFound(
            f"{what} {ref!r} in MLflow (looked for a model version name/version, an artifact sha256 or a card id)"
        )
    chains = []
    for mv in versions:
        tags = mv.tags
        compression = client.get_run(mv.run_id)
        experiment = compression.info.experiment_id
        parent_id = tags.get(VERSION_PARENT_RUN_TAG)
        parent = client.get_run(parent_id) if parent_id else None
        digest = tags.get(VERSION_DATASET_DIGEST_TAG)
        validated = (
            _stage_runs(client, experiment, STAGE_VALIDATED, f"tags.`{DATASET_DIGEST_TAG}` = '{digest}'")
            if digest
            else []
        )
        raw = _stage_runs(client, experiment, STAGE_RAW, f"tags.`{DATASET_DIGEST_TAG}` = '{digest}'") if digest else []
        sha = tags.get(VERSION_SHA256_TAG)
        measured = {
            stage: [_link(r) for r in _stage_runs(client, experiment, stage, f"tags.`{ARTIFACT_SHA256_TAG}` = '{sha}'")]
            if sha
            else []
            for stage in (STAGE_BENCHMARK, STAGE_ROBUSTNESS, STAGE_TRAINABILITY)
        }
        card_id = tags.get(CARD_ID_TAG)
        card_runs = (
            _stage_runs(client, experiment, STAGE_CARD, f"tags.`{CARD_ID_TAG}` = '{_quote(card_id)}'")
            if card_id
            else []
        )
        releases = client.search_runs(
            [experiment],
            f"tags.`{RELEASE_MODEL_TAG}` = '{_quote(mv.name)}' and tags.`{RELEASE_VERSION_TAG}` = '{mv.version}'",
            max_results=500,
            order_by=["attributes.start_time ASC"],
        )
        last_validated = validated[-1] if validated else None
        chains.append(
            Chain(
                model=mv.name,
                version=str(mv.version),
                target=tags.get(TARGET_TAG),
                sha256=sha,
                aliases=list(mv.aliases),
                recipe=tags.get("edgeops.recipe"),
                compression_run=mv.run_id,
                dp_model_run=parent.info.run_id if parent else None,
                dp_weights_sha256=tags.get(VERSION_PARENT_WEIGHTS_TAG),
                dp_epsilon=parent.data.metrics.get("epsilon") if parent else None,
                dataset=DatasetLink(
                    digest=digest,
                    splits={i.dataset.name: i.dataset.digest for i in last_validated.inputs.dataset_inputs}
                    if last_validated
                    else {},
                    validated_run=last_validated.info.run_id if last_validated else None,
                    raw_run=raw[-1].info.run_id if raw else None,
                ),
                benchmarks=measured[STAGE_BENCHMARK],
                robustness=measured[STAGE_ROBUSTNESS],
                trainability=measured[STAGE_TRAINABILITY],
                card=CardLink(
                    card_id=card_id,
                    folder=tags.get(CARD_FOLDER_TAG),
                    review=tags.get(CARD_REVIEW_TAG, "pending"),
                    run_id=card_runs[-1].info.run_id if card_runs else None,
                ),
                releases=[
                    ReleaseLink(
                        run_id=r.info.run_id,
                        action=r.data.tags.get(RELEASE_ACTION_TAG),
                        decision=r.data.tags.get(RELEASE_DECISION_TAG),
                        reason=r.data.tags.get(RELEASE_REASON_TAG),
                    )
                    for r in releases
                ],
            )
        )
    return Trace(ref=ref, kind=kind, chains=chains)


def _short(value: str | None, n: int = 12) -> str:
    return (value or "?")[:n]


def text_lines(result: Trace) -> list[str]:
    lines = []
    for c in result.chains:
        lines.append(
            f"{c.model} v{c.version} (target {c.target or '?'}) artifact sha256 {_short(c.sha256, 16)}"
            + (f" aliases {', '.join(c.aliases)}" if c.aliases else "")
        )
        d = c.dataset
        lines.append(
            f"  <- dataset {_short(d.digest, 16)}: validated run {d.validated_run or 'not found'}, raw run "
            f"{d.raw_run or 'not found'}"
        )
        for name, digest in sorted(d.splits.items()):
            lines.append(f"       split {name} {_short(digest, 16)}")
        lines.append(
            f"  <- DP model run {c.dp_model_run or 'not found'} (weights {_short(c.dp_weights_sha256, 16)}, epsilon "
            f"{c.dp_epsilon})"
        )
        lines.append(f"  <- compression run {c.compression_run}")
        for label, runs in (
            ("benchmark", c.benchmarks),
            ("robustness", c.robustness),
            ("trainability", c.trainability),
        ):
            if not runs:
                lines.append(f"  -> {label}: no run for this artifact")
            for r in runs:
                extra = (
                    f", p95 {r.metrics[LATENCY_B1_P95_MS]:.4g} ms at batch 1" if LATENCY_B1_P95_MS in r.metrics else ""
                )
                lines.append(
                    f"  -> {label} run {r.run_id} ({r.status}{', device ' + r.device if r.device else ''}{extra})"
                )
        lines.append(
            f"  -> card {c.card.card_id or 'none yet'}"
            + (f" run {c.card.run_id}, review {c.card.review}, {c.card.folder}" if c.card.card_id else "")
        )
        if not c.releases:
            lines.append("  -> releases: none")
        for release in c.releases:
            lines.append(
                f"  -> release {release.action}: {release.decision} "
                f"(run {release.run_id}; {(release.reason or '')[:120]})"
            )
    return lines


def to_dot(result: Trace) -> str:
    """Graphviz text: `edgeops lineage REF --dot | dot -Tsvg > lineage.svg`."""
    out = ["digraph lineage {", "  rankdir=LR;", '  node [shape=box, fontname="Helvetica", fontsize=10];']
    seen: set[str] = set()

    def node(key: str, label: str, colour: str = "#57606a") -> str:
        ident = '"' + key.replace('"', "'") + '"'
        if key not in seen:
            seen.add(key)
            out.append(f'  {ident} [label="{label}", color="{colour}"];')
        return ident

    def edge(a: str, b: str) -> None:
        line = f"  {a} -> {b};"
        if line not in out:
            out.append(line)

    for c in result.chains:
        version = node(
            f"version:{c.model}/{c.version}", f"{c.model} v{c.version}\\nsha256 {_short(c.sha256)}", "#0969da"
        )
        compression = node(f"run:{c.compression_run}", f"compression run\\n{_short(c.compression_run, 8)}")
        edge(compression, version)
        if c.dp_model_run:
            edge(
                node(
                    f"run:{c.dp_model_run}",
                    f"DP model run\\n{_short(c.dp_model_run, 8)}\\nweights {_short(c.dp_weights_sha256)}",
                ),
                compression,
            )
        dataset = node(f"dataset:{c.dataset.digest}", f"dataset\\n{_short(c.dataset.digest)}", "#1a7f37")
        if c.dataset.validated_run:
            validated = node(f"run:{c.dataset.validated_run}", f"validated run\\n{_short(c.dataset.validated_run, 8)}")
            edge(dataset, validated)
            for name, digest in sorted(c.dataset.splits.items()):
                edge(validated, node(f"split:{name}:{digest}", f"{name}\\n{_short(digest)}", "#1a7f37"))
            if c.dp_model_run:
                edge(validated, f'"run:{c.dp_model_run}"')
        elif c.dp_model_run:
            edge(dataset, f'"run:{c.dp_model_run}"')
        for label, runs in (
            ("benchmark", c.benchmarks),
            ("robustness", c.robustness),
            ("trainability", c.trainability),
        ):
            for r in runs:
                edge(version, node(f"run:{r.run_id}", f"{label} run\\n{_short(r.run_id, 8)}"))
        if c.card.card_id:
            card = node(f"card:{c.card.card_id}", f"card {c.card.card_id}\\nreview {c.card.review}", "#8250df")
            edge(version, card)
            for release in c.releases:
                edge(card, node(f"run:{release.run_id}", f"release {release.action}\\n{release.decision}", "#bf8700"))
        else:
            for release in c.releases:
                edge(
                    version, node(f"run:{release.run_id}", f"release {release.action}\\n{release.decision}", "#bf8700")
                )
    out.append("}")
    return "\n".join(out) + "\n"
