-- promote: move a queue's due scheduled jobs to its stream. Idempotent: any worker may run it,
-- with ids it read before the call (each is checked again here).
-- KEYS: fire, stats, due, the queue's sched, the queue stream, then per job: job
-- ARGV: limits(3), queue, n, then the n job ids
-- reply: the number of jobs moved
local DUE, SKEY, QKEY = KEYS[3], KEYS[4], KEYS[5]
local queue = ARGV[4]
local n = tonumber(ARGV[5])
local moved = 0
local names = fields({'a', 'df'})
for i = 1, n do
  local id = ARGV[5 + i]
  local score = redis.call('ZSCORE', SKEY, id)
  if score and tonumber(score) <= NOW then
    redis.call('ZREM', SKEY, id)
    local j = job(KEYS[5 + i], id, names)
    if j.s == 'scheduled' then
      set_state(j, 'queued')
      put(j, 'e', redis.call('XADD', QKEY, '*', 'j', id, 't', j.t))
      emit(j, '["q",' .. j.a .. ']')
      moved = moved + 1
    elseif j.s == 'queued' and j.df == '1' then
      -- deferred (no worker had its task): back in the stream, no new event
      put(j, 'e', redis.call('XADD', QKEY, '*', 'j', id, 't', j.t))
      moved = moved + 1
    end
    save(j)
  end
end
local nxt = redis.call('ZRANGE', SKEY, 0, 0, 'WITHSCORES')
if #nxt > 0 then
  redis.call('ZADD', DUE, nxt[2], queue)
else
  redis.call('ZREM', DUE, queue)
end
commit()
return moved
