-- pgpulse: what the relay samples of a region every PGPULSE_DEPTH_INTERVAL_S, in one
-- command (Upstash bills per command). Redis 6.2 commands only; Redis's own clock.
--
-- KEYS[1..4] pgpulse:jobs:<region>:critical|high|normal|low
-- KEYS[5]    pgpulse:workers:<region>   zset: worker_id -> last claim (ms)
-- KEYS[6]    pgpulse:taken:<region>     string: when a claim last took a job (ms)
-- KEYS[7]    pgpulse:results:<region>   KEYS[8] pgpulse:results:<region>:dropped
-- ARGV[1]    a heartbeat younger than this (ms) is a live worker
--
-- Answer: {now_ms, depth, oldest_ms, workers_known, newest_heartbeat_ms, alive, taken_ms,
-- results, results_dropped}; oldest_ms is the slot of the oldest waiting job (a list's
-- tail), -1 for none (and for the other times: never).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- ISO 8601 UTC ("2026-11-29T19:35:17.250000Z") -> unix ms; nil when it is not one
local function unix_ms(text)
  if type(text) ~= 'string' then return nil end
  local y, mo, d, h, mi, s = string.match(text, '^(%d%d%d%d)-(%d%d)-(%d%d)T(%d%d):(%d%d):(%d%d)')
  if not y then return nil end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((mo + 9) % 12) + 2) / 5) + d - 1
  local days = era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
  return ((days * 24 + tonumber(h)) * 60 + tonumber(mi)) * 60000 + tonumber(s) * 1000
end

local depth, oldest = 0, -1
for i = 1, 4 do
  depth = depth + redis.call('LLEN', KEYS[i])
  local tail = redis.call('LINDEX', KEYS[i], -1)
  if tail then
    local ok, job = pcall(cjson.decode, tail)
    local slot = ok and type(job) == 'table' and unix_ms(job.scheduled_for)
    if slot and (oldest < 0 or slot < oldest) then oldest = slot end
  end
end
local known = redis.call('ZCARD', KEYS[5])
local newest = -1
if known > 0 then
  local top = redis.call('ZREVRANGE', KEYS[5], 0, 0, 'WITHSCORES')
  newest = tonumber(top[2])
end
local alive = redis.call('ZCOUNT', KEYS[5], now - tonumber(ARGV[1]), '+inf')
local taken = tonumber(redis.call('GET', KEYS[6]) or '-1')
local results = redis.call('LLEN', KEYS[7])
local dropped = tonumber(redis.call('GET', KEYS[8]) or '0')
return {now, depth, oldest, known, newest, alive, taken, results, dropped}
