-- Admit one trigger atomically: idempotency, per-user rate limit, append. No partial state:
-- a repeat or a rate-limited trigger writes nothing but the rate counter.
--
-- KEYS: [rate key (per user),] result key (per user + trigger id), triggers stream. On a
--       cluster the rate key is in another slot than the partition's keys: the edge counts
--       the rate first (connect_rate.lua) and passes only the last two.
-- ARGV: window_ms, max_requests, result_ttl_s, maxlen, then the entry's field/value pairs
-- Returns {'new', entryId} | {'dup', entryId, outcome, eventId} | {'limited', retry_after_ms}
local result, stream = KEYS[#KEYS - 1], KEYS[#KEYS]
local window, max = tonumber(ARGV[1]), tonumber(ARGV[2])

local seen = redis.call('HMGET', result, '@@RESULT_ENTRY', '@@RESULT_OUTCOME', '@@RESULT_EVENT_ID')
if seen[1] or seen[2] then
  return {'dup', seen[1] or '', seen[2] or '', seen[3] or ''}
end

if #KEYS == 3 then
  local rate = KEYS[1]
  local count = redis.call('INCR', rate)
  if count == 1 then redis.call('PEXPIRE', rate, window) end
  if count > max then
    return {'limited', redis.call('PTTL', rate)}
  end
end

local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', stream, 'MAXLEN', '~', ARGV[4], '*', unpack(fields))
redis.call('HSET', result, '@@RESULT_ENTRY', id)
redis.call('EXPIRE', result, ARGV[3])
return {'new', id}
