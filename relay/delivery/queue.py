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
# - a job is marked (SET NX: one marked before is a duplicate), then the marked jobs of a
#   queue go in one LPUSH per 500, in order; a push that fails (WRONGTYPE, OOM, a size
#   limit) takes its jobs' markers back, so it writes nothing;
# - errors (pcall) are the answers of the jobs they concern: the others are still tried,
#   so the answer says exactly what happened to each.
PUSH_SCRIPT = """\
local now = tonumber(redis.call('TIME')[1])
local margin = tonumber(ARGV[1])
local answers, queues, marked_of = {}, {}, {}
for i = 1, #KEYS / 2 do
  local queue, expires_at = KEYS[2 * i], tonumber(ARGV[2 * i + 1])
  if now >= expires_at then
    answers[i] = 2
  else
    local marked = redis.pcall('SET', KEYS[2 * i - 1], '1', 'NX', 'EXAT', expires_at + margin)
    if type(marked) == 'table' and marked.err then
      answers[i] = marked.err
    elseif not marked then
      answers[i] = 0
    else
      if not marked_of[queue] then
        marked_of[queue] = {}
        queues[#queues + 1] = queue
      end
      table.insert(marked_of[queue], i)
    end
  end
end
for _, queue in ipairs(queues) do
  local marked = marked_of[queue]
  for first = 1, #marked, 500 do
    local last = math.min(first + 499, #marked)
    local jobs = {}
    for k = first, last do
      jobs[#jobs + 1] = ARGV[2 * marked[k]]
    end
    local pushed = redis.pcall('LPUSH', queue, unpack(jobs))
    local failed = type(pushed) == 'table' and pushed.err
    for k = first, last do
      local i = marked[k]
      if failed then
        redis.pcall('DEL', KEYS[2 * i - 1])
        answers[i] = failed
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
