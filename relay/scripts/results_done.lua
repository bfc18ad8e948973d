-- pgpulse: a batch of results is in PostgreSQL; remove it (see results_take.lua).
-- Redis 6.2 commands only.
--
-- KEYS[1] pgpulse:results:<region>   KEYS[2] pgpulse:results:<region>:dropped
-- KEYS[3] pgpulse:results:<region>:drainer
-- ARGV[1] relay id   ARGV[2] the batch's number   ARGV[3] results in the batch
-- ARGV[4] the dropped count the take saw   ARGV[5] release the lease after (1) or keep it (0)
--
-- The batch was the list's tail. Acks since then may have trimmed the tail at the cap
-- (oldest first: the batch's results first), counted in KEYS[2]: only what is left of the
-- batch is removed. Nothing is removed when another relay holds the lease now (it ingests
-- the same results again), nor a second time (a call repeated after a lost answer).
-- Answer: results removed, or -1 when the batch is not this relay's to remove (the lease
-- still released when asked, if it is this relay's).
local holder = redis.call('GET', KEYS[3])
if holder ~= ARGV[1] .. ' ' .. ARGV[2] then
  if ARGV[5] == '1' and holder and string.match(holder, '^%S+') == ARGV[1] then
    redis.call('DEL', KEYS[3])  -- a relay stopping: its lease goes with it
  end
  return -1
end
local trimmed = tonumber(redis.call('GET', KEYS[2]) or '0') - tonumber(ARGV[4])
local left = tonumber(ARGV[3]) - trimmed
if left > 0 then
  redis.call('LTRIM', KEYS[1], 0, -left - 1)
else
  left = 0
end
if ARGV[5] == '1' then
  redis.call('DEL', KEYS[3])
else
  redis.call('SET', KEYS[3], ARGV[1] .. ' done', 'KEEPTTL')
end
return left
