-- An operator approves a pairing code (SPEC 10): compare-and-set on the pairing's hash only
-- (one key: the same on a cluster). KEYS[1]: the pairing's hash.
-- ARGV: the code, now (ms), how long the approved record waits for its device (ms), then
-- field/value pairs of the approval (tokens, identity).
if redis.call('HGET', KEYS[1], 'code') ~= ARGV[1] then
  return 'unknown'
end
if redis.call('HGET', KEYS[1], 'status') ~= 'waiting' then
  return 'used'
end
if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[1], 'expiresAt')) then
  return 'expired'
end
redis.call('HSET', KEYS[1], 'status', 'approved', unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 'approved'
