"""The summary's ``search``: what limit discovery found, in numbers and in one line of words.

Three outcomes. A rate limit was met (429s came): its burst capacity and sustainable rate, from
the 429s and, where the server advertised them, from its x-ratelimit-* headers (``evidence``
says which). Errors or an SLO broke first: the highest rate that held, from the bisection. Or
nothing broke up to ``max_rate``: "no limit found up to N", and nothing is called sustainable
(the buckets never drained); headers whose remaining fell still estimate the refill, marked
unverified, with how long a full drain would take. Per-day limits are reported as advertised,
with the time a test would need to verify them.
"""

from __future__ import annotations

from typing import Any

from loadtest.analysis.checks import CANNOT_CONNECT, evaluate_slos
from loadtest.analysis.limitprobe import KINDS, Findings, ProbeSeries, findings
from loadtest.config.scenario import Scenario, Search

__all__ = ["search_result", "step_holds"]

_UNIT = {"requests": "requests", "tokens": "tokens"}


def step_holds(step: dict[str, Any], scenario: Scenario) -> bool:
    """A step is sustainable when its 429 share and error rate stay under the search's bounds and
    every SLO holds."""
    search = scenario.load.search
    max_429, max_err = (search.max_429_rate, search.max_error_rate) if search is not None else (0.0, 0.0)
    other_errors = step["error_rate"] - step["rate_429"]
    if not step["requests"]["sent"] or step["rate_429"] > max_429 or other_errors > max_err:
        return False
    return all(v["ok"] for v in evaluate_slos(step, scenario.slo))


def _per_min(value: float | None) -> float | None:
    return None if value is None else value * 60


def _tokens_per_request(step: dict[str, Any]) -> float:
    return (step["input_tokens"]["mean"] or 0.0) + (step["output_tokens"]["mean"] or 0.0)


def _empty() -> dict[str, Any]:
    return {
        "sustainable_rate_rps": None,
        "sustainable_rpm": None,
        "observed_rpm": None,
        "sustainable_tokens_per_min": None,
        "throttled_from_rpm": None,
        "burst_requests": None,
        "burst_tokens": None,
        "evidence": None,
        "verified_s": 0.0,
        "no_limit_found_up_to_rps": None,
        "binding": None,
        "from_429s": None,
        "from_headers": {},
        "first_429_s": None,  # since the run's start
        "steady_windows_s": [],
    }


def _from_headers(found: Findings | None, probe: ProbeSeries) -> dict[str, dict[str, Any]]:
    """Each advertised bucket: the fullest it was seen, its refill fitted over its drain (before
    any 429), and, while no 429 has come, how long it would last at the last step's rate."""
    out = {}
    for kind, fit in (found.fits if found is not None else {}).items():
        draining = found is not None and found.first_429 is None and fit.falling > 0
        out[kind] = {
            "window": probe.windows.get(kind),
            "capacity": fit.capacity,
            "refill_per_s": fit.refill,
            "refill_per_min": _per_min(fit.refill),
            "remaining": fit.remaining,
            "drain_s": fit.remaining / fit.falling if draining else None,  # until empty
            "full_drain_s": fit.capacity / fit.falling if draining else None,  # a full bucket
        }
    return out


def _limit_found(found: Findings, steps: list[dict[str, Any]], probe: ProbeSeries) -> dict[str, Any]:
    out = _empty()
    rps, tps = found.refill("requests"), found.refill("tokens")
    per_request = found.tokens_per_request
    headers = _from_headers(found, probe)
    bind = found.binding
    burst = found.burst
    if bind in headers:  # the binding bucket as the server counted it: exact, where 429s resolve one request
        cap = headers[bind]["capacity"]
        other = cap * per_request if bind == "requests" else cap / per_request if per_request else None
        burst = {bind: cap, next(k for k in KINDS if k != bind): other}
    trigger = next((s for s in steps if s["index"] == found.first_429_step), None)
    out.update(
        sustainable_rate_rps=rps,
        sustainable_rpm=_per_min(rps),
        observed_rpm=_per_min(rps),
        sustainable_tokens_per_min=_per_min(tps),
        throttled_from_rpm=_per_min(trigger["value"]) if trigger else None,
        burst_requests=(burst or {}).get("requests"),
        burst_tokens=(burst or {}).get("tokens"),
        evidence="both" if bind in headers else "429s",
        verified_s=found.verified_s,
        binding=bind,
        from_429s={
            "requests_per_s": rps,
            "tokens_per_s": tps,
            "burst_requests": (found.burst or {}).get("requests"),
            "burst_tokens": (found.burst or {}).get("tokens"),
            "throttled_share": found.throttled_share,
            "conclusive": found.conclusive,
        },
        from_headers=headers,
        first_429_s=found.first_429,
        steady_windows_s=[[w.start, w.end] for w in found.windows],
    )
    return out


