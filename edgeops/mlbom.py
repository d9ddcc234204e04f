"""CycloneDX 1.6 ML-BOM of a release: the model component with its model card, the data it was trained and
evaluated on (by digest), and the Python libraries of the environment that built it.

`cyclonedx-python-lib` 11.12 has no modelCard in its object model (upstream issue #912), so the BOM is emitted as
JSON here and validated with that library's own validator against the official CycloneDX 1.6 JSON schema it ships
(bom-1.6.SNAPSHOT.schema.json with spdx and jsf; strict mode, offline). A BOM that fails the schema is refused.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from importlib import metadata
from typing import Any

from edgeops.errors import EdgeopsError

SPEC_VERSION = "1.6"
MODEL_REF = "model"


class MlBomError(EdgeopsError):
    pass


def _prop(name: str, value: Any) -> dict[str, Any]:
    return {"name": f"edgeops:{name}", "value": value if isinstance(value, str) else json.dumps(value)}


def library_components() -> list[dict[str, Any]]:
    """Every distribution installed in this environment (the locked one: constraints.txt pins what is installed)."""
    seen: set[str] = set()
    components: list[dict[str, Any]] = []  # CycloneDX JSON components
    for dist in metadata.distributions():
        name, version = dist.name, dist.version
        if not name or name.lower() in seen:
            continue
        seen.add(name.lower())
        normalised = name.lower().replace("_", "-").replace(".", "-")
        purl = f"pkg:pypi/{normalised}@{version}"
        component: dict[str, Any] = {"type": "library", "bom-ref": purl, "name": name, "version": version, "purl": purl}
        license_text = (dist.metadata.get_all("License-Expression") or [None])[0]
        if license_text and len(license_text) < 100:
            component["licenses"] = [{"expression": license_text}]
        components.append(component)
    return sorted(components, key=lambda c: c["name"].lower())


def build(
    *,
    model: str,
    version: str,
    target: str,
    artifact_name: str,
    artifact_sha256: str,
    family: str,
    task: str,
    inputs: str,
    outputs: str,
    datasets: dict[str, str],
    metrics: list[dict[str, Any]],
    privacy: dict[str, Any],
    on_device: dict[str, Any],
    considerations: list[str],
    card_sha256: str,
    tool_version: str,
) -> dict[str, Any]:
    """`datasets`: split name -> digest; `metrics`: [{"type", "value", "slice"}]; `privacy`: {"epsilon", "delta", ...};
    `on_device`: the verified receipt's numbers (or why they were not measured)."""
    data_components = [
        {
            "type": "data",
            "bom-ref": f"data:{split}",
            "name": f"{model} {split} split",
            "data": [
                {
                    "type": "dataset",
                    "name": f"{split} split",
                    "description": f"digest {digest}",
                    "classification": "private" if split == "train" else "held-out",
                }
            ],
            "properties": [_prop("digest", digest)],
        }
        for split, digest in sorted(datasets.items())
    ]
    model_component = {
        "type": "machine-learning-model",
        "bom-ref": MODEL_REF,
        "name": model,
        "version": str(version),
        "hashes": [{"alg": "SHA-256", "content": artifact_sha256}],
        "properties": [
            _prop("target", target),
            _prop("artifact", artifact_name),
            _prop("epsilon", f"{privacy['epsilon']:.6g}"),
            _prop("delta", f"{privacy['delta']:.6g}"),
            _prop("privacy_composition", privacy.get("composition", "basic (sums)")),
            _prop("card_sha256", card_sha256),
            _prop("on_device", on_device),
        ],
        "modelCard": {
            "modelParameters": {
                "approach": {"type": "supervised"},
                "task": task,
                "architectureFamily": family,
                "modelArchitecture": family,
                "datasets": [{"ref": c["bom-ref"]} for c in data_components],
                "inputs": [{"format": inputs}],
                "outputs": [{"format": outputs}],
            },
            "quantitativeAnalysis": {
                "performanceMetrics": [{k: str(v) for k, v in m.items() if v is not None} for m in metrics]
            },
            "considerations": {
                "technicalLimitations": considerations,
                "ethicalConsiderations": [
                    {
                        "name": "privacy of the training data",
                        "mitigationStrategy": f"differential privacy, (epsilon {privacy['epsilon']:.4g}, "
                        f"delta {privacy['delta']:.3g}) for the released artifact",
                    }
                ],
            },
            "properties": [_prop("epsilon", f"{privacy['epsilon']:.6g}"), _prop("delta", f"{privacy['delta']:.6g}")],
        },
    }
    libraries = library_components()
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "tools": {"components": [{"type": "application", "name": "edgeops", "version": tool_version}]},
            "component": {
                "type": "machine-learning-model",
                "bom-ref": "release",
                "name": f"{model} v{version}",
                "version": str(version),
            },
        },
        "components": [model_component, *data_components, *libraries],
        "dependencies": [
            {"ref": MODEL_REF, "dependsOn": [c["bom-ref"] for c in data_components]},
            {"ref": "release", "dependsOn": [MODEL_REF]},
        ],
    }
    validate(bom)
    return bom


def validate(bom: dict[str, Any] | str, where: str = "ML-BOM") -> None:
    """Against the official CycloneDX 1.6 JSON schema (cyclonedx-python-lib's strict validator)."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    text = bom if isinstance(bom, str) else json.dumps(bom)
    try:
        spec_version = json.loads(text).get("specVersion")
    except ValueError as err:
        raise MlBomError(f"{where}: not JSON ({err})") from None
    if spec_version != SPEC_VERSION:
        raise MlBomError(f"{where}: specVersion {spec_version!r}, expected {SPEC_VERSION!r}")
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        detail = getattr(error, "data", None)
        at = "/".join(str(p) for p in getattr(detail, "absolute_path", [])) or "(root)"
        message = getattr(detail, "message", str(error))
        raise MlBomError(f"{where}: fails the CycloneDX 1.6 schema at {at}: {message[:300]}")


def model_component(bom: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in bom["components"] if c.get("bom-ref") == MODEL_REF)
