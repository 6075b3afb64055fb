-- retry: a failed or cancelled job goes back to its queue with fresh attempts.
-- KEYS: fire, stats, job, queue stream, dead letters
-- ARGV: limits(3), id, request id (a re-sent request answers as the first one did)
-- reply (JSON): [status, state]: done | conflict | missing
local JKEY, QKEY, DKEY = KEYS[3], KEYS[4], KEYS[5]
local id, rid = ARGV[4], ARGV[5]
local j = job(JKEY, id, fields({'rx'}))
if not j.s then
  -- expired: a dead-letter entry left behind must not be offered again
  redis.call('ZREM', DKEY, id)
  return reply({'missing', ''})
end
if j.s ~= 'failed' and j.s ~= 'cancelled' then
  if j.rx == rid then return reply({'done', j.s}) end
  return reply({'conflict', j.s})
end
redis.call('PERSIST', JKEY)
redis.call('ZREM', DKEY, id)
set_state(j, 'queued')
put(j, 'a', '0', 'e', redis.call('XADD', QKEY, '*', 'j', id, 't', j.t), 'rx', rid)
put(j, 'err', '', 'res', '', 'f', '', 'x', '', 'pc', '', 'pt', '')
put(j, 'pm', '')
emit(j, '["q",0]')
count('rq', j)
save(j)
commit()
return reply({'done', j.s})
