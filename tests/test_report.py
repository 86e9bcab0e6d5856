"""report.html in a real browser (Debian's headless Chromium), and comparison reports."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from loadtest.config.scenario import Scenario
from loadtest.output.htmlreport import columns_for, fmt
from loadtest.output.plots import PLOTS, Series
from loadtest.output.rundir import load_run
from loadtest.runner import execute
from tests.conftest import run_cli

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def small_run(tmp_path: Path, itl_ms: float, seed: int, name: str = "rep", report: bool = True) -> Path:
    sc = Scenario.model_validate(
        {
            "name": name,
            "target": {
                "base_url": "mock",
                "mock": {"ttft_ms": 5, "itl_ms": itl_ms, "output_tokens": 16, "faults": {"http_503": 0.1}},
            },
            "workload": {"max_tokens": 16, "seed": seed},
            "load": {"concurrency": [1, 4], "requests": 20},
            "slo": {"ttft_ms": {"p50": 1000}, "error_rate": {"max": 0.5}},
        }
    )
    return execute(sc, "rep.yaml", tmp_path, on_step=lambda s: None, report=report).run_dir


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    assert CHROMIUM and CHROMEDRIVER, "Debian's chromium and chromium-driver are missing: run `make browser`"
    os.environ["SE_OFFLINE"] = "true"  # Selenium must not look for drivers online: we name them
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chrome-profile'}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def by_path(step: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        step = step.get(part) if isinstance(step, dict) else None  # type: ignore[assignment]
    return step


def test_report_renders_in_chromium_with_every_plot_and_the_summary_numbers(
    tmp_path: Path, browser: webdriver.Chrome
) -> None:
    run = small_run(tmp_path, itl_ms=2, seed=1)
    summary = json.loads((run / "summary.json").read_text())
    browser.get((run / "report.html").as_uri())
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script(
            "return document.readyState === 'complete' && [...document.images].every(i => i.complete)"
        )
    )
    images = browser.execute_script("return [...document.images].map(i => [i.alt, i.naturalWidth, i.src.slice(0, 22)])")
    assert len(images) == len(PLOTS) and all(w > 0 for _, w, _ in images), images
    assert all(src == "data:image/png;base64," for _, _, src in images)  # inline: the page is self-contained
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:'))"
    )
    assert fetched == []  # nothing loaded from the network or disk besides the page itself
    cells = browser.execute_script(
        "return [...document.querySelectorAll('table.steps td')]"
        ".map(td => [td.closest('tr').dataset.step, td.dataset.key, td.dataset.value, td.textContent])"
    )
    columns = columns_for([summary])  # no reasoning, one token a chunk: no TTFA or tokens/chunk columns
    assert len(cells) == len(columns) * len(summary["steps"])
    assert not any(c.key.startswith(("ttfa_ms", "tokens_per_chunk", "reasoning_tokens")) for c in columns)
    digits = {c.key: c.digits for c in columns}
    for step, key, value, text in cells:
        want = by_path(summary["steps"][int(step)], key)
        assert json.loads(value) == want, (step, key)
        assert text == fmt(want, digits[key]), (step, key, text)
    assert summary["steps"][1]["errors"] == {"http_5xx": 2}  # and the page breaks errors down by class
    assert "http_5xx" in browser.execute_script("return document.querySelector('table.errors').textContent")
    assert "all hold" in browser.execute_script("return document.body.textContent")  # SLO verdicts
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 20_000


def test_comparison_report_has_both_runs_in_every_legend(tmp_path: Path) -> None:
    a, b = (
        small_run(tmp_path / "a", itl_ms=2, seed=1, name="before", report=False),
        small_run(tmp_path / "b", itl_ms=3, seed=2, name="after", report=False),
    )
    runs = [load_run(a), load_run(b)]
    series = [Series("before", runs[0]), Series("after", runs[1])]
    for name, draw in PLOTS.items():
        chart = draw(series)
        legends = [p.labels() for p in chart.panels if p.labels()]
        assert legends, name
        for legend in legends:
            texts = " | ".join(legend)
            assert "before" in texts and "after" in texts, (name, texts)
        assert chart.png().startswith(b"\x89PNG")
    r = run_cli("report", str(a), str(b), "--out", str(tmp_path / "cmp"))
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "cmp" / "report.html").read_text()
    assert page.count('<table class="steps"') == 2 and len(list((tmp_path / "cmp" / "plots").glob("*.png"))) == len(
        PLOTS
    )


def test_report_command_rebuilds_plots_and_page_from_records(tmp_path: Path) -> None:
    run = small_run(tmp_path, itl_ms=2, seed=1, report=False)  # summary.json, no plots, no page
    before = json.loads((run / "summary.json").read_text())
    (run / "summary.json").unlink()
    r = run_cli("report", str(run))
    assert r.returncode == 0, r.stderr
    after = json.loads((run / "summary.json").read_text())
    assert after["steps"] == before["steps"]
    assert (run / "report.html").is_file() and len(list((run / "plots").glob("*.png"))) == len(PLOTS)


def test_a_report_that_cannot_be_drawn_costs_a_warning_not_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report is drawn in the run's own process: a failure while drawing (here a KeyError, which no
    drawing code should raise) leaves the records, summary.json and history, and says so in one line."""
    import loadtest.output.htmlreport as htmlreport

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("p50")

    monkeypatch.setattr(htmlreport, "write_report", broken)
    warnings: list[str] = []
    sc = Scenario.model_validate(
        {"name": "nodraw", "target": {"base_url": "mock", "mock": {"ttft_ms": 1, "itl_ms": 0, "output_tokens": 4}},
         "load": {"concurrency": [2], "requests": 6}}
    )  # fmt: skip
    outcome = execute(sc, "nodraw.yaml", tmp_path, on_step=lambda s: None, warn=warnings.append)
    assert outcome.exit_code == 0 and (outcome.run_dir / "summary.json").is_file()
    assert len((outcome.run_dir / "requests.jsonl").read_text().splitlines()) == 6
    assert (outcome.run_dir.parent / "history.jsonl").is_file() and not (outcome.run_dir / "report.html").exists()
    assert [w for w in warnings if "the report could not be drawn ('p50')" in w], warnings


def test_ctrl_c_while_the_report_is_drawn_keeps_the_history_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C that lands while the report is drawn (in the run's own process) interrupts the drawing:
    exit 130 with a message that says so (not "nothing was measured"), and the run's line in
    history.jsonl and its summary.json are already written."""
    import loadtest.output.htmlreport as htmlreport

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(htmlreport, "write_report", interrupted)
    sc = Scenario.model_validate(
        {"name": "ctrlc", "target": {"base_url": "mock", "mock": {"ttft_ms": 1, "itl_ms": 0, "output_tokens": 4}},
         "load": {"concurrency": [2], "requests": 6}}
    )  # fmt: skip
    outcome = execute(sc, "ctrlc.yaml", tmp_path, on_step=lambda s: None)
    assert outcome.exit_code == 130 and "interrupted while drawing the report" in (outcome.message or "")
    run_dir = outcome.run_dir
    lines = (tmp_path / "ctrlc" / "history.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["run_dir"] == str(run_dir), lines
    assert json.loads((run_dir / "summary.json").read_text())["steps"][0]["requests"]["ok"] == 6
