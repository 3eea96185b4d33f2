-- Renew (or take back) a consumer's name lease, if no other process holds it.
-- KEYS: the lease key. ARGV: this holder's token, the lease's lifetime (ms).
-- Returns 1 when this holder has the lease now, 0 when another one does.
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] or not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