def _no_limit(found: Findings | None, steps: list[dict[str, Any]], probe: ProbeSeries) -> dict[str, Any]:
    out = _empty()
    top = max(steps, key=lambda s: (s["value"], s["index"]))
    headers = _from_headers(found, probe)
    draining = {k: h["drain_s"] for k, h in headers.items() if h["drain_s"] is not None}
    sent = top["requests"]["sent"]
    admitted = sent - top["errors"].get("http_429", 0) - sum(top["errors"].get(k, 0) for k in CANNOT_CONNECT)
    out.update(
        observed_rpm=_per_min(top["value"] * admitted / sent) if sent else None,  # what was sent and admitted
        no_limit_found_up_to_rps=top["value"],
        evidence="headers" if any(h["refill_per_s"] is not None for h in headers.values()) else None,
        binding=min(draining, key=lambda k: draining[k]) if draining else None,  # the first to run out
        from_headers=headers,
    )
    return out


def _bisected(steps: list[dict[str, Any]], scenario: Scenario) -> dict[str, Any]:
    """Errors or an SLO broke before any 429: the highest rate that held."""
    out = _empty()
    held = [s for s in steps if step_holds(s, scenario)]
    best = max(held, key=lambda s: s["value"]) if held else None
    broke = [s for s in steps if not step_holds(s, scenario) and (best is None or s["value"] > best["value"])]
    first_broken = min(broke, key=lambda s: s["value"], default=None)
    out.update(
        sustainable_rate_rps=best["value"] if best else None,
        sustainable_rpm=_per_min(best["value"]) if best else None,  # the offered rate that held
        observed_rpm=_per_min(best["request_throughput"]) if best else None,
        # the offered rate times what a request carried (prompt + output tokens)
        sustainable_tokens_per_min=_per_min(best["value"] * _tokens_per_request(best)) if best else None,
        throttled_from_rpm=_per_min(first_broken["value"]) if first_broken else None,
        evidence="steps",
        verified_s=best["duration_s"] if best else 0.0,
        binding=_broken_by(first_broken, scenario) if first_broken else None,
    )
    return out


def _broken_by(step: dict[str, Any], scenario: Scenario) -> str:
    search = scenario.load.search
    limit = search.max_error_rate if search is not None else 0.0
    return "errors" if step["error_rate"] - step["rate_429"] > limit or not step["requests"]["sent"] else "slo"


def _per_day(probe: ProbeSeries, out: dict[str, Any], top: dict[str, Any], search: Search) -> list[dict[str, Any]]:
    """Per-day limits as advertised, and how long verifying one would take: draining what is left
    at the fastest this workload was admitted, then a steady window. Never tested here."""
    per_request = probe.tokens_per_request()
    fastest = {
        "requests": out["sustainable_rate_rps"] or top["request_throughput"],
        "tokens": (out["sustainable_tokens_per_min"] or 0) / 60 or top["request_throughput"] * per_request,
    }
    days = []
    for (kind, window), info in sorted(probe.advertised.items()):
        if window != "day" or info.get("limit") is None:
            continue
        left = info["remaining"] if info.get("remaining") is not None else info["limit"]
        net = (fastest[kind] or 0.0) - info["limit"] / 86400
        days.append(
            {
                "kind": kind,
                "limit": info["limit"],
                "remaining": info.get("remaining"),
                "reset_s": info.get("reset_s"),
                "at_per_s": fastest[kind],
                "verify_s": left / net + search.steady_s if net > 0 else None,
            }
        )
    return days


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "forever at that rate"
    return (
        f"{seconds / 3600:.1f} h"
        if seconds >= 5400
        else f"{seconds / 60:.1f} min"
        if seconds >= 120
        else f"{seconds:.0f} s"
    )


