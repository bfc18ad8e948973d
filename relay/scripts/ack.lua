-- pgpulse queue contract v2: acknowledge (docs/queue-contract.md). One call for a batch.
-- Redis 6.2 commands only.
--
-- KEYS[1] pgpulse:inflight:<region>        KEYS[2] pgpulse:inflight:<region>:jobs
-- KEYS[3] pgpulse:inflight:<region>:runs   KEYS[4] pgpulse:done:<region>
-- ARGV[1] worker_id   ARGV[2] done-marker margin past the job's expires_at (ms)
-- ARGV[3...] per job: job_id, result (a JSON object as text; "" for none). Results are
-- reserved for the next contract revision: this version takes them and keeps none.
-- Every key it touches is one of KEYS (Upstash asks for that; job ids are members, never keys).
--
-- A job acknowledged leaves the in-flight set and gets its done marker (until its
-- expires_at plus the margin): a copy of it in a queue is skipped by every claim.
-- Answer per job: 1 acknowledged, 2 acknowledged although another worker held its lease
-- (it ran out and the job was claimed again), 0 not in flight (acknowledged before, or
-- its lease ran out and it expired or ran out of runs).
local worker, margin = ARGV[1], tonumber(ARGV[2])
local answers = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local meta = redis.call('HGET', KEYS[3], id)
  if not meta then
    answers[#answers + 1] = 0
  else
    local expires, owner = string.match(meta, '^%d+ (%d+) (.*)$')
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    redis.call('ZADD', KEYS[4], tonumber(expires) + margin, id)
    answers[#answers + 1] = (owner == worker) and 1 or 2
  end
end
return answers
