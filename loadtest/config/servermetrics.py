"""``server_metrics:``: the server's own Prometheus metrics, scraped through a run (README "Server metrics")."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ServerMetrics"]

_NAME = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]*$")  # a Prometheus metric name


class ServerMetrics(BaseModel):
    """Where and how often the server's ``/metrics`` is read while a run goes."""

    model_config = ConfigDict(extra="forbid")

    # auto: scraped when the URL answers (one line of notice when it does not); true: a URL that does not
    # answer is an error before the load starts; false: never asked
    enabled: bool | Literal["auto"] = "auto"
    url: str | None = None  # default: base_url without its /v1 (and query), + /metrics
    interval_s: Annotated[float, Field(ge=0.05)] = 1.0
    timeout_s: Annotated[float, Field(gt=0)] = 2.0  # one scrape's deadline (a late one skips its tick)
    metrics: list[str] = Field(default_factory=list)  # more metric families to keep, beside the known ones

    @field_validator("url")
    @classmethod
    def _is_a_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"https?://[^/\s]+", v):
            raise ValueError("expected an http(s):// URL")  # not echoed: it may hold credentials
        return v

    @field_validator("metrics")
    @classmethod
    def _are_names(cls, v: list[str]) -> list[str]:
        bad = [name for name in v if not _NAME.match(name)]
        if bad:
            raise ValueError(f"not a Prometheus metric name: {bad[0]!r}")
        return v
