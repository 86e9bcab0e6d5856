"""Scenario files: YAML loading, ``${VAR}`` expansion in ``target``, ``--set`` overrides, the resolved YAML.

Every problem with user input becomes a :class:`ScenarioError` whose message is one line naming
the file, the field path and what was expected.
"""

from __future__ import annotations

import copy
import os
import re
import ssl
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from loadtest.config.scenario import DatasetPrompt, FilePrompt, Scenario, ScenarioError
from loadtest.config.secrets import redacted
from loadtest.config.tls import ssl_context

__all__ = ["api_key", "apply_override", "load_scenario", "scenario_to_yaml"]


_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(node: Any, path: str, source: str, env: dict[str, str]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a parsed YAML tree; ``$${`` is a literal ``${``."""
    if isinstance(node, dict):
        return {k: _expand(v, f"{path}.{k}" if path else str(k), source, env) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, f"{path}[{i}]", source, env) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name is None:
            return "${"
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ScenarioError(f"{source}: {path}: environment variable {name} is not set")

    return _VAR.sub(sub, node)


def apply_override(tree: dict[str, Any], assignment: str, source: str = "--set") -> None:
    """Apply ``a.b.c=VALUE`` (VALUE parsed as YAML) to a raw scenario tree in place."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ScenarioError(f"{source}: expected KEY=VALUE (e.g. load.concurrency=[1,8]), got {assignment!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node = tree
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ScenarioError(f"{source}: {key}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def _format_validation(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors()[:3]:
        # A discriminated union repeats its tag in the path (prompt.synthetic.synthetic...): drop repeats.
        loc_parts = [
            str(p) if isinstance(p, int) or str(p).isidentifier() else repr(p)
            for i, p in enumerate(e["loc"])
            if i == 0 or p != e["loc"][i - 1]
        ]
        loc = ".".join(loc_parts)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["loc"][:1] == ("target",) and e["loc"][1:2] in (("base_url",), ("model",), ("headers",)):
            pass  # never echoed: the value may be a credential or come from a variable (secrets.py)
        elif "input" in e and e["type"] not in ("missing",) and not isinstance(e["input"], dict | list):
            msg = f"{msg} (got {e['input']!r})"
        parts.append(f"{loc or '(top level)'}: {msg}")
    more = len(err.errors()) - 3
    suffix = f" (and {more} more)" if more > 0 else ""
    return f"{source}: " + "; ".join(parts) + suffix


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(f"{path}: cannot read: {e.__class__.__name__}") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ScenarioError(f"{path}: malformed YAML{where}: {problem}") from None
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ScenarioError(f"{path}: expected a mapping of sections (name, target, workload, load, slo)")
    return tree


def load_scenario(
    path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    *,
    expand: bool = True,
) -> Scenario:
    """Read, override, expand and validate a scenario file. ``${VAR}`` expands in ``target`` only:
    every other field (prompts, extra_body, ...) is sent as written. ``expand=False`` reads a run's
    own scenario.yaml, whose secrets stay as references (``${KEY}``) or ``[redacted]``."""
    path = Path(path)
    source = str(path)
    tree = _read_yaml(path)
    tree.setdefault("name", path.stem)
    for o in overrides:
        apply_override(tree, o)
    written = copy.deepcopy(tree.get("target"))
    if expand and isinstance(written, dict):
        tree["target"] = _expand(written, "target", source, dict(os.environ) if env is None else env)
    try:
        # base_dir: a file a field names (workload.tools) is relative to the scenario file
        scenario = Scenario.model_validate(tree, context={"unexpanded": not expand, "base_dir": str(path.parent)})
    except ValidationError as e:
        raise ScenarioError(_format_validation(e, source)) from None
    scenario.target._written = written if isinstance(written, dict) else None
    # A prompt (or trace) file is relative to the scenario file, not to the working directory.
    prompt = scenario.workload.prompt
    if isinstance(prompt, FilePrompt):
        prompt.file = _relative_to(path, prompt.file)
    if (trace := scenario.load.trace) is not None:
        trace.path = _relative_to(path, trace.path)
    if isinstance(prompt, DatasetPrompt):
        prompt.dataset.path = _relative_to(path, prompt.dataset.path)
    images = scenario.workload.images
    if images is not None and images.folder is not None:
        images.folder = _relative_to(path, images.folder)
    tls = scenario.target.tls
    for name in ("ca_file", "client_cert", "client_key"):
        if (value := getattr(tls, name)) is not None:
            setattr(tls, name, _relative_to(path, value))
            if not Path(getattr(tls, name)).is_file():
                raise ScenarioError(f"{source}: target.tls.{name}: file not found: {value}")
    try:
        ssl_context(**tls.model_dump())
    except (ssl.SSLError, OSError) as e:
        field = "ca_file" if tls.ca_file and tls.client_cert is None else "client_cert"
        raise ScenarioError(f"{source}: target.tls.{field}: cannot load ({e.__class__.__name__}: {e})") from None
    _relative_tokenizers(scenario, path)
    return scenario


def _relative_to(scenario_path: Path, file: str) -> str:
    """A path in a scenario is relative to the scenario file (else to the working directory, when only there)."""
    if Path(file).is_absolute():
        return file
    candidate = scenario_path.parent / file
    return str(candidate) if candidate.exists() or not Path(file).exists() else file


def _relative_tokenizers(scenario: Scenario, path: Path) -> None:
    """A tokenizer file is relative to the scenario file too (a name that is no file there is left alone)."""
    target = scenario.target
    named = target.tokenizer in ("o200k_base", "cl100k_base", "server")
    if not named and not Path(target.tokenizer).is_absolute() and (path.parent / target.tokenizer).exists():
        target.tokenizer = str(path.parent / target.tokenizer)
    tok = target.mock.tokenizer
    if tok is not None and not Path(tok).is_absolute() and (path.parent / tok).exists():
        target.mock.tokenizer = str(path.parent / tok)


def api_key(scenario: Scenario, source: str, env: dict[str, str] | None = None) -> str:
    """The API key from the variable named by ``target.api_key_env``; never stored anywhere."""
    env = dict(os.environ) if env is None else env
    name = scenario.target.api_key_env
    if name is None:
        return "no-key"
    value = env.get(name, "")
    if not value:
        raise ScenarioError(f"{source}: target.api_key_env: environment variable {name} is not set")
    return value


def scenario_to_yaml(scenario: Scenario) -> str:
    """The resolved scenario as YAML, redacted (secrets.py): the key's variable name, never a key,
    a header value or a value from a variable."""
    return yaml.safe_dump(redacted(scenario).model_dump(mode="json"), sort_keys=False)
