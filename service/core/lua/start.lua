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
local names = fields({'e', 'a', 'm', 'p', 'to', 'r', 'w', 'tp', 'st'})
-- The stale-fetch fence, batched: one XPENDING per queue lists what this consumer holds between
-- the first and the last of the call's entries (a read returns them in order); an entry not in
-- that list is checked alone, so the answer is exact whatever the order.
local range = {}  -- queue stream -> {first entry, last entry, count}
for i = 0, n - 1 do
  local qkey, entry = KEYS[5 + i * 3], ARGV[7 + i * 2]
  local r = range[qkey]
  if r == nil then range[qkey] = {entry, entry, 1} else r[2], r[3] = entry, r[3] + 1 end
end
local held = {}
for qkey, r in pairs(range) do
  local set = {}
  for _, p in ipairs(redis.call('XPENDING', qkey, GROUP, r[1], r[2], r[3] + 32, consumer)) do
    set[p[1]] = true
  end
  held[qkey] = set
end
local out = {}
for i = 0, n - 1 do
  local id, entry = ARGV[6 + i * 2], ARGV[7 + i * 2]
  local jkey, qkey, dkey = KEYS[4 + i * 3], KEYS[5 + i * 3], KEYS[6 + i * 3]
  if not (held[qkey][entry] or owns(qkey, entry, consumer)) then
    out[#out + 1] = {id, 'notmine'}
  else
    local j = job(jkey, id, names)
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
          put(j, 'err', err, 'f', NOW_S, 'e', '', 'w', '')
          emit(j, '["f",' .. attempt .. ',' .. err .. ']')
          redis.call('ZADD', dkey, NOW_S, id)
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
        put(j, 'r', fmt('%d', run), 'a', fmt('%d', attempt), 'st', NOW_S, 'w', consumer, 'ws', '0')
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
