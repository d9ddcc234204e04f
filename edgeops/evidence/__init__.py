"""Release evidence: one folder per released artifact with everything an auditor needs, verifiable offline.

Layout (all paths relative to the folder)::

    artifact/<file>, artifact/<file>.sig     the released artifact and its OpenSSF model signature (OMS)
    keys/signing_ed25519.pub                  the project's release key (attestation, card, ledger of reviews)
    keys/oms_p256.pub                         the OMS key (model_signing verify key --public_key)
    keys/device_receipt_key.txt               the benchmark device's declared receipt key (when it has one)
    declaration.yaml                          the pipeline declaration the release was built from
    data/validation.json                      split digests and the data validation result
    privacy/ledger.json                       the privacy ledger (every entry) at release time
    compression/record.json                   the compression record (recipe, parity, accuracy, size)
    benchmark/record.json, receipt.json       the benchmark record and the device's signed receipt
    card/                                     the card (JSON, MD, HTML, MCT), its signatures and its review history
    release/history.json                      promotions and rollbacks of this model (from the registry)
    mlbom.cdx.json                            CycloneDX 1.6 ML-BOM
    attestation.intoto.json                   in-toto Statement v1 in a DSSE envelope linking all of the above
    README.md                                 how to verify, with and without edgeops

`write` builds it at promotion (before the production alias moves: no release without its evidence); `verify`
checks it with nothing but the folder (and, optionally, keys the auditor pins).

Every name is importable from here (``from edgeops import evidence; evidence.verify(folder)``); the code lives in:

- ``build``: write (gather, then finish: ML-BOM, attestation, README, verified), evidence_folder, predicate, card_bom
- ``check``: verify, copy and EvidenceError

The private helpers are re-exported too (``name as name``), so whatever reached into the former edgeops/evidence.py
still works; a test that patches `gather` under `write` patches it in edgeops.evidence.build, where write looks it up.
"""

from __future__ import annotations

from edgeops.evidence.build import README, card_bom, evidence_folder, finish, gather, predicate, readme, write
from edgeops.evidence.build import _download as _download
from edgeops.evidence.build import _validation_passed as _validation_passed
from edgeops.evidence.build import _write_json as _write_json
from edgeops.evidence.check import EvidenceError, copy, verify

__all__ = [
    "README",
    "EvidenceError",
    "card_bom",
    "copy",
    "evidence_folder",
    "finish",
    "gather",
    "predicate",
    "readme",
    "verify",
    "write",
]
