"""Request counters, as `GET /_admin/stats` shows them:

    {"requests", "responses": {"200": n, ...}, "commands",
     "kinds": {"command", "pipeline", "multi-exec"},
     "faults": {"latency", "error", "hang", "drop", "inline_error", "malformed"},
     "dbs": {"0": {"requests", "commands"}}, "uptime_s"}

Admin requests are not counted.
"""

from __future__ import annotations

import collections
import time
from typing import Any

FAULT_KINDS = ("latency", "error", "hang", "drop", "inline_error", "malformed")


class Stats:
    """Counters since the start or the last `reset()`."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.started = time.monotonic()
        self.requests = 0
        self.commands = 0
        self.responses: collections.Counter[int] = collections.Counter()
        self.kinds: collections.Counter[str] = collections.Counter()
        self.faults = dict.fromkeys(FAULT_KINDS, 0)
        self.db_requests: collections.Counter[int] = collections.Counter()
        self.db_commands: collections.Counter[int] = collections.Counter()

    def count_commands(self, db: int, n: int) -> None:
        self.commands += n
        self.db_commands[db] += n

    def as_dict(self) -> dict[str, Any]:
        dbs = sorted(set(self.db_requests) | set(self.db_commands))
        return {
            "requests": self.requests,
            "responses": {str(status): n for status, n in sorted(self.responses.items())},
            "commands": self.commands,
            "kinds": dict(self.kinds),
            "faults": dict(self.faults),
            "dbs": {
                str(db): {"requests": self.db_requests[db], "commands": self.db_commands[db]}
                for db in dbs
            },
            "uptime_s": round(time.monotonic() - self.started, 3),
        }
