"""JUnit XML and Markdown for CI: one test case per step and SLO (run) or metric (compare)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from loadtest.output.rundir import write_atomic

__all__ = ["compare_junit", "compare_markdown", "slo_junit"]


def _suite(name: str, cases: list[tuple[str, str, str | None]]) -> str:
    """cases: (classname, name, failure message or None)."""
    suite = ET.Element(
        "testsuite",
        name=name,
        tests=str(len(cases)),
        failures=str(sum(1 for c in cases if c[2] is not None)),
        errors="0",
        skipped="0",
    )
    for classname, case, failure in cases:
        tc = ET.SubElement(suite, "testcase", classname=classname, name=case)
        if failure is not None:
            ET.SubElement(tc, "failure", message=failure, type="regression").text = failure
    return ET.tostring(ET.ElementTree(suite).getroot(), encoding="unicode", xml_declaration=True) + "\n"


def slo_junit(summary: dict[str, Any], path: Path) -> None:
    """A test case per step and SLO bound; a failure carries the measured value and the bound."""
    cases = []
    for v in summary["slo"]["verdicts"]:
        name = f"step {v['step']} ({v['value_of_step']}): {v['slo']} {v['stat']} {v['kind']} {v['bound']}"
        failure = (
            None
            if v["ok"]
            else (
                f"{v['slo']} {v['stat']} = {v['measured']} at step {v['step']} "
                f"({v['value_of_step']}), bound: {v['kind']} {v['bound']}"
            )
        )
        cases.append((f"loadtest.slo.{summary['scenario']}", name, failure))
    for s in summary["steps"]:  # a step with no SLO still shows it ran, and its errors
        cases.append(
            (
                f"loadtest.steps.{summary['scenario']}",
                f"step {s['index']} ({s['mode']}={s['value']}) ran",
                None if s["requests"]["sent"] else "no request was sent",
            )
        )
    write_atomic(path, _suite(f"loadtest {summary['scenario']}", cases))


def compare_junit(result: dict[str, Any], path: Path) -> None:
    cases = []
    for r in result["rows"]:
        name = f"{r['mode']}={r['value']}: {r['label']}"
        failure = None
        if r["verdict"] == "regressed":
            failure = (
                f"{r['label']} regressed at {r['mode']}={r['value']}: {r['baseline']:.4g} -> "
                f"{r['candidate']:.4g} ({100 * r['change']:+.1f}%, 95% CI {100 * r['ci95'][0]:+.1f}% .. "
                f"{100 * r['ci95'][1]:+.1f}%), tolerance {100 * result['tolerance']:.0f}%"
            )
        cases.append(("loadtest.analysis.compare", name, failure))
    write_atomic(path, _suite("loadtest compare", cases))


def compare_markdown(result: dict[str, Any]) -> str:
    """A summary for a CI step summary ($GITHUB_STEP_SUMMARY)."""
    verdict = "no regression" if result["passed"] else f"**{len(result['regressed'])} regression(s)**"
    lines = [
        f"### loadtest compare: {verdict}",
        "",
        f"baseline `{result['baseline']}` vs candidate `{result['candidate']}`, tolerance "
        f"{100 * result['tolerance']:.0f}%, 95% bootstrap intervals ({result['resamples']} resamples)",
        "",
        "| load | metric | baseline | candidate | change | 95% CI | verdict |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        mark = {"regressed": "🔴 regressed", "improved": "🟢 improved"}.get(r["verdict"], "unchanged")
        lines.append(
            f"| {r['mode']}={r['value']} | {r['label']} | {r['baseline']:.4g} | {r['candidate']:.4g} | "
            f"{100 * r['change']:+.1f}% | {100 * r['ci95'][0]:+.1f}% .. {100 * r['ci95'][1]:+.1f}% | {mark} |"
        )
    return "\n".join(lines) + "\n"
