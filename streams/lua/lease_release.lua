-- Give up a consumer's name lease, if this holder still has it.
-- KEYS: the lease key. ARGV: this holder's token. Returns 1 when it was released.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
