-- Rotate a refresh token (SPEC 5): each is single-use; presenting a used one revokes its family.
-- KEYS: the token's state key, its family's revocation key, the new token's state key.
-- ARGV: the family revocation's lifetime (s), the new token's lifetime (s).
-- Returns 'rotated' | 'reused' (the family is revoked now) | 'revoked' | 'unknown'.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 'revoked'
end
local state = redis.call('GET', KEYS[1])
if state == 'unused' then
  redis.call('SET', KEYS[1], 'used', 'KEEPTTL')
  redis.call('SET', KEYS[3], 'unused', 'EX', ARGV[2])
  return 'rotated'
end
if state == 'used' then
  redis.call('SET', KEYS[2], 'revoked', 'EX', ARGV[1])
  return 'reused'
end
return 'unknown'
