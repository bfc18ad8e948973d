"""The regional queues read straight from redis-server (not through the dev server), and the
queue contract's JSON schema."""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass
from datetime import datetime

import redis

from tests.support.cli import ROOT
from tests.support.regions import BY_CODE, REGIONS

SCHEMA = json.loads((ROOT / "docs" / "queue-contract.schema.json").read_text())


def parse_ts(text: str) -> datetime:
    """A timestamp of a job's JSON (RFC 3339, "Z" for UTC)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Published:
    """A job as found in Redis: which database (region) and list it sits in, and its value."""

    db: int
    key: str
    raw: bytes
    job: dict


class Queues:
    """Reads every region's queues straight from redis-server."""

    def __init__(self, url: str) -> None:
        self.clients = {r.db: redis.Redis.from_url(url, db=r.db) for r in REGIONS}

    def all(self) -> list[Published]:
        found = []
        for db, client in self.clients.items():
            for key in client.scan_iter(match="pgpulse:jobs:*", count=1000):
                for raw in client.lrange(key, 0, -1):
                    found.append(Published(db, key.decode(), raw, json.loads(raw)))
        return found

    def total(self) -> int:
        total = 0
        for client in self.clients.values():
            for key in client.scan_iter(match="pgpulse:jobs:*", count=1000):
                total += client.llen(key)
        return total

    def counts_by_job(self) -> collections.Counter:
        return collections.Counter(p.job["job_id"] for p in self.all())

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def assert_exactly_once(queues: Queues, expected: set[str]) -> list[Published]:
    """Every expected job is in exactly one queue slot of one region; nothing else is."""
    found = queues.all()
    counts = collections.Counter(p.job["job_id"] for p in found)
    twice = {job_id: n for job_id, n in counts.items() if n > 1}
    assert not twice, f"{len(twice)} jobs published more than once, e.g. {list(twice.items())[:3]}"
    missing = expected - counts.keys()
    assert not missing, f"{len(missing)} jobs never published, e.g. {sorted(missing)[:3]}"
    extra = counts.keys() - expected
    assert not extra, f"{len(extra)} unexpected jobs in the queues, e.g. {sorted(extra)[:3]}"
    for p in found:  # the list a job sits in matches its fields
        region = p.job.get("delivered_to", p.job["region"])
        assert p.key == f"pgpulse:jobs:{region}:{p.job['criticality']}", p.job
        assert BY_CODE[region].db == p.db, p.job
    return found
