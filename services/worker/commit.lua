-- Commit one batch of the `projector` group atomically: for every entry, XACK it and, only if
-- that XACK removed it from the pending list (no other worker committed it first) and the
-- trigger's result is not yet recorded, write its event, result record and projection.
-- Delivery may happen twice; effects happen once.
--
-- Every name shared with Python is a placeholder, filled in by Python when it is loaded
-- (services/keys.py LUA_NAMES, services/worker/projector.py COMMIT).
--
-- KEYS: source stream, events stream, dead-letter stream, then per op: result key, screen key
--       (the source stream's name where the op has none: a key of the same slot, so that
--       on a cluster every key of the call is in the partition's slot; '' is taken too)
-- ARGV: group, maxlen, result ttl (s), then per op:
--       kind, entry id, event data ('' for none), n, n extra field/value pairs for the event,
--       m, m kind-specific arguments:
--         @@KIND_PROJECTED        the event data as it is when a newer trigger of the screen
--                                 is already projected (superseded: true)
--         @@KIND_DEAD_LETTERED    the dead-letter entry's field/value pairs; the event data
--                                 ends where its dead-letter id goes (the id, then `"}`)
--         @@KIND_ACKNOWLEDGED     the acked event id, status, ackedAt, error
-- Returns per op: status ('written' | 'duplicate' | 'skipped'), event id or ''.
local src, events, dlq = KEYS[1], KEYS[2], KEYS[3]
local group, maxlen, ttl = ARGV[1], ARGV[2], ARGV[3]

local function newer(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  ams, bms = tonumber(ams), tonumber(bms)
  if ams ~= bms then return ams > bms end
  return tonumber(aseq) > tonumber(bseq)
end

local function append(stream, kind, data, extra)
  return redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
    '@@TYPE_FIELD', kind, '@@VERSION_FIELD', '@@SCHEMA_VERSION', '@@DATA_FIELD', data,
    unpack(extra))
end

local function record(rkey, outcome, eid)
  if rkey ~= '' then
    redis.call('HSET', rkey, '@@RESULT_OUTCOME', outcome, '@@RESULT_EVENT_ID', eid)
    redis.call('EXPIRE', rkey, ttl)
  end
end

local KINDS = {['@@KIND_PROJECTED'] = true, ['@@KIND_REJECTED'] = true,
  ['@@KIND_DEAD_LETTERED'] = true, ['@@KIND_ACKNOWLEDGED'] = true}
-- Check every op before writing anything: a script error midway would leave half a batch.
do
  local a = 4
  while a <= #ARGV do
    if not KINDS[ARGV[a]] then return redis.error_reply('unknown op kind ' .. ARGV[a]) end
    a = a + 4 + 2 * tonumber(ARGV[a + 3])
    a = a + 1 + tonumber(ARGV[a])
  end
end

local out = {}
local a, k = 4, 4
while a <= #ARGV do
  local kind, entry, data = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local n = tonumber(ARGV[a + 3])
  local extra = {}
  for i = 1, 2 * n do extra[i] = ARGV[a + 3 + i] end
  a = a + 4 + 2 * n
  local m = tonumber(ARGV[a])
  local args = {}
  for i = 1, m do args[i] = ARGV[a + i] end
  a = a + 1 + m
  local rkey, skey = KEYS[k], KEYS[k + 1]
  if rkey == src then rkey = '' end
  if skey == src then skey = '' end
  k = k + 2

  local status, eid = 'skipped', ''
  if redis.call('XACK', src, group, entry) == 1 then
    local rec = rkey ~= '' and redis.call('HMGET', rkey,
      '@@RESULT_OUTCOME', '@@RESULT_PENDING', '@@RESULT_EVENT_ID')
    local prior = rec and rec[1]
    if prior and prior ~= '@@OUTCOME_DEAD_LETTERED' then
      status, eid = 'duplicate', (rec[3] or '')
    else
      status = 'written'
      -- An edge answered this trigger PENDING: say so on its event, so that every edge sends
      -- trigger:result.
      if rec and rec[2] and kind ~= '@@KIND_ACKNOWLEDGED' then
        extra[#extra + 1] = '@@PENDING_FIELD'
        extra[#extra + 1] = '1'
      end
      if kind == '@@KIND_PROJECTED' then
        local current = redis.call('HGET', skey, '@@PROJECTION_TRIGGER_ENTRY_ID')
        local superseded = current and newer(current, entry)
        if superseded then data = args[1] end
        eid = append(events, kind, data, extra)
        record(rkey, '@@OUTCOME_PROJECTED', eid)
        if not superseded then
          redis.call('HSET', skey, '@@PROJECTION_EVENT_ID', eid,
            '@@PROJECTION_TRIGGER_ENTRY_ID', entry, '@@PROJECTION_DATA', data)
          redis.call('HDEL', skey, '@@PROJECTION_DISPLAY_STATUS',
            '@@PROJECTION_DISPLAY_ACKED_AT', '@@PROJECTION_DISPLAY_ERROR')
        end
      elseif kind == '@@KIND_REJECTED' then
        eid = append(events, kind, data, extra)
        record(rkey, '@@OUTCOME_REJECTED', eid)
      elseif kind == '@@KIND_DEAD_LETTERED' then
        local dlid = redis.call('XADD', dlq, 'MAXLEN', '~', maxlen, '*', unpack(args))
        if data ~= '' then
          eid = append(events, kind, data .. dlid .. '"}', extra)
          record(rkey, '@@OUTCOME_DEAD_LETTERED', eid)
        else
          eid = dlid
        end
      elseif kind == '@@KIND_ACKNOWLEDGED' then
        eid = append(events, kind, data, extra)
        if redis.call('HGET', skey, '@@PROJECTION_EVENT_ID') == args[1] then
          redis.call('HSET', skey, '@@PROJECTION_DISPLAY_STATUS', args[2],
            '@@PROJECTION_DISPLAY_ACKED_AT', args[3], '@@PROJECTION_DISPLAY_ERROR', args[4] or '')
        end
      end
    end
  end
  out[#out + 1] = status
  out[#out + 1] = eid
end
return out