def _audit(out: dict[str, Any], advertised: dict[str, Any], days: list[dict[str, Any]]) -> str:
    parts = []
    for kind in KINDS:
        adv = advertised.get(kind) or {}
        if adv.get("limit") is None:
            continue
        per_min = adv["limit"] if adv.get("window", "minute") == "minute" else adv["limit"] / 1440
        text = f"advertised {adv['limit']:g} {kind} per {adv.get('window', 'minute')}"
        h = out["from_headers"].get(kind) or {}
        if h:
            text += f"; bucket seen holding {h['capacity']:,.0f}"
            if h["refill_per_min"] is not None:
                verified = "" if out["verified_s"] else ", not verified"
                text += f", refilling {h['refill_per_min']:,.0f}/min by its remaining header{verified}"
        if kind == "requests" and out["throttled_from_rpm"] is not None:
            text += f"; throttled from {out['throttled_from_rpm']:.0f} RPM"
        sustained = out["sustainable_rpm"] if kind == "requests" else out["sustainable_tokens_per_min"]
        if sustained is not None and out["evidence"] != "steps":
            text += f"; sustained {sustained:,.0f} {kind}/min after the bucket drained"
            text += f" ({100 * sustained / per_min:.0f}% of the per-minute limit)"
            text += "" if out["binding"] in (kind, None) else ", not the binding limit"
        parts.append(text)
    for d in days:
        parts.append(
            f"advertised {d['limit']:g} {d['kind']} per day ({d['remaining']:,.0f} left): not tested; verifying it "
            f"would take {_duration(d['verify_s'])} at {d['at_per_s'] * 60:,.0f} {d['kind']}/min"
        )
    if not parts:
        named = f"; the 429 messages name the {out['binding']} limit" if out["binding"] in KINDS else ""
        parts.append("no rate-limit headers were advertised" + named)
    return "; ".join(parts) if len(parts) == 1 else " | ".join(parts)


def _verdict(out: dict[str, Any]) -> str:
    """One line for the end of a run."""
    if out["no_limit_found_up_to_rps"] is not None:
        top = out["no_limit_found_up_to_rps"]
        text = f"no limit found up to {top:g} req/s ({top * 60:,.0f} requests/min): nothing drained, nothing verified"
        for kind, h in out["from_headers"].items():
            if h["refill_per_min"] is not None:
                text += (
                    f"; {kind} remaining fell: refill about {h['refill_per_min']:,.0f} {kind}/min (not verified), "
                    f"a full bucket lasts {_duration(h['full_drain_s'])} at {top:g} req/s"
                )
        if out["from_headers"] and not out["evidence"]:
            text += f"; no advertised remaining fell: every bucket refills faster than {top:g} req/s spend it"
        return text
    if out["evidence"] == "steps":
        if out["sustainable_rpm"] is None:
            return "no rate held, down to the lowest one tried"
        return (
            f"sustainable {out['sustainable_rpm']:,.0f} requests/min, {out['sustainable_tokens_per_min']:,.0f} "
            f"tokens/min (bound by {out['binding']}, throttled from {out['throttled_from_rpm'] or 0:,.0f} RPM)"
        )
    if out["sustainable_rpm"] is None:
        return "429s came, but no steady window could be measured"
    burst = f"{out['burst_requests']:,.0f} requests" if out["burst_requests"] is not None else "unknown"
    if out["burst_tokens"] is not None:
        burst += f" ({out['burst_tokens']:,.0f} tokens)"
    text = (
        f"burst capacity {burst}; sustainable {out['sustainable_rpm']:,.0f} requests/min, "
        f"{out['sustainable_tokens_per_min']:,.0f} tokens/min; binding: {out['binding'] or 'not advertised'} "
        f"(evidence: {out['evidence']}, steady state observed {out['verified_s']:.0f} s)"
    )
    if not (out["from_429s"] or {}).get("conclusive", True):
        share = out["from_429s"]["throttled_share"]
        text += f"; only {share:.0%} refused at the highest rate: the refill may be higher (raise max_rate)"
    return text


def search_result(
    steps: list[dict[str, Any]], scenario: Scenario, probe: ProbeSeries | None = None
) -> dict[str, Any] | None:
    """What limit discovery found (None when the run was no limit discovery)."""
    search = scenario.load.search
    if search is None or not steps:
        return None
    probe = probe if probe is not None else ProbeSeries(scenario.workload.max_tokens)
    found = findings(probe, {s["index"]: s["value"] for s in steps}) if len(probe) else None
    if found is not None and found.first_429 is not None:
        out = _limit_found(found, steps, probe)
    elif any(not step_holds(s, scenario) for s in steps):
        out = _bisected(steps, scenario)
    else:
        out = _no_limit(found, steps, probe)
    advertised = next((s["ratelimit"] for s in reversed(steps) if s.get("ratelimit")), None) or {}
    top = max(steps, key=lambda s: (s["value"], s["index"]))
    days = _per_day(probe, out, top, search)
    out.update(
        advertised=advertised,
        steps=len(steps),
        tokens_counted_as="prompt + max_tokens (charged at admission, as OpenAI documents)",
        per_day=days,
        audit=_audit(out, advertised, days),
    )
    out["verdict"] = _verdict(out)
    return out
