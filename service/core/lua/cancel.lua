-- cancel: queued or scheduled -> cancelled now; running -> cancellation requested (the
-- worker's next renew sees it); finished -> nothing.
-- KEYS: fire, stats, trend (this minute's), job, queue stream, sched
-- ARGV: limits(3), id, request id (a re-sent request answers as the first one did)
-- reply (JSON): [status, state]: done | requested | finished | missing
local TREND, JKEY, QKEY, SKEY = KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local id, rid = ARGV[4], ARGV[5]
local j = job(JKEY, id, fields({'a', 'e', 'x'}))
if not j.s then return reply({'missing', ''}) end
if j.s == 'running' then
  if j.x ~= rid then put(j, 'x', rid) end
  save(j)
  return reply({'requested', j.s})
end
if j.s ~= 'queued' and j.s ~= 'scheduled' then
  if j.s == 'cancelled' and j.x == rid then return reply({'done', j.s}) end
  return reply({'finished', j.s})
end
redis.call('ZREM', SKEY, id)
drop_entry(QKEY, j.e)
set_state(j, 'cancelled')
put(j, 'f', NOW_S, 'e', '', 'x', rid)
emit(j, '["c",' .. j.a .. ']')
outcome(j, 'cancelled', TREND)
retain(j)
save(j)
commit()
return reply({'done', j.s})
