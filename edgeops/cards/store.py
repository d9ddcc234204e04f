"""Cards on disk: model_cards/generated/<pipeline>/<version>/ holds
card.json (the document), card.sig.json (ed25519 over card.json), card.md, card.html, card.mct.json,
pareto.png, history.json (signed review entries, each chained to the card and to the entry before it) and card.oms.sig
(an OpenSSF model signature over the folder, edgeops.oms).

`verify` re-hashes the evidence from disk and MLflow, checks the signature against the project's public key,
and says precisely what changed or is missing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeops.errors import CardError
from edgeops.signing import (
    canonical_bytes,
    fingerprint,
    load_public,
    public_key_path,
    public_pem,
    sign,
    signing_key,
    verify_signature,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from mlflow import MlflowClient

DECISIONS = ("approve", "reject")


def card_folder(cards_dir: Path, pipeline: str, version: str) -> Path:
    return cards_dir / "generated" / pipeline / version


def resolve_card(path: str | Path) -> Path:
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if not (folder / "card.json").is_file():
        raise CardError(f"{path}: no card.json here")
    return folder


def validate_card_schema(card: dict[str, Any], cards_dir: Path) -> None:
    """Refuse a card that does not match `Card` (edgeops.cards.record) or the card schema shipped with edgeops (the one
    auditors validate with, generated from `Card`). Both read the card as card.json will hold it, lists and text."""
    import jsonschema
    from pydantic import ValidationError

    from edgeops.cards.record import Card
    from edgeops.resources import CARD_SCHEMA, read_card_file

    document = json.loads(json.dumps(card, default=str))
    schema = json.loads(read_card_file(CARD_SCHEMA, cards_dir))
    try:
        jsonschema.validate(document, schema)
    except jsonschema.ValidationError as err:
        raise CardError(
            "card does not match the card schema (edgeops/resources/model_cards/card.schema.json) at "
            f"{'/'.join(map(str, err.absolute_path))}: {err.message}"
        ) from None
    try:
        Card.model_validate(document)
    except ValidationError as err:
        first = err.errors()[0]
        raise CardError(
            f"card does not match the Card record (edgeops.cards.record) at {'/'.join(map(str, first['loc']))}: "
            f"{first['msg']}"
        ) from None


def write_card(
    card: dict[str, Any], cards_dir: Path, home: Path, key_file: str | None = None, mlflow_ui: str | None = None
) -> Path:
    from edgeops.cards.html_page import to_html
    from edgeops.cards.markdown import to_markdown
    from edgeops.cards.mct import to_mct, validate_mct
    from edgeops.cards.render import pareto_png

    key = signing_key(home, key_file)
    card["signature_fingerprint"] = fingerprint(key.public_key())
    validate_card_schema(card, cards_dir)
    folder = card_folder(cards_dir, card["pipeline"], card["version"])
    if (folder / "card.json").exists():
        # A regenerated card starts a new review history; the old card and its signed history stay for the audit.
        superseded = (
            folder / "superseded" / json.loads((folder / "card.json").read_text())["generated_at"].replace(":", "")
        )
        superseded.mkdir(parents=True, exist_ok=True)
        for path in folder.iterdir():
            if path.is_file():
                path.rename(superseded / path.name)
    folder.mkdir(parents=True, exist_ok=True)
    mct = to_mct(card)
    validate_mct(mct, cards_dir)
    chart = pareto_png(card)
    markdown = to_markdown(card)
    files = {
        "card.json": json.dumps(card, indent=1, default=str),
        "card.md": markdown,
        "card.html": to_html(card, chart, [], mlflow_ui),
        "card.mct.json": json.dumps(mct, indent=1),
    }
    for name, text in files.items():
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(folder / name)
    if chart:
        (folder / "pareto.png").write_bytes(chart)
    signature = {**sign(card, key), "card_sha256": hashlib.sha256(canonical_bytes(card)).hexdigest()}
    (folder / "card.sig.json").write_text(json.dumps(signature, indent=1))
    (folder / "signing_key.pub").write_bytes(public_pem(key.public_key()))
    if not (folder / "history.json").exists():
        (folder / "history.json").write_text("[]")
    if mlflow_ui:
        (folder / "render.json").write_text(json.dumps({"mlflow_ui": mlflow_ui}))  # for re-rendering after a review
    from edgeops.oms import sign_card_folder

    sign_card_folder(folder, home)  # OpenSSF model signature over the folder (history and the HTML view left out)
    return folder


def render_html(folder: Path) -> None:
    """card.html again from card.json and the signed history, so the page shows the review state (card.json is
    signed before any review and always says pending; the HTML is a view and is not signed)."""
    from edgeops.cards.html_page import to_html

    card = json.loads((folder / "card.json").read_text())
    chart = (folder / "pareto.png").read_bytes() if (folder / "pareto.png").exists() else None
    options = json.loads((folder / "render.json").read_text()) if (folder / "render.json").exists() else {}
    tmp = folder / ".card.html.tmp"
    tmp.write_text(to_html(card, chart, _history(folder), options.get("mlflow_ui")))
    tmp.replace(folder / "card.html")


def _trusted_public_key(home: Path, public_key_file: str | None) -> Ed25519PublicKey:
    path = Path(public_key_file) if public_key_file else public_key_path(home)
    if not path.is_file():
        raise CardError(f"{path}: the project's public key is missing; pass --public-key")
    return load_public(path.read_bytes(), str(path))


def verify_card(
    path: str | Path, home: Path, client: MlflowClient | None = None, public_key_file: str | None = None
) -> list[str]:
    """Everything wrong with the card, empty if it verifies. Never raises for a bad card: it reports."""
    folder = resolve_card(path)
    problems: list[str] = []
    try:
        card = json.loads((folder / "card.json").read_text())
    except json.JSONDecodeError as err:
        return [f"card.json is not valid JSON ({err})"]
    try:
        signature = json.loads((folder / "card.sig.json").read_text())
    except (OSError, json.JSONDecodeError):
        return ["card.sig.json is missing or unreadable: the card is not signed"]
    public_key = _trusted_public_key(home, public_key_file)
    if signature.get("key_fingerprint") != fingerprint(public_key):
        problems.append(
            f"signed with key {signature.get('key_fingerprint')}, not the project's key {fingerprint(public_key)}"
        )
    elif not verify_signature(card, signature, public_key):
        problems.append(
            "signature does not match card.json: the card was edited after signing"
            + (
                f" (sha256 now {hashlib.sha256(canonical_bytes(card)).hexdigest()[:16]}, signed "
                f"{signature.get('card_sha256', '')[:16]})"
            )
        )
    for item in card.get("evidence_manifest", []):
        file_path = Path(item["path"])
        if not file_path.is_file():
            problems.append(f"evidence missing on disk: {file_path}")
        else:
            actual = hashlib.sha256(file_path.read_bytes()).hexdigest()
            if actual != item["sha256"]:
                problems.append(
                    f"evidence changed on disk: {file_path} sha256 {actual[:16]}, card says {item['sha256'][:16]}"
                )
        if client is not None and item.get("mlflow_run_id"):
            try:
                tags = client.get_run(item["mlflow_run_id"]).data.tags
            except Exception:
                problems.append(f"evidence missing from MLflow: run {item['mlflow_run_id']} not found")
                continue
            recorded = tags.get(item["mlflow_tag"])
            if recorded != item["sha256"]:
                problems.append(
                    f"MLflow run {item['mlflow_run_id']} records {item['mlflow_tag']}={str(recorded)[:16]}, card says "
                    f"{item['sha256'][:16]}"
                )
            problems += _rehash_from_mlflow(client, item)
    if client is not None:
        problems += _check_numbers(card, client)
    problems += _verify_history(folder, card, public_key)
    return problems


def _rehash_from_mlflow(client: MlflowClient, item: dict[str, Any]) -> list[str]:
    """Download the artifact the card cites from the MLflow run itself and hash it again."""
    import tempfile

    from mlflow.artifacts import download_artifacts

    artifact_path = item["mlflow_tag"].removeprefix("sha256.")
    with tempfile.TemporaryDirectory(prefix="edgeops-verify-") as folder:
        try:
            local = download_artifacts(
                run_id=item["mlflow_run_id"],
                artifact_path=artifact_path,
                dst_path=folder,
                tracking_uri=client.tracking_uri,
            )
        except Exception as err:
            return [
                f"evidence missing from MLflow: run {item['mlflow_run_id']} has no artifact {artifact_path} "
                f"({type(err).__name__})"
            ]
        actual = hashlib.sha256(Path(local).read_bytes()).hexdigest()
    if actual != item["sha256"]:
        return [
            f"evidence changed in MLflow: run {item['mlflow_run_id']} artifact {artifact_path} sha256 {actual[:16]}, "
            f"card says {item['sha256'][:16]}"
        ]
    return []


def walk_evidence(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every {"value", "mlflow_run_id", "metric"} in the card, with its path."""
    if isinstance(node, dict):
        if {"value", "mlflow_run_id", "metric"} <= set(node):
            yield path, node
        for key, child in node.items():
            yield from walk_evidence(child, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from walk_evidence(child, f"{path}.{index}")


def _check_numbers(card: dict[str, Any], client: MlflowClient) -> list[str]:
    runs: dict[str, dict[str, float] | None]
    problems, runs = [], {}
    for path, item in walk_evidence(card):
        run_id = item["mlflow_run_id"]
        if run_id not in runs:
            try:
                runs[run_id] = client.get_run(run_id).data.metrics
            except Exception:
                runs[run_id] = None
        metrics = runs[run_id]
        if metrics is None:
            problems.append(f"{path}: MLflow run {run_id} not found")
        elif item["metric"] not in metrics:
            problems.append(f"{path}: MLflow run {run_id} has no metric {item['metric']}")
        elif abs(metrics[item["metric"]] - item["value"]) > 1e-9 * max(1.0, abs(item["value"])):
            problems.append(f"{path}: card says {item['value']}, MLflow run {run_id} says {metrics[item['metric']]}")
    return problems


def _history(folder: Path) -> list[dict[str, Any]]:
    return json.loads((folder / "history.json").read_text()) if (folder / "history.json").exists() else []


def _verify_history(folder: Path, card: dict[str, Any], public_key: Ed25519PublicKey) -> list[str]:
    problems, previous = [], ""
    card_hash = hashlib.sha256(canonical_bytes(card)).hexdigest()
    for index, entry in enumerate(_history(folder)):
        body = {k: v for k, v in entry.items() if k != "signature"}
        if body.get("card_sha256") != card_hash:
            problems.append(f"history entry {index} ({body.get('kind')}) was made for another version of the card")
        if body.get("previous_entry_sha256", "") != previous:
            problems.append(
                f"history entry {index} does not chain to the entry before it (entries removed or reordered)"
            )
        if not verify_signature(body, entry.get("signature", {}), public_key):
            problems.append(f"history entry {index} ({body.get('kind')} by {body.get('reviewer')}) has a bad signature")
        previous = hashlib.sha256(canonical_bytes(entry)).hexdigest()
    return problems


def append_history(folder: Path, home: Path, entry: dict[str, Any], key_file: str | None = None) -> dict[str, Any]:
    card = json.loads((folder / "card.json").read_text())
    history = _history(folder)
    body = {
        **entry,
        "card_id": card["card_id"],
        "card_sha256": hashlib.sha256(canonical_bytes(card)).hexdigest(),
        "previous_entry_sha256": hashlib.sha256(canonical_bytes(history[-1])).hexdigest() if history else "",
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    signed = {**body, "signature": sign(body, signing_key(home, key_file))}
    history.append(signed)
    tmp = folder / ".history.json.tmp"
    tmp.write_text(json.dumps(history, indent=1))
    tmp.replace(folder / "history.json")
    return signed


def review_card(
    path: str | Path, home: Path, reviewer: str, decision: str, comment: str, client: MlflowClient | None = None
) -> dict[str, Any]:
    """A signed review in the card's history (refused if the card does not verify), mirrored as MLflow tags."""
    if decision not in DECISIONS:
        raise CardError(f"--decision must be one of {DECISIONS}")
    if not reviewer.strip():
        raise CardError("--reviewer is required")
    folder = resolve_card(path)
    problems = verify_card(folder, home, client)
    if problems:
        raise CardError("cannot review a card that does not verify:\n  " + "\n  ".join(problems))
    entry = append_history(
        folder, home, {"kind": "review", "reviewer": reviewer, "decision": decision, "comment": comment}
    )
    render_html(folder)
    card = json.loads((folder / "card.json").read_text())
    if client is not None:
        from mlflow.entities import RunTag

        from edgeops.lineage import CARD_REVIEW_TAG

        for run_id in {card["lineage"]["mlflow_runs"].get("dp_model"), card.get("mlflow_run_id")} - {None}:
            client.log_batch(
                run_id,
                tags=[
                    RunTag("edgeops.review.decision", decision),
                    RunTag("edgeops.review.reviewer", reviewer),
                    RunTag("edgeops.review.at", entry["at"]),
                    RunTag("edgeops.card_id", card["card_id"]),
                ],
            )
        for target in card["lineage"]["registered_models"].values():
            if target.get("name") and target.get("version"):
                client.set_model_version_tag(target["name"], str(target["version"]), CARD_REVIEW_TAG, decision)
    return entry


def review_status(folder: Path) -> str:
    reviews = [e for e in _history(folder) if e.get("kind") == "review"]
    return "pending" if not reviews else ("approved" if reviews[-1]["decision"] == "approve" else "rejected")


def diff_cards(a: str | Path, b: str | Path) -> list[str]:
    first = json.loads((resolve_card(a) / "card.json").read_text())
    second = json.loads((resolve_card(b) / "card.json").read_text())
    lines = []

    def number(node: Any) -> Any:
        return node["value"] if isinstance(node, dict) and "value" in node else node

    def compare(x: Any, y: Any, path: str) -> None:
        if path.endswith(("generated_at", "mlflow_run_id", "lineage.software")) or path.startswith("lineage"):
            return
        if (
            isinstance(x, dict)
            and isinstance(y, dict)
            and not ({"value", "metric"} <= set(x) and {"value", "metric"} <= set(y))
        ):
            for key in sorted(set(x) | set(y)):
                compare(x.get(key), y.get(key), f"{path}.{key}" if path else key)
        elif (
            isinstance(x, list) and isinstance(y, list) and len(x) == len(y) and all(isinstance(i, dict) for i in x + y)
        ):
            for index, (i, j) in enumerate(zip(x, y, strict=False)):
                compare(i, j, f"{path}.{i.get('id') or i.get('name') or index}")
        elif number(x) != number(y):
            lines.append(
                f"{path}: {json.dumps(number(x), default=str)[:120]} -> {json.dumps(number(y), default=str)[:120]}"
            )

    compare(first, second, "")
    for name, folder in (("A", resolve_card(a)), ("B", resolve_card(b))):
        lines.append(f"reviews {name}: {review_status(folder)} ({len(_history(folder))} history entries)")
    return lines
