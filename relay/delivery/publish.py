"""Pushing claimed jobs into a region's queues: one push-script call per request (as many
jobs as the request's byte bound takes), its answer read into one Outcome per job."""

from __future__ import annotations

from collections.abc import Callable
from json.encoder import encode_basestring_ascii as json_string
from typing import Any, NamedTuple

from relay import logs
from relay.delivery.outbox import Job
from relay.delivery.outcomes import DUPLICATE, EXPIRED, FAILED, HELD, PUSHED, Outcome
from relay.delivery.queue import DUPLICATE as SCRIPT_DUPLICATE
from relay.delivery.queue import EXPIRED as SCRIPT_EXPIRED
from relay.delivery.queue import PUSHED as SCRIPT_PUSHED
from relay.delivery.queue import dedup_key, queue_key
from relay.delivery.regions import Region
from relay.delivery.upstash import is_region_error, region_failure
from relay.errors import MalformedReply, PublishError, RequestRejected

# the request body around the jobs: [["EVALSHA","<sha1>","<keys>","<margin>", ...]]
CALL_OVERHEAD_BYTES = 100

# the script's answers, read once (no new dict per job)
_ANSWERS = {
    SCRIPT_PUSHED: {"result": SCRIPT_PUSHED},
    SCRIPT_DUPLICATE: {"result": SCRIPT_DUPLICATE},
    SCRIPT_EXPIRED: {"result": SCRIPT_EXPIRED},
}


class Push(NamedTuple):
    """One job's part of a push call (docs/queue-contract.md), JSON-encoded once: its
    keys (dedup key, queue), its arguments (the job's JSON, its expires_at) and the bytes
    they add to the request body."""

    keys: str  # '"<dedup key>","<queue>"'
    argv: str  # '"<job JSON, escaped>","<unix seconds>"'
    size: int

    @classmethod
    def of(cls, job: Job, target: str, *, rerouted: bool) -> Push:
        job_json = job.job_json
        if rerouted:  # the payload keeps its original region and says where it went
            job_json = f'{job_json[:-1]}, "delivered_to": "{target}"}}'
        # ids, region codes and criticalities need no escaping (they are checked on entry)
        keys = f'"{dedup_key(job.job_id)}","{queue_key(target, job.criticality)}"'
        argv = f'{json_string(job_json)},"{int(job.expires_at_s)}"'
        return cls(keys, argv, len(keys) + len(argv) + 2)


def push_body(sha: str, dedup_margin_s: int, pushes: list[Push]) -> str:
    """The /pipeline body of one EVALSHA of the push script that pushes these jobs:
    KEYS per job its dedup key and queue; ARGV the margin, then per job JSON and expiry."""
    return (
        f'[["EVALSHA",{json_string(sha)},"{2 * len(pushes)}",'
        + ",".join(p.keys for p in pushes)
        + f',"{int(dedup_margin_s)}",'
        + ",".join(p.argv for p in pushes)
        + "]]"
    )


def job_replies(region: str, jobs: int) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Reads the answer to one push call into one reply per job: the call's own error for
    each job, or the script's answer per job (a number, or that job's error as a string)."""

    def expand(replies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        (reply,) = replies  # the client checked: one reply per command
        if "error" in reply:
            return [{"error": reply["error"]}] * jobs
        answers = reply["result"]
        if not isinstance(answers, list) or len(answers) != jobs:
            got = f"{len(answers)} answers" if isinstance(answers, list) else "no list"
            raise MalformedReply(f"region {region}: the push script answered {got} for {jobs} jobs")
        return [
            _ANSWERS[a] if type(a) is int and a in _ANSWERS else _job_error(region, a)
            for a in answers
        ]

    return expand


def _job_error(region: str, answer: Any) -> dict[str, Any]:
    if isinstance(answer, str):
        return {"error": answer}
    # never guess what happened to a job
    raise MalformedReply(
        f"region {region}: the push script answered {str(answer)[:40]!r} for a job"
    )


# a job no request has carried yet (its outcome until one did)
_UNSENT = Outcome(FAILED, "not sent")

# one Outcome per kind of answer, shared (a batch has a thousand)
_OUTCOMES = {
    SCRIPT_PUSHED: Outcome(PUSHED),
    SCRIPT_DUPLICATE: Outcome(DUPLICATE),
    SCRIPT_EXPIRED: Outcome(EXPIRED),
}


def read_reply(reply: dict, region_error: str | None) -> Outcome:
    """One job's reply; region_error: the call failed as a region (held)."""
    if "error" in reply:
        return Outcome(HELD if region_error else FAILED, str(reply["error"]))
    result = reply.get("result")
    return (
        _OUTCOMES.get(result, _OUTCOMES[SCRIPT_PUSHED])
        if type(result) is int
        else _OUTCOMES[SCRIPT_PUSHED]
    )


