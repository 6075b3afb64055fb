-- defer: a worker fetched a job whose task it does not have. The job is not failed: it waits
-- a moment off the stream (in the sched set, still queued) and is put back for another worker.
-- The first time, a `queued` event says why it waits.
-- KEYS: fire, stats, due, job, queue stream, sched
-- ARGV: limits(3), id, entry, consumer, delay ms, message
-- reply: 'deferred' | 'notmine' | 'skip'
local DUE, JKEY, QKEY, SKEY = KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local id, entry, consumer, delay, msg = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8]
if not owns(QKEY, entry, consumer) then return 'notmine' end
local j = job(JKEY, id, fields({'a', 'e', 'df'}))
drop_entry(QKEY, entry)
if j.s ~= 'queued' or j.e ~= entry then
  commit()
  return 'skip'
end
local due = NOW + delay
put(j, 'e', '')
redis.call('ZADD', SKEY, due, id)
redis.call('ZADD', DUE, 'LT', due, j.q)
if j.df ~= '1' then
  put(j, 'df', '1')
  emit(j, '["q",' .. j.a .. ',' .. cjson.encode(msg) .. ']')
end
save(j)
commit()
return 'deferred'
