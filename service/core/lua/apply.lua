-- apply: a worker's writes, in the order they happened.
-- KEYS: fire, stats, trend (this minute's), due, then per op: job, queue stream, sched, dead
-- ARGV: limits(3), n, then per op 8 fields: kind, id, run, seq, body, x1, x2, x3
--   'p' progress: body = the stored event; x1, x2, x3 = current, total, message ('' = none)
--   'l' log:      body = the stored event
--   'f' finish:   body = result or error JSON; x1 = outcome (succeeded | error | fail |
--                 cancelled | handback), x2 = backoff ms (error), x3 = ''
-- Each op carries the run it was given at start (the fence: refused once the job has moved
-- on) and a sequence number per run (a re-sent op is recognised and not applied twice).
-- reply (JSON): per op 'ok' | 'fenced' | 'dup', or for 'f' the resulting state
local TREND, DUE = KEYS[3], KEYS[4]
local n = tonumber(ARGV[4])
local names = fields({'r', 'ws', 'a', 'm', 'e', 'st', 'x', 'w'})
local out = {}
for i = 0, n - 1 do
  local a = 5 + i * 8
  local kind, id, run, seq_s = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local seq = tonumber(seq_s)
  local body, x1, x2, x3 = ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
  local jkey, qkey, skey, dkey = KEYS[5 + i * 4], KEYS[6 + i * 4], KEYS[7 + i * 4], KEYS[8 + i * 4]
  local j = job(jkey, id, names)
  local attempt = tonumber(j.a or '0')
  if j.r == run and seq <= tonumber(j.ws or '0') then
    -- already applied: the client re-sent it (a timeout while Redis was slow)
    out[#out + 1] = kind == 'f' and j.s or 'dup'
  elseif j.s ~= 'running' or j.r ~= run then
    out[#out + 1] = 'fenced'
  elseif kind == 'p' then
    put(j, 'ws', seq_s, 'pc', x1, 'pt', x2, 'pm', x3)
    emit(j, body)
    out[#out + 1] = 'ok'
  elseif kind == 'l' then
    put(j, 'ws', seq_s)
    emit(j, body)
    out[#out + 1] = 'ok'
  else
    put(j, 'ws', seq_s, 'w', '')
    if j.x and j.x ~= '' then put(j, 'x', '') end
    local how = x1
    local run_ms = math.max(0, NOW - tonumber(j.st or NOW))
    drop_entry(qkey, j.e)
    if how == 'succeeded' then
      set_state(j, 'succeeded')
      put(j, 'res', body, 'f', NOW_S, 'e', '')
      emit(j, '["ok",' .. attempt .. ',' .. body .. ']')
      outcome(j, 'succeeded', TREND)
      observe('r', j, run_ms, TREND)
      retain(j)
    elseif how == 'cancelled' then
      set_state(j, 'cancelled')
      put(j, 'f', NOW_S, 'e', '')
      emit(j, '["c",' .. attempt .. ']')
      outcome(j, 'cancelled', TREND)
      observe('r', j, run_ms, TREND)
      retain(j)
    elseif how == 'handback' then
      -- clean shutdown: the attempt does not count, the job goes back to its queue at once
      set_state(j, 'queued')
      put(j, 'a', attempt - 1, 'e', redis.call('XADD', qkey, '*', 'j', id, 't', j.t))
      emit(j, '["q",' .. (attempt - 1) .. ',"handed back by a stopping worker"]')
    elseif how == 'error' and attempt < tonumber(j.m) then
      local due = NOW + tonumber(x2)
      set_state(j, 'scheduled')
      put(j, 'err', body, 'e', '')
      redis.call('ZADD', skey, due, id)
      redis.call('ZADD', DUE, 'LT', due, j.q)
      emit(j, '["r",' .. attempt .. ',' .. body .. ',' .. due .. ']')
      count('ret', j)
      observe('r', j, run_ms, TREND)
    else
      set_state(j, 'failed')
      put(j, 'err', body, 'f', NOW_S, 'e', '')
      emit(j, '["f",' .. attempt .. ',' .. body .. ']')
      redis.call('ZADD', dkey, NOW_S, id)
      count('dl', j)
      outcome(j, 'failed', TREND)
      observe('r', j, run_ms, TREND)
      retain(j)
    end
    out[#out + 1] = j.s
  end
  save(j)
end
commit()
return reply(out)
