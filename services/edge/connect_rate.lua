-- Count one connection attempt of a token identity in a fixed window (SPEC 4: connect_error
-- RATE_LIMITED). A counter that somehow lost its expiry gets one again: it must never count
-- forever.
--
-- KEYS: the identity's counter
-- ARGV: window_ms
-- Returns the attempts in the current window, this one included.
local count = redis.call('INCR', KEYS[1])
if count == 1 or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return count
