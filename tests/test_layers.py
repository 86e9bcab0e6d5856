"""The package's layers (README "Architecture"): each imports only the layers below it.

config -> analysis -> workload -> transport -> engine | output -> runner, cli. ``engine`` and ``output``
are siblings that never import each other (reading a run never loads the request path); ``mock`` sits
beside the stack: it may use anything below ``engine``, and only the top (runner, cli) starts it.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli, write

PACKAGE = ROOT / "loadtest"
RANK = {"config": 0, "analysis": 1, "workload": 2, "transport": 3, "engine": 4, "output": 4, "mock": 4, "top": 5}
SIBLINGS = {frozenset({"engine", "output"}), frozenset({"engine", "mock"}), frozenset({"output", "mock"})}


def layer(module: str) -> str:
    """``loadtest.engine.driver`` -> ``engine``; modules at the package's top (runner, cli) -> ``top``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else "top"


def imports_of(path: Path) -> set[str]:
    """Every ``loadtest`` module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("loadtest"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if (PACKAGE / a.name).is_dir()}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("loadtest")}
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; the layer rule reads absolute ones")
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def violations() -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = module_name(path)
        mine = layer(me)
        for imported in imports_of(path):
            theirs = layer(imported)
            if imported == "loadtest" or theirs == mine:
                continue  # the version string; a module of the same layer
            if RANK[theirs] > RANK[mine] or frozenset({mine, theirs}) in SIBLINGS:
                bad.append(f"{me} ({mine}) imports {imported} ({theirs})")
    return bad


def test_every_module_imports_only_layers_below_it() -> None:
    assert violations() == []


def test_the_rule_catches_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker itself: an output module importing the driver is reported."""
    fake = tmp_path / "loadtest"
    (fake / "output").mkdir(parents=True)
    (fake / "engine").mkdir()
    write(fake / "output" / "x.py", "from loadtest.engine.driver import drive\n")
    write(fake / "analysis.py", "")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert violations() == ["loadtest.output.x (output) imports loadtest.engine.driver (engine)"]


READ_ONLY = """
import json, sys
from typer.testing import CliRunner
from loadtest.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
heavy = sorted(m for m in ("openai", "aiohttp", "uvloop", "httpx2") if m in sys.modules)
print(json.dumps({"exit": result.exit_code, "heavy": heavy, "out": result.output[-400:]}))
"""


def test_reading_runs_never_imports_the_request_path(tmp_path: Path) -> None:
    """``report``, ``compare`` and ``history`` read files: no HTTP client or event loop is imported."""
    scenario = write(
        tmp_path / "s.yaml",
        "name: layers\ntarget: {mock: {ttft_ms: 1, itl_ms: 0, output_tokens: 4}}\n"
        "load: {concurrency: [2], requests: 6, warmup_requests: 0}\n",
    )
    for _ in range(2):
        assert run_cli("run", str(scenario), "--out", str(tmp_path / "r"), "--no-report").returncode == 0
    runs = sorted(p for p in (tmp_path / "r" / "layers").iterdir() if p.is_dir())
    reads = (
        ["report", str(runs[0])],
        ["compare", str(runs[0]), str(runs[1])],
        ["history", "layers", "--results", str(tmp_path / "r")],
    )
    for args in reads:
        proc = subprocess.run([sys.executable, "-c", READ_ONLY, *args], capture_output=True, text=True, cwd=ROOT)
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        assert got["exit"] in (0, 1), got  # compare exits 1 on a regression
        assert got["heavy"] == [], f"{args[0]} imported {got['heavy']}"
