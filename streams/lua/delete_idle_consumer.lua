-- Remove a consumer that has no lease and no pending entries, atomically (XGROUP DELCONSUMER
-- alone would drop pending entries of a consumer that is merely slow to renew its lease).
-- KEYS: the stream, the consumer's lease key. ARGV: the group, the consumer.
-- Returns 1 when it was removed.
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
