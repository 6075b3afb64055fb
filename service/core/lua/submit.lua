-- submit: new jobs, queued now or scheduled for later.
-- KEYS: fire, stats, idx, due, then per job: job, queue stream, queue's sched
-- ARGV: limits(3), n, then per job 10 fields:
--   id, task, queue, payload json, max_attempts, timeout_s ('' = none), delay_ms,
--   idempotency key ('' = none), call id ('' = none), W3C traceparent ('' = none)
-- reply (JSON): per job [created 0|1, state, created ms, 1 if an earlier try of this very call
-- created it (a re-sent request) else 0]
local IDX, DUE = KEYS[3], KEYS[4]
local n = tonumber(ARGV[4])
local names = fields({'c', 'rq'})
local out = {}
for i = 0, n - 1 do
  local a = 5 + i * 10
  local id, task, queue, payload = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local max_attempts, timeout_s, delay_ms = ARGV[a + 4], ARGV[a + 5], tonumber(ARGV[a + 6])
  local idem, rq, tp = ARGV[a + 7], ARGV[a + 8], ARGV[a + 9]
  local jkey, qkey, skey = KEYS[5 + i * 3], KEYS[6 + i * 3], KEYS[7 + i * 3]
  local j = job(jkey, id, names)
  if j.s then
    local again = (rq ~= '' and j.rq == rq) and 1 or 0
    out[#out + 1] = {0, j.s, tonumber(j.c), again}
  else
    j.t, j.q = task, queue
    put(j, 't', task, 'q', queue, 'a', '0', 'r', '0', 'm', max_attempts, 'p', payload)
    put(j, 'c', NOW_S)
    if timeout_s ~= '' then put(j, 'to', timeout_s) end
    if idem ~= '' then put(j, 'k', idem, 'rq', rq) end
    if tp ~= '' then put(j, 'tp', tp) end
    if delay_ms > 0 then
      set_state(j, 'scheduled')
      local due = NOW + delay_ms
      redis.call('ZADD', skey, due, id)
      redis.call('ZADD', DUE, 'LT', due, queue)
      emit(j, '["sc",0,' .. due .. ']')
    else
      set_state(j, 'queued')
      put(j, 'e', redis.call('XADD', qkey, '*', 'j', id, 't', task))
      emit(j, '["q",0]')
    end
    save(j)
    redis.call('XADD', IDX, '*', 'j', id)
    count('sub', j)
    out[#out + 1] = {1, j.s, NOW, 0}
  end
end
commit()
return reply(out)
