"""The card's HTML and Markdown views, rendered from a card recorded by a real run of the tests' table pipeline
(tests/unit/data/card_tabular.json: cpu_float passed its checks, cpu_int8 failed its size budget). The printed PDF
is checked in tests/ui/test_browser.py."""

from __future__ import annotations

import copy
import re

import pytest
from helpers import TABLE_CARD, visible

from edgeops.cards.html_page import review_state, target_outcome, to_html
from edgeops.cards.markdown import to_markdown
from edgeops.cards.render import lineage_rows


@pytest.fixture
def card():
    return copy.deepcopy(TABLE_CARD)


def test_no_markdown_syntax_and_no_empty_out_of_scope(card):
    text, _ = visible(to_html(card, None))
    assert "**" not in text and "```" not in text and "| ---" not in text
    assert "Out of scope" not in text  # none declared: no empty line for them
    card["intended_use"]["out_of_scope"] = ["medical diagnosis"]
    text, _ = visible(to_html(card, None))
    assert "Out of scope: medical diagnosis" in text
    markdown = to_markdown(TABLE_CARD)
    assert "Out of scope:" not in markdown and "```json" not in markdown


def test_summary_comes_first_and_states_purpose_guarantee_outcomes_and_review(card):
    html = to_html(card, None)
    summary = html[html.index('id="summary"') : html.index("</section>")]
    text, _ = visible(summary)
    assert html.index('id="summary"') < html.index('id="privacy"')
    assert card["model_details"]["overview"] in text and "Intended use: Classify the test sensor" in text
    assert card["privacy"]["dp_statement"]["text"] in text
    assert "Targets: 1 passed, 1 failed, 0 not measured" in text
    assert re.search(r"cpu_int8 onnxruntime on cpu failed size: 1\.0 KB \(budget 0\.5 KB\)", text), text
    assert "Review pending" in text


def test_target_outcome_keeps_not_measured_apart_from_passed_and_failed(card):
    passed, failed = card["targets"]
    assert target_outcome(passed)[0] == "passed" and target_outcome(failed)[0] == "failed"
    unmeasured = copy.deepcopy(passed)
    unmeasured["checks"]["latency"] = {"status": "not measured", "detail": "no CUDA device"}
    outcome, reasons = target_outcome(unmeasured)
    assert outcome == "not measured" and reasons == ["latency: no CUDA device"]
    unmeasured["checks"]["size"]["status"] = "failed"
    assert target_outcome(unmeasured)[0] == "failed"  # a failure is never hidden behind "not measured"
    no_benchmark = copy.deepcopy(passed)
    no_benchmark.update(latency_p95_ms=None, not_measured_reason="benchmark did not run")
    assert target_outcome(no_benchmark) == ("not measured", ["latency and memory: benchmark did not run"])


def test_review_state_follows_the_signed_history(card):
    assert review_state(card, [])["status"] == "pending"
    history = [
        {"kind": "review", "decision": "reject", "reviewer": "a@x"},
        {
            "kind": "review",
            "decision": "approve",
            "reviewer": "b@x",
            "at": "2026-12-01T10:00:00+00:00",
            "comment": "numbers checked",
        },
    ]
    state = review_state(card, history)
    assert state["status"] == "approved" and state["reviewer"] == "b@x"
    text, _ = visible(to_html(card, None, history))
    assert "approved by b@x on 2026-12-01T10:00:00+00:00" in text and "numbers checked" in text


def test_lineage_is_a_table_of_digests_with_the_chain_drawn_and_links_only_when_followed(card):
    html = to_html(card, b"\x89PNG fake", mlflow_ui="http://127.0.0.1:5000")
    text, loads = visible(html)
    assert all(url.startswith("data:") for url in loads), loads  # nothing fetched: the chart is inline
    lineage = card["lineage"]
    for digest in (
        lineage["spec_sha256"],
        lineage["weights_sha256"],
        *lineage["dataset_digests"].values(),
        *lineage["artifact_sha256"].values(),
    ):
        assert digest in text
    assert "{" not in text.split("Lineage", 1)[-1].split("Evidence manifest")[0]  # no JSON dump
    assert html.count('<svg class="chain"') == 1 and html.count("<rect") >= 4 + 2 * len(card["targets"])
    assert f'href="http://127.0.0.1:5000/#/runs/{lineage["mlflow_runs"]["dp_model"]}"' in html
    registered = lineage["registered_models"]["cpu_float"]
    assert f'href="http://127.0.0.1:5000/#/models/{registered["name"]}/versions/{registered["version"]}"' in html
    rows = lineage_rows(card, None)
    assert {what for what, *_ in rows} >= {
        "declaration",
        "dataset: train",
        "dataset: test",
        "DP model weights",
        "registered version (cpu_float)",
    }


def test_a_section_added_to_the_card_data_is_rendered_without_renderer_changes(card):
    card["audit"] = {
        "auditor": "ext-audit@example.com",
        "findings": [{"id": "F-1", "severity": "low", "text": "calibration"}],
    }
    card["privacy"]["ledger"] = {"spent_epsilon": 5.0, "remaining_epsilon": 15.0}
    text, _ = visible(to_html(card, None))
    assert "Audit" in text and "ext-audit@example.com" in text and "F-1 low calibration" in text
    assert "Ledger" in text and "Spent epsilon 5" in text and "Remaining epsilon 15" in text


def test_print_css_keeps_rows_whole_and_the_summary_on_its_own_page():
    from edgeops.cards.html_page import STYLE

    print_rules = STYLE[STYLE.index("@media print") :]
    assert re.search(r"tr[^{]*\{[^}]*break-inside:avoid", print_rules)
    assert "thead{display:table-header-group}" in print_rules and re.search(r"\.summary\{break-after:page", print_rules)
