"""The queue contract regional workers rely on (docs/queue-contract.md): key names and the
idempotent push script."""

CRITICALITIES = ("critical", "high", "normal", "low")  # a worker pops critical first
CONTRACT_VERSION = 1

# Sets the job's dedup key only if absent, and only then pushes: a job published twice
# (a relay crashed between push and commit) lands in the queue once.
PUSH_SCRIPT = """\
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  redis.call('LPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
"""


def queue_key(region: str, criticality: str) -> str:
    return f"pgpulse:jobs:{region}:{criticality}"


def dedup_key(job_id: str) -> str:
    return f"pgpulse:dedup:{job_id}"
