"""The queue contract regional workers rely on (docs/queue-contract.md): key names and the
idempotent push script."""

CRITICALITIES = ("critical", "high", "normal", "low")  # a worker pops critical first

# What the push script answers per job.
PUSHED, DUPLICATE, EXPIRED = 1, 0, 2

# KEYS: the job's dedup key, its queue. ARGV: the job's JSON, its expires_at (unix seconds),
# the dedup margin (seconds). Judged by Redis's own clock:
# - an expired job is never pushed, so nothing is published after its dedup key (which
#   outlives expires_at by the margin) could have expired;
# - the marker is set only after the push happened: a push that fails (WRONGTYPE, OOM, a
#   size limit) aborts the script with nothing written, and a failed SET undoes the push.
PUSH_SCRIPT = """\
local now = tonumber(redis.call('TIME')[1])
local expires_at = tonumber(ARGV[2])
if now >= expires_at then
  return 2
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('LPUSH', KEYS[2], ARGV[1])
local marked = redis.pcall('SET', KEYS[1], '1', 'EXAT', expires_at + tonumber(ARGV[3]))
if type(marked) == 'table' and marked.err then
  redis.call('LREM', KEYS[2], 1, ARGV[1])
  return marked
end
return 1
"""


def queue_key(region: str, criticality: str) -> str:
    return f"pgpulse:jobs:{region}:{criticality}"


def dedup_key(job_id: str) -> str:
    return f"pgpulse:dedup:{job_id}"
