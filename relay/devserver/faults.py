"""Fault injection: the rules the admin API installs, and the dice they roll.

`POST /_admin/faults` (or PUT) installs a rule; its body:

    {"tokens": ["tok-a"],         # optional: only these tokens; omitted = every token
     "latency_ms": 50,            # added to every request
     "jitter_ms": 20,             # plus uniform 0..jitter_ms
     "error_rate": 0.1,           # share of requests answered with an error status
     "error_statuses": [500, 502, 503],
     "hang_rate": 0.0,            # share of requests never answered (until the client leaves)
     "drop_rate": 0.0,            # share of connections closed without a response
     "inline_error_rate": 0.0,    # share of /pipeline commands answered with an inline error
     "inline_error": "ERR devserver injected fault",
     "inline_error_match": "poison",  # /pipeline commands whose JSON contains this text
                                  # always get inline_error (a job that fails on its own)
     "malformed_rate": 0.0,       # share of /pipeline answers mangled after the commands ran
     "malformed": "short",        # how: "short" (one reply missing), "not_list",
                                  # "bad_items" (replies that are not objects), "not_json"
     "max_request_bytes": 0,      # a request body over this gets Upstash's 400 "max
                                  # request size exceeded" (0: the server's 10 MiB)
     "phase": "before",           # "after": run the commands, then fail the response
     "time_shift_s": 0,           # a single TIME command (POST / ["TIME"]) answers this
                                  # many seconds off (a Redis clock that is wrong, for
                                  # clock-skew tests; TIME inside scripts is not shifted)
     "seed": 42}                  # optional: reseed the fault dice

Region-level inline errors (Upstash's "ERR DB capacity quota exceeded", "READONLY ...",
"OOM ...") are `inline_error_rate: 1` with that `inline_error`. A list over Upstash's
record size, or a queue key of the wrong type, is set up in redis-server itself (e.g. a
string where the list should be: a real WRONGTYPE inside the push script).

Every field is optional (default 0 / off). A rule for listed tokens replaces the
default rule for those tokens; a rule without `tokens` replaces the default rule.
`error_rate + hang_rate + drop_rate` must not exceed 1.
"""

from __future__ import annotations

import json
import random
from typing import Any


