"""Pushing claimed jobs into a region's queues: /pipeline requests bounded by bytes, one
push-script call per job, each reply read into an Outcome."""

from __future__ import annotations

import json

from relay import logs
from relay.errors import MalformedReply, RequestRejected
from relay.outbox import Job
from relay.outcomes import DUPLICATE, EXPIRED, FAILED, HELD, PUSHED, Outcome
from relay.queue import DUPLICATE as SCRIPT_DUPLICATE
from relay.queue import EXPIRED as SCRIPT_EXPIRED
from relay.queue import dedup_key, queue_key
from relay.regions import Region
from relay.upstash import region_failure


def push_command(sha: str, target: str, job: Job, *, rerouted: bool,
                 dedup_margin_s: int) -> list[str]:
    """The one push-script call that puts a job into target's queue (docs/queue-contract.md)."""
    job_json = job.job_json
    if rerouted:  # the payload keeps its original region and says where it went
        job_json = f'{job_json[:-1]}, "delivered_to": "{target}"}}'
    return ["EVALSHA", sha, "2", dedup_key(job.job_id), queue_key(target, job.criticality),
            job_json, str(int(job.expires_at.timestamp())), str(dedup_margin_s)]


def read_reply(reply: dict, region_error: str | None) -> Outcome:
    """One push-script reply; region_error: the pipeline failed as a region (held)."""
    if "error" in reply:
        return Outcome(HELD if region_error else FAILED, str(reply["error"]))
    if reply.get("result") == SCRIPT_EXPIRED:
        return Outcome(EXPIRED)
    if reply.get("result") == SCRIPT_DUPLICATE:
        return Outcome(DUPLICATE)
    return Outcome(PUSHED)


class Publisher:
    def __init__(self, max_request_bytes: int, dedup_margin_s: int) -> None:
        self.max_request_bytes = max_request_bytes
        self.dedup_margin_s = dedup_margin_s

    async def publish(self, target: Region, jobs: list[Job], *,
                      rerouted: bool) -> list[Outcome]:
        """Pushes jobs to target's queues in /pipeline requests bounded by count and bytes;
        returns one Outcome per job."""
        try:
            sha = await target.ensure_script()
        except RequestRejected as exc:  # e.g. a proxy refusing everything: an attempt each
            return [Outcome(FAILED, str(exc))] * len(jobs)
        commands = [push_command(sha, target.code, job, rerouted=rerouted,
                                 dedup_margin_s=self.dedup_margin_s) for job in jobs]
        outcomes: list[Outcome] = [Outcome(FAILED, "not sent")] * len(jobs)
        limit = self.max_request_bytes
        start, size = 0, 2
        for i, command in enumerate(commands):
            bytes_ = len(json.dumps(command)) + 1
            if bytes_ + 2 > limit:  # alone over the limit: this job can never be sent
                if i > start:
                    await self._send(target, commands, outcomes, start, i)
                outcomes[i] = Outcome(FAILED, f"job of {bytes_} bytes is over the "
                                              f"{limit}-byte request limit")
                start, size = i + 1, 2
                continue
            if size + bytes_ > limit:
                await self._send(target, commands, outcomes, start, i)
                start, size = i, 2
            size += bytes_
        if start < len(commands):
            await self._send(target, commands, outcomes, start, len(commands))
        return outcomes

    async def _send(self, target: Region, commands: list[list[str]],
                    outcomes: list[Outcome], lo: int, hi: int, *,
                    reloaded: bool = False) -> None:
        """One /pipeline request for commands[lo:hi]; fills outcomes[lo:hi]."""
        try:
            replies = await target.client.pipeline(commands[lo:hi])
        except RequestRejected as exc:
            if exc.too_large and hi - lo > 1:  # split until each part fits
                mid = (lo + hi) // 2
                await self._send(target, commands, outcomes, lo, mid)
                await self._send(target, commands, outcomes, mid, hi)
                return
            # refused as a whole and for good: an attempt of each job, so that a request
            # the region will never take ends in the dead letters instead of looping
            outcomes[lo:hi] = [Outcome(FAILED, str(exc))] * (hi - lo)
            return
        except MalformedReply as exc:
            # which commands ran is unknown: each job is tried again in this region (its
            # dedup key makes that safe) at the cost of an attempt
            outcomes[lo:hi] = [Outcome(FAILED, str(exc), unclear=True)] * (hi - lo)
            return
        if not reloaded and any("NOSCRIPT" in str(r.get("error", "")) for r in replies):
            target.script_sha = None  # Redis lost its scripts (restart): load and push again
            logs.warning("script_reloaded", region=target.code)
            sha = await target.ensure_script()
            for command in commands[lo:hi]:
                command[1] = sha
            await self._send(target, commands, outcomes, lo, hi, reloaded=True)
            return
        region_error = region_failure(replies)
        outcomes[lo:hi] = [read_reply(reply, region_error) for reply in replies]
        if region_error:
            logs.warning("region_refused_writes", region=target.code, error=region_error[:300])
