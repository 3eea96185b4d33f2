-- Replace a live projection only if it is still what the comparison saw (the worker may have
-- projected a newer trigger meanwhile): compare-and-set on its trigger entry id.
-- KEYS: the screen's projection hash. ARGV: the entry id seen, then field/value pairs.
-- Returns 1 when replaced.
local live = redis.call('HGET', KEYS[1], '@@PROJECTION_TRIGGER_ENTRY_ID') or ''
if live ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if #ARGV > 1 then redis.call('HSET', KEYS[1], unpack(ARGV, 2)) end
return 1