class Publisher:
    def __init__(self, max_request_bytes: int, dedup_margin_s: int) -> None:
        self.max_request_bytes = max_request_bytes
        self.dedup_margin_s = dedup_margin_s

    async def publish(self, target: Region, jobs: list[Job], *, rerouted: bool) -> list[Outcome]:
        """Pushes jobs to target's queues, as many per request as its byte bound takes;
        returns one Outcome per job. Raises PublishError when a request failed that the
        region may have run (which jobs were pushed is unknown)."""
        try:
            await target.ensure_script()
        except RequestRejected as exc:
            if is_region_error(exc.error):  # e.g. a quota: the region's, not the jobs'
                return [Outcome(HELD, str(exc), cause=exc)] * len(jobs)
            # e.g. a proxy refusing everything: an attempt each
            return [Outcome(FAILED, str(exc))] * len(jobs)
        except PublishError as exc:  # no job was in that request: none was pushed
            return [Outcome(HELD, str(exc), cause=exc)] * len(jobs)
        pushes = [Push.of(job, target.code, rerouted=rerouted) for job in jobs]
        outcomes: list[Outcome] = [_UNSENT] * len(jobs)
        try:
            await self._send_all(target, pushes, outcomes)
        except PublishError as exc:
            if exc.may_have_run:
                raise
            # that request surely never ran: its jobs and those not sent yet go back as
            # they were (the region's breaker counted the failure)
            held = Outcome(HELD, str(exc), cause=exc)
            outcomes = [held if o is _UNSENT else o for o in outcomes]
        return outcomes

    async def _send_all(self, target: Region, pushes: list[Push], outcomes: list[Outcome]) -> None:
        """Sends the pushes in requests under the byte bound; fills their outcomes."""
        room = self.max_request_bytes - CALL_OVERHEAD_BYTES
        part: list[int] = []
        size = 0
        for i, push in enumerate(pushes):
            if push.size > room:  # alone over the limit: this job can never be sent
                outcomes[i] = Outcome(
                    FAILED,
                    f"job of {push.size + CALL_OVERHEAD_BYTES} bytes "
                    f"is over the {self.max_request_bytes}-byte "
                    "request limit",
                )
                continue
            if size + push.size > room:
                await self._send(target, pushes, outcomes, part)
                part, size = [], 0
            part.append(i)
            size += push.size
        if part:
            await self._send(target, pushes, outcomes, part)

    async def _send(
        self,
        target: Region,
        pushes: list[Push],
        outcomes: list[Outcome],
        part: list[int],
        *,
        reloaded: bool = False,
    ) -> None:
        """One request with one push call for the jobs at positions `part`; fills their
        outcomes."""
        body = push_body(target.script_sha or "", self.dedup_margin_s, [pushes[i] for i in part])
        try:
            replies = await target.client.push(body, job_replies(target.code, len(part)))
        except RequestRejected as exc:
            if exc.too_large and len(part) > 1:  # split until each part fits
                half = len(part) // 2
                await self._send(target, pushes, outcomes, part[:half])
                await self._send(target, pushes, outcomes, part[half:])
                return
            # the region refuses everything for now (a job alone over the size limit, though,
            # is that job's own failure)
            if is_region_error(exc.error) and not exc.too_large:
                held = Outcome(HELD, str(exc), cause=exc)
                for i in part:
                    outcomes[i] = held
                return
            # refused as a whole and for good: an attempt of each job, so that a request
            # the region will never take ends in the dead letters instead of looping
            for i in part:
                outcomes[i] = Outcome(FAILED, str(exc))
            return
        except MalformedReply as exc:
            # which jobs were pushed is unknown: each is tried again in this region (its
            # dedup key makes that safe) at the cost of an attempt
            for i in part:
                outcomes[i] = Outcome(FAILED, str(exc), unclear=True)
            return
        if not reloaded and any("NOSCRIPT" in str(r.get("error", "")) for r in replies):
            target.script_sha = None  # Redis lost its scripts (restart): load and push again
            logs.warning("script_reloaded", region=target.code)
            try:
                await target.ensure_script()
            except PublishError as exc:
                exc.may_have_run = False  # the push found no script, the load has no job
                raise
            await self._send(target, pushes, outcomes, part, reloaded=True)
            return
        region_error = region_failure(replies)
        for i, reply in zip(part, replies, strict=True):
            outcomes[i] = read_reply(reply, region_error)
        if region_error:
            logs.warning("region_refused_writes", region=target.code, error=region_error[:300])
