-- Count one event in a fixed window: a token identity's connection attempts (SPEC 4:
-- connect_error RATE_LIMITED), and on a cluster a user's triggers (admit.lua's rate limit,
-- whose key is in another slot than the partition). A counter that somehow lost its expiry
-- gets one again: it must never count forever.
--
-- KEYS: the counter
-- ARGV: window_ms
-- Returns the attempts in the current window, this one included.
local count = redis.call('INCR', KEYS[1])
if count == 1 or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return count
