"""The MLflow UI as a user sees it, in a real headless Chromium (driven by Playwright): `ee-search ui`
over a finished study opens the experiment on its runs table with the trials nested under the study's
run, a trial's page shows its metrics and description, and its trade-off figure is visible in the
artifact viewer. Skipped only when no Chromium is installed (`.ci/run` installs one with apt).

The same script makes the README's screenshots: `EE_SEARCH_SCREENSHOTS=docs/img pytest
tests/test_mlflow_ui_in_a_browser.py` writes them (docs/make_screenshots.sh).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from ee_search.tracking import UI_QUERY
from tests.conftest import cli, run_study

pytestmark = pytest.mark.slow  # a server and a browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture
def browser():
    executable = _chromium()
    if executable is None:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright  # in the dev extra: a missing one is an error

    with sync_playwright() as p:
        # --no-sandbox: CI containers run as root, where Chromium's own sandbox cannot start.
        chromium = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = chromium.new_page(viewport={"width": 1440, "height": 900})
        yield page
        chromium.close()


def _open(page, url: str) -> None:
    """A fresh load: the UI is a single-page app that does not re-render on a change of the hash alone."""
    page.goto("about:blank")
    page.goto(url)


def _shoot(page, name: str) -> None:
    folder = os.environ.get("EE_SEARCH_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name))


def test_the_ui_opens_on_the_runs_and_shows_a_trials_metrics_and_tradeoff(tiny_study, workdir, serve, browser):
    study = run_study(tiny_study, n_trials=2)
    assert cli("pareto", tiny_study, "--out", workdir / "front", catch_exceptions=True).exit_code == 0
    trial = study.trials[0]
    run_id = trial.user_attrs["mlflow_run_id"]
    experiment_id = study.user_attrs["mlflow_experiment_id"]

    ee_search = str(Path(sys.executable).with_name("ee-search"))
    base = serve(lambda port: [ee_search, "ui", str(tiny_study), "--port", str(port)])
    page = browser

    # The experiment, by the link `ee-search ui` prints: the runs table, not GenAI's trace overview.
    _open(page, f"{base}/{_printed_route(tiny_study, base)}")
    page.get_by_text("tiny", exact=True).first.wait_for(timeout=60_000)
    assert "Detect Issues" not in page.content()
    page.get_by_role("button", name="Model training").first.wait_for(timeout=10_000)
    # The trials are nested under the study's run: expanding it lists them.
    page.locator("button[data-component-id*='runnamecellrenderer']").first.click()
    for number in (0, 1):
        page.get_by_text(f"trial-{number}", exact=True).first.wait_for(timeout=30_000)
    _shoot(page, "mlflow-runs.png")

    # A trial's page: its description in words and its metrics.
    _open(page, f"{base}/{trial.user_attrs['mlflow_run_url']}")
    page.get_by_text("Complete", exact=False).first.wait_for(timeout=60_000)
    page.get_by_text(f"Optuna trial {trial.number} of study", exact=False).first.wait_for(timeout=10_000)
    for metric in ("val_loss", "accuracy", "avg_exit_depth"):
        page.get_by_text(metric, exact=True).first.wait_for(timeout=30_000)
    _shoot(page, "mlflow-trial.png")

    # The experiment's Models tab: every trial's network (its LoggedModel), with its final metrics.
    _open(page, f"{base}/#/experiments/{experiment_id}/models{UI_QUERY}")
    for number in (0, 1):
        page.get_by_text(f"trial-{number}", exact=True).first.wait_for(timeout=60_000)
    shown = _models_table(page)
    for t in study.trials:
        for metric in ("accuracy", "avg_exit_depth", "curve_hypervolume"):
            assert shown[f"trial-{t.number}", metric] == _as_javascript_prints(t.user_attrs[metric])
    _shoot(page, "mlflow-models.png")

    # Its trade-off figure in the artifact viewer: the PNG, and the HTML showing a figure, not blank.
    for artifact, shot in (("exits/tradeoff.png", None), ("exits/tradeoff.html", "mlflow-tradeoff.png")):
        _open(page, f"{base}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{artifact}{UI_QUERY}")
        if artifact.endswith(".png"):
            image = page.locator("img[src^='blob:'], img[src*='get-artifact']").first
            image.wait_for(timeout=60_000)
            assert image.evaluate("img => img.complete && img.naturalWidth") > 300
            continue
        frame = page.frame_locator("iframe[src^='blob:']").first
        drawn = frame.locator("#static img, .js-plotly-plot .main-svg").first
        drawn.wait_for(timeout=60_000)
        assert drawn.evaluate("el => el.getBoundingClientRect().width") > 300
        _shoot(page, shot)

    # The study's run: its dense front and figures, refreshed after every trial.
    parent = study.user_attrs["mlflow_parent_run_id"]
    _open(page, f"{base}/#/experiments/{experiment_id}/runs/{parent}/artifacts/pareto/pareto.png{UI_QUERY}")
    front = page.locator("img[src^='blob:']").first
    front.wait_for(timeout=60_000)
    assert front.evaluate("img => img.complete && img.naturalWidth") > 300
    _shoot(page, "mlflow-front.png")

    # The exported front, opened from disk with plotly.js beside it: interactive, offline.
    _open(page, (workdir / "front" / "pareto.html").as_uri())
    page.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=60_000)
    assert page.locator("#static").evaluate("el => getComputedStyle(el).display") == "none"
    _shoot(page, "pareto-html.png")


def _models_table(page) -> dict[tuple[str, str], str]:
    """The Models tab's table as shown, {(model name, metric): text}. The grid draws only the columns in
    view (ag-grid), so it is read while scrolled across, then left on the metrics for the screenshot."""
    close = page.locator("button[data-component-id='mlflow.assistant.chat_panel.close']")
    if close.count():  # MLflow's assistant panel takes a third of the width
        close.first.click()
    read = """() => Array.from(document.querySelectorAll('[role=row][row-index]')).flatMap(row =>
        Array.from(row.querySelectorAll('[role=gridcell]')).map(cell =>
            [row.getAttribute('row-index'), cell.getAttribute('col-id'), cell.innerText]))"""
    scroll = "(by) => { const v = document.querySelector('.ag-body-horizontal-scroll-viewport'); v.scrollLeft += by; return v.scrollLeft; }"
    cells, at, metrics_at = [], -1, None
    while at != (at := page.evaluate(scroll, 0)):  # until a scroll moves no further
        found = page.evaluate(read)
        if metrics_at is None and any(column.startswith("metrics.") for _, column, _ in found):
            metrics_at = at
        cells += found
        page.evaluate(scroll, 300)
        page.wait_for_timeout(200)
    page.evaluate(scroll, (metrics_at or 0) - at)  # back to the metrics, then the first one at the left
    page.wait_for_timeout(200)
    first = page.evaluate("""() => { const left = parseFloat(
        document.querySelector('.ag-header-cell[col-id^="metrics."]')?.style.left); return Number.isFinite(left) ? left : null; }""")
    if first is not None:
        page.evaluate(scroll, first - page.evaluate(scroll, 0))
        page.wait_for_timeout(200)
    names = {row: text.splitlines()[-1] for row, column, text in cells if column == "name"}
    metric = re.compile(r"^metrics\.\{(?:&quot;|\")metricKey(?:&quot;|\"):(?:&quot;|\")(.+?)(?:&quot;|\")\}$")
    return {(names[row], m.group(1)): text for row, column, text in cells if (m := metric.match(column or ""))}


def _as_javascript_prints(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _printed_route(study_path: Path, base: str) -> str:
    """The experiment link that `ee-search ui` prints, made relative to the server's address."""
    from ee_search.cli import _experiment_id
    from ee_search.tracking import experiment_route

    return experiment_route(_experiment_id(f"sqlite:///{study_path.parent}/mlflow.db", "tiny"))
