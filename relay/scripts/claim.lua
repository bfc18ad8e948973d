-- pgpulse queue contract v2: claim (docs/queue-contract.md). One call, whatever the batch.
-- Redis 6.2 commands only; Redis's own clock (TIME) judges leases, expiry and heartbeats.
--
-- KEYS[1..4]  pgpulse:jobs:<region>:critical|high|normal|low   (the v1 lists)
-- KEYS[5]     pgpulse:inflight:<region>        zset  job_id -> lease deadline (ms)
-- KEYS[6]     pgpulse:inflight:<region>:jobs   hash  job_id -> job JSON, as pushed
-- KEYS[7]     pgpulse:inflight:<region>:runs   hash  job_id -> "<runs> <expires ms> <worker>"
-- KEYS[8]     pgpulse:workers:<region>         zset  worker_id -> last claim (ms)
-- KEYS[9]     pgpulse:claimround:<region>      string: where the weighted round stands
-- KEYS[10]    pgpulse:done:<region>            zset  job_id -> skipped until (ms): it ran
-- KEYS[11]    pgpulse:taken:<region>           string: when a claim last took a job (ms)
-- ARGV[1] worker_id   ARGV[2] n (jobs wanted, 0: heartbeat only)
-- ARGV[3] lease margin (ms)   ARGV[4] most runs of one job
-- Every key it touches is one of KEYS (Upstash asks for that; job ids are members, never keys).
--
-- Answer: {now_ms, expired, malformed, duplicates, jobs, failed}; jobs and failed are flat
-- lists of (job_id, job JSON, run, lease deadline ms): jobs to run now (run 1, or a later
-- run of a job whose lease ran out), and jobs that ran out of runs (not to be run: report
-- them as failed to run).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local worker, n = ARGV[1], tonumber(ARGV[2])
local margin, max_runs = tonumber(ARGV[3]), tonumber(ARGV[4])
local inflight, bodies, runs_of, done = KEYS[5], KEYS[6], KEYS[7], KEYS[10]

redis.call('ZADD', KEYS[8], now, worker)
redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', now - 86400000)  -- gone for a day
redis.call('ZREMRANGEBYSCORE', done, '-inf', now)  -- done markers past their time

-- ISO 8601 UTC ("2026-11-29T19:35:17.250000Z") -> unix ms; nil when it is not one
local function unix_ms(text)
  if type(text) ~= 'string' then return nil end
  local y, mo, d, h, mi, s = string.match(text, '^(%d%d%d%d)-(%d%d)-(%d%d)T(%d%d):(%d%d):(%d%d)')
  if not y then return nil end
  local frac = string.match(text, '^%.(%d+)', 20) or ''
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo <= 2 then y = y - 1 end  -- days from the civil date (March-based years)
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((mo + 9) % 12) + 2) / 5) + d - 1
  local days = era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
  local ms = tonumber((string.sub(frac .. '000', 1, 3)))
  return ((days * 24 + tonumber(h)) * 60 + tonumber(mi)) * 60000 + tonumber(s) * 1000 + ms
end

-- how long one run of the check may take: its timeout per attempt, its delays, a margin
local function lease_ms(job)
  local timeout = tonumber(job.timeout_ms) or 10000
  local attempts, delay = 1, 0
  if type(job.retry) == 'table' then
    attempts = math.max(1, math.min(tonumber(job.retry.max_attempts) or 1, 10))
    delay = tonumber(job.retry.delay_ms) or 0
  end
  return timeout * attempts + delay * (attempts - 1) + margin
end

local jobs, failed = {}, {}
local expired, malformed, duplicates, taken = 0, 0, 0, 0

-- 1. jobs whose lease ran out come back to this claimer first (they are the oldest)
if n > 0 then
  local lapsed = redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, n)
  for _, id in ipairs(lapsed) do
    local meta = redis.call('HGET', runs_of, id)
    local body = redis.call('HGET', bodies, id)
    local runs, expires = 0, 0
    if meta then
      local r, e = string.match(meta, '^(%d+) (%d+)')
      runs, expires = tonumber(r), tonumber(e)
    end
    if not body or not meta or now >= expires then
      redis.call('ZREM', inflight, id)
      redis.call('HDEL', bodies, id)
      redis.call('HDEL', runs_of, id)
      expired = expired + 1
    elseif runs >= max_runs then
      redis.call('ZREM', inflight, id)
      redis.call('HDEL', bodies, id)
      redis.call('HDEL', runs_of, id)
      redis.call('ZADD', done, expires, id)
      local f = #failed
      failed[f + 1], failed[f + 2], failed[f + 3], failed[f + 4] = id, body, runs, 0
    else
      local ok, job = pcall(cjson.decode, body)
      local deadline = now + ((ok and type(job) == 'table') and lease_ms(job) or margin)
      redis.call('ZADD', inflight, deadline, id)
      redis.call('HSET', runs_of, id, (runs + 1) .. ' ' .. expires .. ' ' .. worker)
      local j = #jobs
      jobs[j + 1], jobs[j + 2], jobs[j + 3], jobs[j + 4] = id, body, runs + 1, deadline
      taken = taken + 1
    end
  end
end

-- 2. new jobs, in a weighted round of 15 places: critical 8, high 4, normal 2, low 1; a
-- place whose list is empty goes to the others in priority order. The round goes on from
-- call to call, so under load critical gets 8/15 and low 1/15, whatever n is.
local ROUND = {1, 2, 1, 3, 1, 2, 1, 4, 1, 2, 1, 3, 1, 2, 1}
local want = n - taken
local at = 0
if want > 0 then
  at = tonumber(redis.call('INCRBY', KEYS[9], want)) - want
end
-- the lists a place tries: its own, then the others from critical down
local ORDER = {{1, 2, 3, 4}, {2, 1, 3, 4}, {3, 1, 2, 4}, {4, 1, 2, 3}}
local empty = {false, false, false, false}
local pops, k = 0, 0
while taken < n and pops < n + 1000 do
  local body = nil
  for _, list in ipairs(ORDER[ROUND[(at + k) % 15 + 1]]) do
    if not empty[list] then
      body = redis.call('RPOP', KEYS[list])
      if body then break end
      empty[list] = true
    end
  end
  if not body then break end
  pops = pops + 1
  local ok, job = pcall(cjson.decode, body)
  local id = ok and type(job) == 'table' and job.job_id
  local expires = id and unix_ms(job.expires_at)
  if type(id) ~= 'string' or id == '' or #id > 200 or not expires then
    malformed = malformed + 1
  elseif now >= expires then
    expired = expired + 1
  elseif redis.call('HEXISTS', bodies, id) == 1 or redis.call('ZSCORE', done, id) then
    duplicates = duplicates + 1
  else
    local deadline = now + lease_ms(job)
    redis.call('ZADD', inflight, deadline, id)
    redis.call('HSET', bodies, id, body)
    redis.call('HSET', runs_of, id, '1 ' .. expires .. ' ' .. worker)
    local j = #jobs
    jobs[j + 1], jobs[j + 2], jobs[j + 3], jobs[j + 4] = id, body, 1, deadline
    taken = taken + 1
    k = k + 1
  end
end
-- the relay tells a region whose workers take nothing from one whose workers are slow
if taken > 0 then
  redis.call('SET', KEYS[11], now)
end
return {now, expired, malformed, duplicates, jobs, failed}
