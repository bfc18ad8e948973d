-- pgpulse queue contract v2: acknowledge (docs/queue-contract.md). One call for a batch.
-- Redis 6.2 commands only.
--
-- KEYS[1] pgpulse:inflight:<region>        KEYS[2] pgpulse:inflight:<region>:jobs
-- KEYS[3] pgpulse:inflight:<region>:runs   KEYS[4] pgpulse:done:<region>
-- KEYS[5] pgpulse:results:<region>          list: results for the relay, newest first
-- KEYS[6] pgpulse:results:<region>:dropped  string: results trimmed at the cap, ever
-- ARGV[1] worker_id   ARGV[2] done-marker margin past the job's expires_at (ms)
-- ARGV[3] most results the list holds (0: keep none)
-- ARGV[4...] per job: job_id, result (a JSON object as text; "" for none)
-- Every key it touches is one of KEYS (Upstash asks for that; job ids are members, never keys).
--
-- A job acknowledged leaves the in-flight set and gets its done marker (until its
-- expires_at plus the margin): a copy of it in a queue is skipped by every claim. Its
-- result, with the job's identity as the relay pushed it, goes on the results list; past
-- the cap the oldest results are trimmed and counted, so an ack never fails for results.
-- Answer per job: 1 acknowledged, 2 acknowledged although another worker held its lease
-- (it ran out and the job was claimed again), 0 not in flight (acknowledged before, or
-- its lease ran out and it expired or ran out of runs): its result is not kept.
local worker, margin = ARGV[1], tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local MAX_RESULT = 8192  -- a longer result is kept as null (the relay counts it malformed)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local answers, pushed = {}, 0
for i = 4, #ARGV, 2 do
  local id, result = ARGV[i], ARGV[i + 1]
  local meta = redis.call('HGET', KEYS[3], id)
  if not meta then
    answers[#answers + 1] = 0
  else
    local expires, owner = string.match(meta, '^%d+ (%d+) (.*)$')
    local body = redis.call('HGET', KEYS[2], id)
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    redis.call('ZADD', KEYS[4], tonumber(expires) + margin, id)
    answers[#answers + 1] = (owner == worker) and 1 or 2
    local ok, job = false, nil
    if cap > 0 and result ~= '' and body then
      ok, job = pcall(cjson.decode, body)
    end
    if ok and type(job) == 'table' then
      -- the slot as the relay pushed it: what the result is stored under
      local head = cjson.encode({
        job_id = id, monitor_id = job.monitor_id, region = job.region,
        scheduled_for = job.scheduled_for, slot_regions = job.slot_regions,
        worker = worker, acked_ms = now,
      })
      if #result > MAX_RESULT then result = 'null' end
      redis.call('LPUSH', KEYS[5], string.sub(head, 1, -2) .. ',"result":' .. result .. '}')
      pushed = pushed + 1
    end
  end
end
if pushed > 0 then
  local length = redis.call('LLEN', KEYS[5])
  if length > cap then
    redis.call('LTRIM', KEYS[5], 0, cap - 1)  -- the oldest go: the newest say most
    redis.call('INCRBY', KEYS[6], length - cap)
  end
end
return answers
