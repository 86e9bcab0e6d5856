"""Secrets out of sight: the one redacted view of a scenario, and the scrubbing of error texts.

What is secret (docs/DESIGN.md §8: Azure OpenAI and most gateways take the key in a header):

- every value of ``target.headers``, whether written in the file or read from a variable;
- ``base_url``'s userinfo (``user:pass@``) and the values of its query string;
- whatever ``${VAR}`` expansion put into ``target.base_url`` and ``target.model``: shown as the
  reference written in the file (``${BASE_URL}``), never as the value;
- the key read from ``target.api_key_env`` (it never enters the scenario in the first place);
- ``server_metrics.url``'s userinfo and query values, as ``base_url``'s.

Every file of a run directory, ``loadtest validate`` and every message show the scenario through
:func:`redacted`; a request's error text goes through :func:`scrub`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

if TYPE_CHECKING:
    from loadtest.config.scenario import Scenario

__all__ = ["REDACTED", "redact_url", "redacted", "scrub", "secret_values", "shown_base_url", "url_secrets"]

REDACTED = "[redacted]"
_ONLY_REFERENCES = re.compile(r"(?:\$\{[A-Za-z_][A-Za-z0-9_]*\})+")  # "${KEY}": names a variable, holds no text
_MIN_SECRET = 4  # shorter values would turn ordinary words of an error text into [redacted]

S = TypeVar("S", bound="Scenario")


def _parts(url: str) -> tuple[str, str, str, str, str]:
    """(scheme://, userinfo, host and path, query, #fragment); by hand: urlsplit rejects ``[redacted]@host``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", "", url, "", ""
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    userinfo, at, host = rest[:cut].rpartition("@")
    rest, hash_, fragment = (host + rest[cut:]).partition("#")
    rest, _, query = rest.partition("?")
    return scheme + sep, userinfo if at else "", rest, query, hash_ + fragment


def redact_url(url: str) -> str:
    """``url`` without its credentials: userinfo becomes ``[redacted]@``, each query value ``[redacted]``."""
    head, userinfo, rest, query, fragment = _parts(url)
    if not userinfo and not query:
        return url
    pairs = (f"{k.partition('=')[0]}={REDACTED}" if "=" in k else REDACTED for k in query.split("&"))
    return head + (f"{REDACTED}@" if userinfo else "") + rest + (f"?{'&'.join(pairs)}" if query else "") + fragment


def url_secrets(url: str) -> list[str]:
    """The credentials inside ``url`` (userinfo, also in Basic-auth form; query values), as written and decoded."""
    _, userinfo, _, query, _ = _parts(url)
    found = []
    if userinfo:
        basic = base64.b64encode(unquote(userinfo).encode()).decode()  # the HTTP client sends it as Basic auth
        found += [userinfo, *userinfo.split(":", 1), basic]
    for item in query.split("&"):  # a bare ?TOKEN counts as a value too
        value = item.partition("=")[2] if "=" in item else item
        found += [value, unquote(value.replace("+", " "))]
    return [s for s in {*found, *(unquote(s) for s in found)} if s]


def _written(scenario: Scenario) -> dict[str, Any]:
    written = getattr(scenario.target, "_written", None)
    return written if isinstance(written, dict) else {}


def _as_written(written: dict[str, Any], field: str, value: str) -> str:
    """A value ``${VAR}`` expansion made, shown as the file wrote it; any other value as it is."""
    w = written.get(field)
    return w if isinstance(w, str) and "${" in w else value


def redacted(scenario: S) -> S:
    """The scenario as files, reports and messages may show it (see the module docstring)."""
    t, written = scenario.target, _written(scenario)
    headers_written = written.get("headers") if isinstance(written.get("headers"), dict) else {}

    def header(name: str) -> str:
        w = headers_written.get(name)
        return w if isinstance(w, str) and _ONLY_REFERENCES.fullmatch(w) else REDACTED

    target = t.model_copy(
        update={
            "base_url": redact_url(_as_written(written, "base_url", t.base_url)),
            "model": _as_written(written, "model", t.model),
            "headers": {name: header(name) for name in t.headers},
        }
    )
    update: dict[str, Any] = {"target": target}
    if (sm := scenario.server_metrics).url is not None:  # its credentials, like base_url's
        update["server_metrics"] = sm.model_copy(update={"url": redact_url(sm.url)})
    return scenario.model_copy(update=update)


def shown_base_url(scenario: Scenario, actual: str) -> str:
    """The endpoint a run talked to, as files and messages show it: the mock's own address, or the
    scenario's ``base_url`` redacted."""
    return actual if scenario.target.base_url == "mock" else redacted(scenario).target.base_url


def secret_values(base_url: str, api_key: str, headers: dict[str, str] | None) -> tuple[str, ...]:
    """What must never appear in a request's error text: the key, every header value, the URL's credentials."""
    values = {api_key, *(headers or {}).values(), *url_secrets(base_url)}
    return tuple(sorted((v for v in values if len(v) >= _MIN_SECRET), key=len, reverse=True))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (longest first, so a key inside a header value goes whole) replaced."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _MIN_SECRET:
            text = text.replace(secret, REDACTED)
    return text
