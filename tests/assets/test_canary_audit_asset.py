"""The canary audit in the pipeline: off by default; when declared, an asset whose check never passes an audit that
could not have failed, and whose outcome reaches the model card."""

from __future__ import annotations

import dagster as dg
from helpers import table_declaration, table_frame

from edgeops.records import CanaryAuditRecord


def audit_declaration(enabled: bool) -> dict:
    spec = table_declaration()
    spec["privacy"]["audit"] = {"enabled": enabled, "canaries": 60}
    return spec


def test_the_canary_audit_is_off_by_default_and_the_card_says_how_to_turn_it_on(project):
    from edgeops.cards.sections import canary_audit_section
    from pipelines.wiring import build_definitions

    project.write_csv(table_frame())
    project.declare(table_declaration())
    defs = build_definitions(project.settings())
    keys = {key.path[-1] for a in defs.assets for key in a.keys}
    assert "dp_model" in keys and "dp_canary_audit" not in keys
    checks = {key.name for c in defs.asset_checks for key in c.check_keys}
    assert "audit_consistent_with_claim" not in checks  # the membership-inference check that could not fail is retired
    section = canary_audit_section(None)
    assert section["outcome"] == "not run" and "privacy.audit.enabled: true" in section["summary"]


def test_a_declared_audit_materializes_and_its_check_never_passes_an_underpowered_audit(project):
    from pipelines.instance import ensure_instance
    from pipelines.wiring import build_definitions, resources_for

    project.write_csv(table_frame())
    project.declare(audit_declaration(True))
    defs = build_definitions(project.settings())
    assets = [a for a in defs.assets if any(k.path[0] == "tabular" for k in a.keys)]
    checks = [c for c in defs.asset_checks if next(iter(c.check_keys)).asset_key.path[0] == "tabular"]
    selection = [dg.AssetKey(["tabular", n]) for n in ("raw_dataset", "validated_dataset", "dp_canary_audit")]
    result = dg.materialize(
        [*assets, *checks],
        selection=selection,
        instance=ensure_instance(project.settings()),
        resources=resources_for(project.settings()),
        raise_on_error=False,
    )
    record = result.output_for_node("tabular__dp_canary_audit")
    assert isinstance(record, CanaryAuditRecord)
    assert record.private_rows_read == 0 and record.canaries == 60
    assert record.outcome in ("consistent", "violated", "underpowered")
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "canary_audit_outcome")
    assert evaluation.passed == (record.outcome == "consistent")
    if record.outcome == "underpowered":
        assert evaluation.severity == dg.AssetCheckSeverity.WARN
    from edgeops.cards.sections import canary_audit_section

    assert canary_audit_section(record)["summary"] == record.summary
