"""Benchmark of the dev server: LPUSH through `/pipeline` requests, next to redis-benchmark.

Starts its own redis-server and dev server, sends `n_commands` LPUSH commands in
`/pipeline` requests of `batch` commands from `concurrency` keep-alive connections, and
checks that the list really holds them all. Each figure is the median of `runs` runs.
The request bodies are serialised once, so the client spends its CPU on HTTP, not JSON:
on a 2-core machine client, dev server and redis-server share the same cores.

The relay's own hot path is measured the same way: its push calls
(`relay.delivery.queue.PUSH_SCRIPT`, the very script the relay loads, one EVALSHA per request
of `batch` jobs) with the relay's keys and arguments.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import statistics
import subprocess
import time
from typing import Any

import httpx

from relay.config import RelaySettings
from relay.delivery.publish import Push, push_body
from relay.delivery.queue import PUSH_SCRIPT, dedup_key, queue_key
from relay.devserver import DevServer
from relay.local.embedded import EmbeddedRedis

TOKEN = "bench-token"
_VALUE = json.dumps(
    {
        "v": 1,
        "job_id": "00000000-0000-0000-0000-000000000000",
        "url": "https://example.com/health",
        "region": "us-east-1",
        "criticality": "normal",
        "attempt": 0,
    }
)
_REGION = "us-east-1"


async def _push(url: str, bodies: list[bytes], concurrency: int) -> float:
    """POST every body to /pipeline over `concurrency` connections; returns seconds."""
    queue = list(reversed(bodies))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=60
    ) as client:
        await client.post("/", content=b'["PING"]')  # open a connection before the clock starts

        async def worker() -> None:
            while queue:
                body = queue.pop()
                response = await client.post("/pipeline", content=body)
                if response.status_code != 200 or b'"error"' in response.content:
                    raise RuntimeError(
                        f"pipeline failed: {response.status_code} {response.text[:200]}"
                    )

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


async def _command(url: str, *args: Any) -> Any:
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        reply = (await client.post("/", json=list(args))).json()
    if "error" in reply:
        raise RuntimeError(reply["error"])
    return reply["result"]


def _lpush_bodies(n_commands: int, batch: int) -> list[bytes]:
    bodies = []
    for start in range(0, n_commands, batch):
        size = min(batch, n_commands - start)
        bodies.append(json.dumps([["LPUSH", "bench:lpush", _VALUE]] * size).encode())
    return bodies


def _evalsha_bodies(sha: str, n_commands: int, batch: int, run: int) -> list[bytes]:
    """The relay's push calls (relay/delivery/publish.py builds them): one EVALSHA per request of
    `batch` jobs, a fresh job id each, jobs that expire in an hour, the default dedup margin."""
    expires_at = str(int(time.time()) + 3600)
    margin = RelaySettings().dedup_margin_s
    keys_of = f'"{{}}","{queue_key(_REGION, "normal")}"'
    argv = f'{json.dumps(_VALUE)},"{expires_at}"'
    bodies = []
    for start in range(0, n_commands, batch):
        pushes = [
            Push(keys, argv, len(keys) + len(argv) + 2)
            for keys in (
                keys_of.format(dedup_key(f"bench-{run}-{i}"))
                for i in range(start, min(start + batch, n_commands))
            )
        ]
        bodies.append(push_body(sha, margin, pushes).encode())
    return bodies


def _redis_benchmark(port: int, n_commands: int, batch: int, runs: int) -> float | None:
    exe = shutil.which("redis-benchmark")
    if exe is None:
        return None
    figures = []
    for _ in range(runs):
        out = subprocess.run(
            [
                exe,
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-P",
                str(batch),
                "-t",
                "lpush",
                "-n",
                str(n_commands),
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        ).stdout
        match = re.search(r"LPUSH: ([\d.]+) requests per second", out)
        if match:
            figures.append(float(match.group(1)))
    return statistics.median(figures) if figures else None


async def bench_devserver(
    n_commands: int = 200_000, batch: int = 1000, concurrency: int = 4, runs: int = 3
) -> dict:
    """LPUSH/s through the dev server's /pipeline (median of `runs` runs)."""
    # started from this thread: a server's parent-death signal follows the thread that started it
    redis = EmbeddedRedis().start()
    try:
        server = DevServer(redis.url, {TOKEN: 0}, admin_token=None).start()
        try:
            lpush_bodies = _lpush_bodies(n_commands, batch)
            lpush_seconds = []
            for _ in range(runs):
                await _command(server.url, "DEL", "bench:lpush")
                lpush_seconds.append(await _push(server.url, lpush_bodies, concurrency))
                stored = await _command(server.url, "LLEN", "bench:lpush")
                if stored != n_commands:
                    raise RuntimeError(f"expected {n_commands} list entries, found {stored}")
            sha = await _command(server.url, "SCRIPT", "LOAD", PUSH_SCRIPT)
            evalsha_seconds = []
            for run in range(runs):
                await _command(server.url, "DEL", queue_key(_REGION, "normal"))
                bodies = _evalsha_bodies(sha, n_commands, batch, run)
                evalsha_seconds.append(await _push(server.url, bodies, concurrency))
                stored = await _command(server.url, "LLEN", queue_key(_REGION, "normal"))
                if stored != n_commands:
                    raise RuntimeError(f"expected {n_commands} jobs, found {stored}")
            await _command(server.url, "FLUSHDB")
        finally:
            server.stop()
        redis_benchmark = await asyncio.to_thread(
            _redis_benchmark, redis.port, n_commands, batch, runs
        )
    finally:
        redis.stop()
    seconds = statistics.median(lpush_seconds)
    return {
        "commands": n_commands,
        "seconds": round(seconds, 4),
        "lpush_per_s": round(n_commands / seconds),
        "runs": runs,
        "batch": batch,
        "concurrency": concurrency,
        "runs_lpush_per_s": [round(n_commands / s) for s in lpush_seconds],
        "evalsha_push_per_s": round(n_commands / statistics.median(evalsha_seconds)),
        "evalsha_script_sha1": sha,  # which push script that figure measured
        "redis_benchmark_lpush_per_s": round(redis_benchmark) if redis_benchmark else None,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(bench_devserver()), indent=2))
