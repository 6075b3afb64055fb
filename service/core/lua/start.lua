-- start: begin running fetched (or taken-over) queue entries.
-- KEYS: fire, stats, trend (this minute's), then per entry: job, queue stream, dead letters
-- ARGV: limits(3), consumer, n, then per entry: id, entry id
-- reply (JSON): per entry [id, verdict, run, attempt, task, payload, timeout_s, max_attempts,
--   traceparent]
--   verdict: run (go) | again (a re-sent call: already started by this consumer; go) |
--   skip (cancelled, finished or gone: entry dropped) | notmine (another consumer holds the
--   entry now: a stale fetch; nothing changed) | dead (taken over once too often: failed)
local TREND = KEYS[3]
local consumer = ARGV[4]
local n = tonumber(ARGV[5])
local out = {}
for i = 0, n - 1 do
  local id, entry = ARGV[6 + i * 2], ARGV[7 + i * 2]
  local jkey, qkey, dkey = KEYS[4 + i * 3], KEYS[5 + i * 3], KEYS[6 + i * 3]
  if not owns(qkey, entry, consumer) then
    out[#out + 1] = {id, 'notmine'}
  else
    local j = job(jkey, id, {'e', 'a', 'm', 'p', 'to', 'r', 'w', 'tp', 'st'})
    if (not j.s) or j.e ~= entry or (j.s ~= 'queued' and j.s ~= 'running') then
      drop_entry(qkey, entry)
      out[#out + 1] = {id, 'skip'}
    elseif j.s == 'running' and j.w == consumer then
      -- the same call again (the client re-sent it after a timeout): no new attempt
      out[#out + 1] = {id, 'again', tonumber(j.r), tonumber(j.a), j.t, j.p, j.to or '',
        tonumber(j.m), j.tp or ''}
    else
      local attempt, max_attempts = tonumber(j.a), tonumber(j.m)
      local verdict = 'run'
      if j.s == 'running' then
        -- taken over after its lease ran out: the previous attempt's worker is gone
        local err = '{"type":"WorkerLost","message":"worker lost during attempt ' .. attempt ..
          ' (lease expired)"}'
        -- the lost attempt ended now, as far as anyone can tell: it is one run observation
        observe('r', j, math.max(0, NOW - tonumber(j.st or NOW)), TREND)
        if attempt >= max_attempts then
          drop_entry(qkey, entry)
          set_state(j, 'failed')
          put(j, 'err', err, 'f', NOW, 'e', '', 'w', '')
          emit(j, '["f",' .. attempt .. ',' .. err .. ']')
          redis.call('ZADD', dkey, NOW, id)
          count('dl', j)
          outcome(j, 'failed', TREND)
          retain(j)
          verdict = 'dead'
        else
          put(j, 'err', err)
          emit(j, '["r",' .. attempt .. ',' .. err .. ']')
          count('ret', j)
        end
      else
        observe('w', j, math.max(0, NOW - stream_ms(entry)), TREND)
      end
      if verdict == 'run' then
        local run = tonumber(j.r) + 1
        attempt = attempt + 1
        set_state(j, 'running')
        put(j, 'r', run, 'a', attempt, 'st', NOW, 'w', consumer, 'ws', 0)
        emit(j, '["st",' .. attempt .. ',' .. cjson.encode(consumer) .. ']')
        out[#out + 1] = {id, 'run', run, attempt, j.t, j.p, j.to or '', max_attempts, j.tp or ''}
      else
        out[#out + 1] = {id, verdict}
      end
    end
    save(j)
  end
end
commit()
return reply(out)
