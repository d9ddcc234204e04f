"""The Dagster UI as a user sees it: a materialized project served by dagster-webserver on loopback, opened in
headless Chromium (Debian's package, driven by Playwright against the system browser; no browser download).

Checked: the asset graph (stages, kinds, check states), a materialization's metadata, a failed check's details with
its measured numbers, the Pareto chart inline in the card's metadata, and the HTML model card. Screenshots are kept
in tests/artifacts/screenshots/ (or $EDGEOPS_SCREENSHOTS_DIR). Outside CI a missing Chromium skips with the reason;
with CI=true these tests must run (.ci/run installs Chromium).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, Project, stop_process_group, table_declaration, table_frame

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(os.environ.get("EDGEOPS_SCREENSHOTS_DIR") or REPO / "tests" / "artifacts" / "screenshots")


def _require_browser() -> None:
    why = None
    if not Path(CHROMIUM).exists():
        why = "headless Chromium is not installed: `apt-get install chromium` (Debian's package; .ci/run installs it)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            why = "playwright is not installed: `make test` installs the dev extra"
    if why and os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the browser test: {why}")
    if why:
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The table pipeline, materialized once, with a size budget its int8 target misses; then the UI on loopback."""
    _require_browser()
    from pipelines.launch import run_pipelines

    monkeypatch = pytest.MonkeyPatch()
    project = Project(tmp_path_factory.mktemp("ui") / "project", monkeypatch)
    project.write_csv(table_frame(300))
    spec = table_declaration()
    spec["targets"][1]["budgets"] = {"max_size_kb": 0.5}  # the int8 artifact is ~2.5 KB: its size check fails
    project.declare(spec)
    report, = run_pipelines(project.settings(), "tabular")
    assert report.core_success and any("size_budget" in r["failed_checks"] for r in report.runs), report

    settings = project.settings()
    port = _free_port()
    env = {**os.environ, "EDGEOPS_ROOT": str(project.root), "EDGEOPS_HOME": str(settings.home), "DAGSTER_HOME": str(settings.dagster_home)}
    webserver = subprocess.Popen([str(Path(sys.executable).parent / "dagster-webserver"), "-w", str(project.root / "workspace.yaml"),
                                  "-h", "127.0.0.1", "-p", str(port)], cwd=project.root, env=env, start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{base}/server_info", timeout=2)
            break
        except OSError:
            if time.time() > deadline or webserver.poll() is not None:
                os.killpg(webserver.pid, signal.SIGKILL)
                pytest.fail("dagster-webserver did not start within 120 s")
            time.sleep(0.5)
    try:
        yield base, project
    finally:
        stop_process_group(webserver, signal.SIGINT, timeout=15)
        monkeypatch.undo()


@pytest.fixture(scope="module")
def browser(served):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, served, request):
    base, _ = served
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{base}/asset-groups")
    skip = page.get_by_role("button", name="Skip")  # Dagster's first-visit community sign-up dialog covers the page
    try:
        skip.wait_for(timeout=5_000)
        skip.click()
    except Exception:  # noqa: BLE001 - shown once per instance: absent is fine
        pass
    yield page
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{request.node.name}.png"), full_page=True)
    context.close()


def test_asset_graph_shows_every_stage_upstream_of_the_card(page, served):
    base, _ = served
    page.goto(f"{base}/assets/tabular/model_card?view=lineage&lineageScope=upstream")
    page.get_by_role("button", name="All", exact=True).click()  # the whole upstream graph of the card
    for asset in ("raw_dataset", "validated_dataset", "dp_model", "dp_baseline", "compressed_model", "hil_benchmark", "robustness",
                  "privacy_audit", "model_card"):
        page.get_by_text(asset, exact=True).first.wait_for()
    for group in ("tabular_data", "tabular_training", "tabular_compression", "tabular_privacy", "tabular_governance"):
        page.get_by_text(group, exact=True).first.wait_for()  # (the benchmarking group's label is truncated at this zoom)


def test_graph_nodes_show_their_kinds_and_check_states(page, served):
    base, _ = served  # a fresh page: the graph's zoom is kept per page, and nodes show kinds only when zoomed in
    page.goto(f"{base}/assets/tabular/dp_model?view=lineage&lineageScope=upstream")
    page.get_by_role("button", name="All", exact=True).click()  # raw_dataset is two steps up
    for kind in ("PyTorch", "onnx", "Great Expectations", "pandas", "ML Flow"):
        page.get_by_text(kind, exact=True).first.wait_for()
    page.get_by_text("6 / 6 Passed").first.wait_for()  # raw_dataset's data checks
    page.get_by_text("2 / 2 Passed").first.wait_for()  # dp_model's utility and epsilon re-derivation checks


def test_materialization_metadata_shows_the_privacy_spend_and_the_mlflow_run(page, served):
    base, _ = served
    page.goto(f"{base}/assets/tabular/dp_model")
    page.get_by_text("ledger_remaining_epsilon", exact=True).wait_for()
    body = page.inner_text("body")
    assert re.search(r"epsilon\s+.*\s+3\.99\d*", body, re.S), body[:2000]  # the DP-SGD run's epsilon, as the ledger recorded it
    assert re.search(r"http://127\.0\.0\.1:\d+/#/experiments/\d+/runs/[0-9a-f]{32}", body)


def test_a_failed_check_shows_its_measured_number_and_budget(page, served):
    base, _ = served
    page.goto(f"{base}/assets/tabular/compressed_model?view=checks")
    page.get_by_text("size_budget", exact=True).first.click()
    page.get_by_text(re.compile(r"cpu_int8: \d+(\.\d+)? KB \(budget 0\.5 KB\)")).first.wait_for()
    page.get_by_text("This is a", exact=False).first.wait_for()  # "This is a blocking asset check."
    assert "blocking" in page.inner_text("body") and "Failed" in page.inner_text("body")


def test_the_card_metadata_renders_the_pareto_chart_inline(page, served):
    base, _ = served
    page.goto(f"{base}/assets/tabular/model_card")
    page.get_by_text("pareto_chart", exact=True).wait_for()
    page.get_by_text("[Show Markdown]").nth(1).click()  # the second Markdown entry: card first, then the chart
    image = page.locator("img[alt^='Pareto chart']").first
    image.wait_for()
    assert image.evaluate("img => img.complete && img.naturalWidth") > 100  # decoded, not a broken link


def test_the_html_model_card_opens_offline_and_shows_its_evidence(page, served):
    _, project = served
    card, = (project.root / "model_cards" / "generated" / "tabular").glob("*/card.html")
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(card.as_uri())
    text = page.inner_text("body")
    for section in ("Privacy", "NIST AI RMF", "cpu_int8", "cpu_float"):
        assert section in text, section
    assert re.search(r"epsilon\s*[=:]?\s*3\.99", text), text[:1500]
    assert page.locator("img").first.evaluate("img => img.naturalWidth") > 100  # the Pareto chart, inlined
    assert all(url.startswith(("file:", "data:")) for url in requests), requests  # self-contained: nothing fetched
