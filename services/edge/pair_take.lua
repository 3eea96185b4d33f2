-- A device polls its pairing (SPEC 10). KEYS[1]: the pairing's hash. ARGV[1]: now (ms).
-- Approved: the record (tokens included) is returned and deleted in the same step, so the
-- tokens are handed out once. Waiting past expiresAt: "expired" (kept a while for the 410).
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return {'unknown'}
end
if status == 'approved' then
  local record = redis.call('HGETALL', KEYS[1])
  redis.call('DEL', KEYS[1])
  table.insert(record, 1, 'approved')
  return record
end
if tonumber(ARGV[1]) > tonumber(redis.call('HGET', KEYS[1], 'expiresAt')) then
  return {'expired'}
end
return {'waiting'}
