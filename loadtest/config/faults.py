"""The faults the mock can inject, by name, and the error class the harness must give each."""

from __future__ import annotations

__all__ = ["EXPECTED_CLASS", "FAULTS"]

# kind -> the error_class the harness must give it
EXPECTED_CLASS: dict[str, str] = {
    "http_500": "http_5xx",  # 500 with an OpenAI-style JSON error body
    "http_502": "http_5xx",
    "http_503": "http_5xx",
    "http_500_empty": "http_5xx",  # the same statuses without a body
    "http_502_empty": "http_5xx",
    "http_503_empty": "http_5xx",
    "reset": "reset",  # the connection is accepted, then reset before any response (an overloaded server)
    "drop": "stream_broken",  # the connection is dropped halfway through the stream
    "malformed": "bad_response",  # a data: line that is not JSON, halfway through
    "no_done": "stream_broken",  # the stream ends without data: [DONE]
    "stall": "timeout",  # no bytes for stall_s halfway through (beyond the client's idle timeout)
    "slow_first_byte": "timeout",  # nothing at all for slow_first_byte_s (beyond the client's timeout)
}
FAULTS = tuple(EXPECTED_CLASS)
