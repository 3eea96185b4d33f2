-- Move one dead-letter entry back to its source stream, atomically: append the original
-- fields (without the dead-letter bookkeeping) and delete the dead-letter entry in one step,
-- so two operators redriving the same entry append it once.
--
-- KEYS: dead-letter stream, source stream
-- ARGV: dead-letter entry id, maxlen, then the names of the added fields to drop
-- Returns the new entry id, or false when the dead-letter entry is gone.
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return false end
local drop = {}
for i = 3, #ARGV do drop[ARGV[i]] = true end
local fields = found[1][2]
local out = {}
for i = 1, #fields, 2 do
  if not drop[fields[i]] then
    out[#out + 1] = fields[i]
    out[#out + 1] = fields[i + 1]
  end
end
out[#out + 1] = '@@REDRIVE_FIELD'
out[#out + 1] = ARGV[1]
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(out))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
