-- Claim pending entries of a consumer group for one consumer, in one atomic step.
--
-- Mode "due" (ARGV[6] == ''): entries of any consumer whose idle time has passed the backoff
-- for their delivery count: min(base * 2^(deliveries-1), cap). XAUTOCLAIM has one min-idle for
-- all entries, so the per-count backoff is applied here over XPENDING's idle times instead.
-- Mode "own" (ARGV[6] == consumer): every entry this consumer already holds (after a restart).
--
-- KEYS[1] stream
-- ARGV: group, consumer, base_ms, cap_ms, want, own
-- Returns a flat list: id, fields, deliveries (after this claim), ...
local stream = KEYS[1]
local group, consumer = ARGV[1], ARGV[2]
local base, cap = tonumber(ARGV[3]), tonumber(ARGV[4])
local want = tonumber(ARGV[5])
local own = ARGV[6]

local pending
if own ~= '' then
  pending = redis.call('XPENDING', stream, group, '-', '+', want, own)
else
  -- Look further than `want`: entries not yet due for their (longer) backoff may come first.
  pending = redis.call('XPENDING', stream, group, 'IDLE', base, '-', '+', want * 4)
end

local ids, counts = {}, {}
for _, p in ipairs(pending) do
  local id, idle, n = p[1], p[3], p[4]
  local due = base * 2 ^ (n - 1)
  if due > cap then due = cap end
  if own ~= '' or idle >= due then
    ids[#ids + 1] = id
    counts[id] = n + 1
    if #ids >= want then break end
  end
end
if #ids == 0 then return {} end

local claimed = redis.call('XCLAIM', stream, group, consumer, 0, unpack(ids))
local out = {}
for _, entry in ipairs(claimed) do
  -- An entry trimmed from the stream comes back without fields; XCLAIM has dropped it.
  if entry and entry[2] then
    out[#out + 1] = entry[1]
    out[#out + 1] = entry[2]
    out[#out + 1] = counts[entry[1]]
  end
end
return out
