-- pgpulse: the relay takes a batch of results (docs/queue-contract.md, "Results").
-- Redis 6.2 commands only. Nothing is removed here: results_done.lua removes the batch once
-- PostgreSQL committed it, so a relay killed in between loses nothing (the next one ingests
-- the batch again, which changes nothing). One relay at a time drains a region's list.
--
-- KEYS[1] pgpulse:results:<region>          list (newest first: the batch is its tail)
-- KEYS[2] pgpulse:results:<region>:dropped  string: results trimmed at the cap, ever
-- KEYS[3] pgpulse:results:<region>:drainer  string: "<relay id> <batch>" of the relay
--         draining, until its lease ends
-- ARGV[1] relay id   ARGV[2] the batch's number (this relay's own count)
-- ARGV[3] most results   ARGV[4] lease (ms)
--
-- Answer: {1, dropped, length, results...} (the lease held while there are results), or
-- {0, dropped, length} while another relay holds the lease.
local holder = redis.call('GET', KEYS[3])
local dropped = tonumber(redis.call('GET', KEYS[2]) or '0')
local length = redis.call('LLEN', KEYS[1])
if holder and string.match(holder, '^%S+') ~= ARGV[1] then
  return {0, dropped, length}
end
local answer = {1, dropped, length}
if length == 0 then
  if holder then redis.call('DEL', KEYS[3]) end  -- nothing to drain: nothing to hold
  return answer
end
redis.call('SET', KEYS[3], ARGV[1] .. ' ' .. ARGV[2], 'PX', tonumber(ARGV[4]))
local batch = redis.call('LRANGE', KEYS[1], -tonumber(ARGV[3]), -1)
for i = 1, #batch do
  answer[3 + i] = batch[i]
end
return answer
