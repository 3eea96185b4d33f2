-- Commit one batch of the `projector` group atomically: for every entry, XACK it and, only if
-- that XACK removed it from the pending list (no other worker committed it first) and the
-- trigger's result is not yet recorded, write its event, result record and projection.
-- Delivery may happen twice; effects happen once.
--
-- KEYS: source stream, events stream, dead-letter stream, then per op: result key, screen key
--       ('' where the op has none)
-- ARGV: group, maxlen, result ttl (s), then per op:
--       kind, entry id, event data ('' for none), n, n extra field/value pairs for the event,
--       m, m kind-specific arguments
-- kinds: trigger.projected | trigger.rejected | trigger.dead_lettered (args: dead-letter
--        field/value pairs) | display.acknowledged (args: eventId, status, ackedAt)
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
    'type', kind, 'v', '1', 'data', data, unpack(extra))
end

local function record(rkey, outcome, eid)
  if rkey ~= '' then
    redis.call('HSET', rkey, 'outcome', outcome, 'eventId', eid)
    redis.call('EXPIRE', rkey, ttl)
  end
end

local KINDS = {['trigger.projected'] = true, ['trigger.rejected'] = true,
  ['trigger.dead_lettered'] = true, ['display.acknowledged'] = true}
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
  k = k + 2

  local status, eid = 'skipped', ''
  if redis.call('XACK', src, group, entry) == 1 then
    local rec = rkey ~= '' and redis.call('HMGET', rkey, 'outcome', 'pending', 'eventId')
    local prior = rec and rec[1]
    if prior and prior ~= 'dead_lettered' then
      status, eid = 'duplicate', (rec[3] or '')
    else
      status = 'written'
      -- An edge answered this trigger PENDING: say so on its event, so that every edge sends
      -- trigger:result (services/records.py PENDING_MARK, PENDING_FIELD).
      if rec and rec[2] and kind ~= 'display.acknowledged' then
        extra[#extra + 1] = 'answeredPending'
        extra[#extra + 1] = '1'
      end
      if kind == 'trigger.projected' then
        local current = redis.call('HGET', skey, 'triggerEntryId')
        local superseded = current and newer(current, entry)
        if superseded then data = string.sub(data, 1, -7) .. 'true}' end
        eid = append(events, kind, data, extra)
        record(rkey, 'projected', eid)
        if not superseded then
          redis.call('HSET', skey, 'eventId', eid, 'triggerEntryId', entry, 'data', data)
          redis.call('HDEL', skey, 'displayStatus', 'displayAckedAt', 'displayError')
        end
      elseif kind == 'trigger.rejected' then
        eid = append(events, kind, data, extra)
        record(rkey, 'rejected', eid)
      elseif kind == 'trigger.dead_lettered' then
        local dlid = redis.call('XADD', dlq, 'MAXLEN', '~', maxlen, '*', unpack(args))
        if data ~= '' then
          eid = append(events, kind, string.sub(data, 1, -3) .. dlid .. '"}', extra)
          record(rkey, 'dead_lettered', eid)
        else
          eid = dlid
        end
      elseif kind == 'display.acknowledged' then
        eid = append(events, kind, data, extra)
        if redis.call('HGET', skey, 'eventId') == args[1] then
          redis.call('HSET', skey, 'displayStatus', args[2], 'displayAckedAt', args[3],
            'displayError', args[4] or '')
        end
      end
    end
  end
  out[#out + 1] = status
  out[#out + 1] = eid
end
return out