class FaultRule:
    """One fault-injection rule, validated."""

    _FIELDS = {
        "latency_ms",
        "jitter_ms",
        "error_rate",
        "error_statuses",
        "hang_rate",
        "drop_rate",
        "inline_error_rate",
        "inline_error",
        "inline_error_match",
        "malformed_rate",
        "malformed",
        "max_request_bytes",
        "phase",
        "time_shift_s",
        "seed",
    }
    MALFORMED = ("short", "not_list", "bad_items", "not_json")

    def __init__(self, spec: dict[str, Any]) -> None:
        unknown = set(spec) - self._FIELDS
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        self.latency_ms = self._number(spec, "latency_ms", 0.0, 600_000.0)
        self.jitter_ms = self._number(spec, "jitter_ms", 0.0, 600_000.0)
        self.error_rate = self._number(spec, "error_rate", 0.0, 1.0)
        self.hang_rate = self._number(spec, "hang_rate", 0.0, 1.0)
        self.drop_rate = self._number(spec, "drop_rate", 0.0, 1.0)
        self.inline_error_rate = self._number(spec, "inline_error_rate", 0.0, 1.0)
        if self.error_rate + self.hang_rate + self.drop_rate > 1.0 + 1e-9:
            raise ValueError("error_rate + hang_rate + drop_rate must not exceed 1")
        statuses = spec.get("error_statuses", [500, 502, 503])
        if (
            not isinstance(statuses, list)
            or not statuses
            or not all(type(s) is int and 400 <= s <= 599 for s in statuses)
        ):
            raise ValueError("error_statuses must be a non-empty list of HTTP statuses 400-599")
        self.error_statuses = statuses
        inline_error = spec.get("inline_error", "ERR devserver injected fault")
        if not isinstance(inline_error, str) or not inline_error:
            raise ValueError("inline_error must be a non-empty string")
        self.inline_error = inline_error
        match = spec.get("inline_error_match")
        if match is not None and (not isinstance(match, str) or not match):
            raise ValueError("inline_error_match must be a non-empty string")
        self.inline_error_match = match
        self.malformed_rate = self._number(spec, "malformed_rate", 0.0, 1.0)
        self.malformed = spec.get("malformed", "short")
        if self.malformed not in self.MALFORMED:
            raise ValueError(f"malformed must be one of {', '.join(self.MALFORMED)}")
        self.max_request_bytes = int(self._number(spec, "max_request_bytes", 0.0, 1e9))
        self.phase = spec.get("phase", "before")
        if self.phase not in ("before", "after"):
            raise ValueError('phase must be "before" or "after"')
        self.time_shift_s = self._number(spec, "time_shift_s", -86400.0 * 366, 86400.0 * 366)
        self.seed = spec.get("seed")
        if self.seed is not None and type(self.seed) is not int:
            raise ValueError("seed must be an integer")
        self.delays = self.latency_ms > 0 or self.jitter_ms > 0

    @staticmethod
    def _number(spec: dict[str, Any], name: str, low: float, high: float) -> float:
        value = spec.get(name, 0)
        if type(value) not in (int, float) or not low <= value <= high:
            raise ValueError(f"{name} must be a number from {low:g} to {high:g}")
        return float(value)

    def as_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "jitter_ms": self.jitter_ms,
            "error_rate": self.error_rate,
            "error_statuses": self.error_statuses,
            "hang_rate": self.hang_rate,
            "drop_rate": self.drop_rate,
            "inline_error_rate": self.inline_error_rate,
            "inline_error": self.inline_error,
            "inline_error_match": self.inline_error_match,
            "malformed_rate": self.malformed_rate,
            "malformed": self.malformed,
            "max_request_bytes": self.max_request_bytes,
            "phase": self.phase,
            "time_shift_s": self.time_shift_s,
        }

    def delay_s(self, rng: random.Random) -> float:
        return (self.latency_ms + rng.uniform(0.0, self.jitter_ms)) / 1000.0

    def draw(self, rng: random.Random) -> str | int | None:
        """Roll the dice for one request: "drop", "hang", an error status, or None."""
        u = rng.random()
        if u < self.drop_rate:
            return "drop"
        u -= self.drop_rate
        if u < self.hang_rate:
            return "hang"
        u -= self.hang_rate
        if u < self.error_rate:
            return rng.choice(self.error_statuses)
        return None

    def draw_inline_errors(self, rng: random.Random, commands: list) -> set[int]:
        """Roll the dice for each command of a pipeline: the positions that fail inline
        (and those matching inline_error_match, always)."""
        p = self.inline_error_rate
        failing = {i for i in range(len(commands)) if p > 0 and rng.random() < p}
        if self.inline_error_match:
            failing |= {
                i
                for i, command in enumerate(commands)
                if self.inline_error_match in json.dumps(command)
            }
        return failing

    @property
    def injects_inline(self) -> bool:
        return self.inline_error_rate > 0 or self.inline_error_match is not None

    def oversized(self, size: int) -> str | None:
        """Upstash's size error when a request body is over this rule's limit."""
        if self.max_request_bytes and size > self.max_request_bytes:
            return (
                f"ERR max request size exceeded. Limit: {self.max_request_bytes} bytes, "
                f"Actual: {size} bytes"
            )
        return None

    def shift_time(self, command: Any, reply: Any) -> Any:
        """A TIME reply ([seconds, microseconds], str or bytes) moved by time_shift_s."""
        if not (
            self.time_shift_s
            and isinstance(command, list)
            and len(command) == 1
            and str(command[0]).upper() == "TIME"
            and isinstance(reply, list)
            and len(reply) == 2
        ):
            return reply
        micros = int(reply[0]) * 1_000_000 + int(reply[1]) + round(self.time_shift_s * 1e6)
        shifted = [str(micros // 1_000_000), str(micros % 1_000_000)]
        return [s.encode() for s in shifted] if isinstance(reply[0], bytes) else shifted

    def malform(self, rng: random.Random, payload: bytes) -> bytes | None:
        """A mangled version of a /pipeline answer (the commands did run), or None."""
        if self.malformed_rate <= 0 or rng.random() >= self.malformed_rate:
            return None
        if self.malformed == "not_json":
            return payload[: max(len(payload) // 2, 1)]
        replies = json.loads(payload)
        if self.malformed == "short":
            return json.dumps(replies[:-1]).encode()
        if self.malformed == "not_list":
            return json.dumps({"result": replies}).encode()
        return json.dumps([r.get("result", r.get("error")) for r in replies]).encode()


class Faults:
    """The default rule and the per-token rules."""

    def __init__(self, tokens: dict[str, int]) -> None:
        self.tokens = tokens
        self.default: FaultRule | None = None
        self.by_token: dict[str, FaultRule] = {}
        self.rng = random.Random()

    def rule_for(self, token: str) -> FaultRule | None:
        return self.by_token.get(token, self.default) if self.by_token else self.default

    def install(self, spec: Any) -> None:
        """Apply an admin spec (see the module docstring); raises ValueError."""
        if not isinstance(spec, dict):
            raise ValueError("the fault spec must be a JSON object")
        spec = dict(spec)
        tokens = spec.pop("tokens", None)
        rule = FaultRule(spec)
        if rule.seed is not None:
            self.rng.seed(rule.seed)
        if tokens is None:
            self.default = rule
            return
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError("tokens must be a list of strings")
        for position, token in enumerate(tokens, start=1):
            if token not in self.tokens:
                raise ValueError(f"tokens #{position} is not a token this server knows")
        for token in tokens:
            self.by_token[token] = rule

    def clear(self) -> None:
        self.default = None
        self.by_token.clear()

    def describe(self) -> dict[str, Any]:
        return {
            "default": self.default.as_dict() if self.default else None,
            "scoped": [
                {"db": self.tokens[token], "token_hint": token[:4] + "…", **rule.as_dict()}
                for token, rule in self.by_token.items()
            ],
        }
