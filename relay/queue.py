"""The queue contract regional workers rely on (docs/queue-contract.md): key names and the
idempotent push script."""

CRITICALITIES = ("critical", "high", "normal", "low")  # a worker pops critical first

# What the push script answers per job (or the job's own error, as a string).
PUSHED, DUPLICATE, EXPIRED = 1, 0, 2

# One call pushes a batch. KEYS: per job its dedup key and its queue. ARGV: the dedup margin
# (seconds), then per job its JSON and its expires_at (unix seconds). Answers one entry per
# job, in order. Judged by Redis's own clock:
# - an expired job is never pushed, so nothing is published after its dedup key (which
#   outlives expires_at by the margin) could have expired;
# - the marker is set (SET NX: a job marked before is a duplicate) and the job pushed
#   together: a push that fails (WRONGTYPE, OOM, a size limit) takes its marker back, so it
#   writes nothing;
# - one job's error (pcall) is that job's answer: the jobs before it stay pushed and the
#   ones after it are still tried, so the answer says exactly what happened to each.
PUSH_SCRIPT = """\
local now = tonumber(redis.call('TIME')[1])
local margin = tonumber(ARGV[1])
local answers = {}
for i = 1, #KEYS / 2 do
  local dedup, queue = KEYS[2 * i - 1], KEYS[2 * i]
  local job, expires_at = ARGV[2 * i], tonumber(ARGV[2 * i + 1])
  if now >= expires_at then
    answers[i] = 2
  else
    local marked = redis.pcall('SET', dedup, '1', 'NX', 'EXAT', expires_at + margin)
    if type(marked) == 'table' and marked.err then
      answers[i] = marked.err
    elseif not marked then
      answers[i] = 0
    else
      local pushed = redis.pcall('LPUSH', queue, job)
      if type(pushed) == 'table' and pushed.err then
        redis.pcall('DEL', dedup)
        answers[i] = pushed.err
      else
        answers[i] = 1
      end
    end
  end
end
return answers
"""


def queue_key(region: str, criticality: str) -> str:
    return f"pgpulse:jobs:{region}:{criticality}"


def dedup_key(job_id: str) -> str:
    return f"pgpulse:dedup:{job_id}"
