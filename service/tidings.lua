-- Tidings: every state transition of a job, as one atomic step.
--
-- Called as EVALSHA sha 1 <any key of the partition> <op> <partition prefix> <args...>.
-- All keys of one partition share the hash tag inside <partition prefix> ("{tidings:0}:"), so
-- every key built below lives in the slot of KEYS[1] and the whole script fits Redis Cluster.
--
-- Keys (P = partition prefix):
--   P.."job:"..id    hash    the job record
--   P.."ev:"..id     list    the job's events, "<event id> <type> <json>", oldest first
--   P.."q:"..queue   stream  unfinished work of a queue (consumer group GROUP), field j = job id
--   P.."sched:"..queue zset  scheduled (delayed / waiting to retry) job ids by due time (ms)
--   P.."fire"        stream  every event of the partition (the firehose); its ids are the event ids
--   P.."idx"         zset    job ids by creation time (µs), for listing
--   P.."dead:"..queue zset   dead-lettered job ids by time of death (ms)
--   P.."queues"      set     queue names seen
--
-- Fencing: a job's "run" field increases at every start. Every write by a worker carries the
-- run it was given and is refused when the job has moved on: a worker that lost its lease can
-- neither report nor finish.

local GROUP = 'tidings'
local op = ARGV[1]
local P = ARGV[2]

local T = redis.call('TIME')
local NOW_US = tonumber(T[1]) * 1000000 + tonumber(T[2])  -- the job index is ordered by this

local function iso(ms)
  -- civil-from-days (Howard Hinnant), UTC
  local s = math.floor(ms / 1000)
  local days = math.floor(s / 86400)
  local sod = s - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d,
    math.floor(sod / 3600), math.floor(sod % 3600 / 60), sod % 60, ms % 1000)
end

-- Config carried by every call: firehose length, per-job event cap, retention (ms).
local FIRE_MAX = tonumber(ARGV[3])
local EV_MAX = tonumber(ARGV[4])
local RETAIN_MS = tonumber(ARGV[5])
local NOW = math.floor(NOW_US / 1000)
local NOW_ISO = iso(NOW)

-- Append one event to the firehose and to the job's own list; returns the event id.
-- `extra` is a JSON fragment (starting with ',') already encoded by the caller, or ''.
-- Ids, task and queue names are validated by the caller against [A-Za-z0-9._:-], so they
-- need no escaping here.
local function emit(id, typ, state, attempt, task, queue, extra)
  local data = '{"job":"' .. id .. '","type":"' .. typ .. '","state":"' .. state ..
    '","attempt":' .. attempt .. ',"task":"' .. task .. '","queue":"' .. queue .. '"' ..
    extra .. ',"ts":"' .. NOW_ISO .. '"}'
  local eid = redis.call('XADD', P .. 'fire', 'MAXLEN', '~', FIRE_MAX, '*', 'j', id, 'e', typ, 'd', data)
  local evkey = P .. 'ev:' .. id
  if redis.call('RPUSH', evkey, eid .. ' ' .. typ .. ' ' .. data) > EV_MAX then
    -- bounded: drop the oldest; a reader resuming from a dropped id gets a snapshot
    redis.call('LPOP', evkey)
  end
  return eid
end

local function enqueue(id, queue)
  return redis.call('XADD', P .. 'q:' .. queue, '*', 'j', id)
end

local function drop_entry(queue, entry)
  if entry and entry ~= '' then
    local q = P .. 'q:' .. queue
    redis.call('XACK', q, GROUP, entry)
    redis.call('XDEL', q, entry)
  end
end

local function expire(id)
  redis.call('PEXPIRE', P .. 'job:' .. id, RETAIN_MS)
  redis.call('PEXPIRE', P .. 'ev:' .. id, RETAIN_MS)
end

local function persist(id)
  redis.call('PERSIST', P .. 'job:' .. id)
  redis.call('PERSIST', P .. 'ev:' .. id)
end

local TERMINAL = {succeeded = true, failed = true, cancelled = true}

local function kill(id, jobkey, task, queue, attempt, err_json)
  redis.call('HSET', jobkey, 'state', 'failed', 'error', err_json, 'finished_at', NOW_ISO,
    'entry', '', 'cancel', '')
  emit(id, 'failed', 'failed', attempt, task, queue, ',"error":' .. err_json)
  redis.call('ZADD', P .. 'dead:' .. queue, NOW, id)
  expire(id)
end

-- submit: ARGV[6..] = n, then per job 8 fields:
--   id, task, queue, payload json, max_attempts, timeout_s ('' = none), delay_ms, idem key ('' = none)
-- returns per job {created 1|0, id, state, created_at}
local function submit()
  local n = tonumber(ARGV[6])
  local out = {}
  local i = 7
  for _ = 1, n do
    local id, task, queue, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    local max_attempts, timeout_s = ARGV[i + 4], ARGV[i + 5]
    local delay_ms, idem = tonumber(ARGV[i + 6]), ARGV[i + 7]
    i = i + 8
    local jobkey = P .. 'job:' .. id
    local existing = redis.call('HGET', jobkey, 'state')
    if existing then
      out[#out + 1] = {0, id, existing, ''}
    else
      local state = 'queued'
      local entry = ''
      if delay_ms > 0 then
        state = 'scheduled'
        redis.call('ZADD', P .. 'sched:' .. queue, NOW + delay_ms, id)
      else
        entry = enqueue(id, queue)
      end
      redis.call('HSET', jobkey, 'task', task, 'queue', queue, 'state', state, 'attempt', 0,
        'run', 0, 'max_attempts', max_attempts, 'timeout_s', timeout_s, 'payload', payload,
        'created_at', NOW_ISO, 'entry', entry, 'idem', idem)
      local extra = ''
      if state == 'scheduled' then
        extra = ',"due":"' .. iso(NOW + delay_ms) .. '"'
      end
      emit(id, state, state, 0, task, queue, extra)
      redis.call('ZADD', P .. 'idx', NOW_US + #out, id)  -- a batch keeps its order
      redis.call('SADD', P .. 'queues', queue)
      out[#out + 1] = {1, id, state, NOW_ISO}
    end
  end
  return out
end

-- start: ARGV[6] = consumer, ARGV[7] = n, then per entry: id, queue, entry id
-- returns per entry {id, verdict, run, attempt, task, payload, timeout_s, max_attempts, entry}
-- verdict: 'run' (go), 'skip' (cancelled / finished / gone: entry dropped), 'dead' (poison)
local function start()
  local consumer = ARGV[6]
  local n = tonumber(ARGV[7])
  local out = {}
  local i = 8
  for _ = 1, n do
    local id, queue, entry = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    i = i + 3
    local jobkey = P .. 'job:' .. id
    local f = redis.call('HMGET', jobkey, 'state', 'entry', 'attempt', 'max_attempts', 'task',
      'payload', 'timeout_s')
    local state, cur_entry = f[1], f[2]
    local attempt, max_attempts = tonumber(f[3]), tonumber(f[4])
    local task = f[5]
    if (not state) or cur_entry ~= entry or (state ~= 'queued' and state ~= 'running') then
      drop_entry(queue, entry)
      out[#out + 1] = {id, 'skip'}
    else
      local verdict = 'run'
      if state == 'running' then
        -- taken over after its lease ran out: the previous attempt's worker is gone
        local err = '{"type":"WorkerLost","message":"worker lost during attempt ' .. attempt ..
          ' (lease expired)"}'
        if attempt >= max_attempts then
          drop_entry(queue, entry)
          kill(id, jobkey, task, queue, attempt, err)
          verdict = 'dead'
        else
          emit(id, 'retrying', 'running', attempt, task, queue, ',"error":' .. err)
        end
      end
      if verdict == 'run' then
        local run = redis.call('HINCRBY', jobkey, 'run', 1)
        attempt = redis.call('HINCRBY', jobkey, 'attempt', 1)
        redis.call('HSET', jobkey, 'state', 'running', 'started_at', NOW_ISO, 'worker', consumer)
        emit(id, 'started', 'running', attempt, task, queue, '')
        out[#out + 1] = {id, 'run', run, attempt, task, f[6], f[7], max_attempts, entry}
      else
        out[#out + 1] = {id, verdict}
      end
    end
  end
  return out
end

-- apply: worker writes, in order. ARGV[6] = n, then per op a kind and its fields:
--   'p' id run current total message fragment     progress (total, message: '' = none;
--                                                 fragment: ',"current":..' for the event)
--   'l' id run message_fragment                   log line
--   'f' id run outcome fragment backoff_ms        finish: outcome is succeeded | error |
--                                                 fail (no retry) | cancelled | handback
-- returns per op 'ok', 'fenced', or for 'f' the resulting state
local function apply()
  local n = tonumber(ARGV[6])
  local out = {}
  local i = 7
  for _ = 1, n do
    local kind, id, run = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local jobkey = P .. 'job:' .. id
    local f = redis.call('HMGET', jobkey, 'state', 'run', 'attempt', 'task', 'queue', 'entry',
      'max_attempts')
    local fenced = f[1] ~= 'running' or f[2] ~= run
    local attempt, task, queue, entry = f[3], f[4], f[5], f[6]
    if kind == 'p' then
      local cur, tot, msg, frag = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
      i = i + 7
      if fenced then
        out[#out + 1] = 'fenced'
      else
        redis.call('HSET', jobkey, 'p_current', cur, 'p_total', tot, 'p_message', msg)
        emit(id, 'progress', 'running', attempt, task, queue, frag)
        out[#out + 1] = 'ok'
      end
    elseif kind == 'l' then
      local frag = ARGV[i + 3]
      i = i + 4
      if fenced then
        out[#out + 1] = 'fenced'
      else
        emit(id, 'log', 'running', attempt, task, queue, frag)
        out[#out + 1] = 'ok'
      end
    else
      local outcome, frag, backoff_ms = ARGV[i + 3], ARGV[i + 4], tonumber(ARGV[i + 5])
      i = i + 6
      if fenced then
        out[#out + 1] = 'fenced'
      elseif outcome == 'succeeded' then
        drop_entry(queue, entry)
        redis.call('HSET', jobkey, 'state', 'succeeded', 'result', frag, 'finished_at', NOW_ISO,
          'entry', '', 'cancel', '')
        emit(id, 'succeeded', 'succeeded', attempt, task, queue, ',"result":' .. frag)
        expire(id)
        out[#out + 1] = 'succeeded'
      elseif outcome == 'cancelled' then
        drop_entry(queue, entry)
        redis.call('HSET', jobkey, 'state', 'cancelled', 'finished_at', NOW_ISO, 'entry', '',
          'cancel', '')
        emit(id, 'cancelled', 'cancelled', attempt, task, queue, '')
        expire(id)
        out[#out + 1] = 'cancelled'
      elseif outcome == 'handback' then
        -- clean shutdown: the attempt does not count, the job goes back to the queue at once
        drop_entry(queue, entry)
        local e = enqueue(id, queue)
        redis.call('HINCRBY', jobkey, 'attempt', -1)
        redis.call('HSET', jobkey, 'state', 'queued', 'entry', e)
        emit(id, 'queued', 'queued', tonumber(attempt) - 1, task, queue,
          ',"message":"handed back by a stopping worker"')
        out[#out + 1] = 'queued'
      elseif outcome == 'error' and tonumber(attempt) < tonumber(f[7]) then
        drop_entry(queue, entry)
        redis.call('ZADD', P .. 'sched:' .. queue, NOW + backoff_ms, id)
        redis.call('HSET', jobkey, 'state', 'scheduled', 'error', frag, 'entry', '')
        emit(id, 'retrying', 'scheduled', attempt, task, queue,
          ',"error":' .. frag .. ',"due":"' .. iso(NOW + backoff_ms) .. '"')
        out[#out + 1] = 'scheduled'
      else
        drop_entry(queue, entry)
        kill(id, jobkey, task, queue, attempt, frag)
        out[#out + 1] = 'failed'
      end
    end
  end
  return out
end

-- renew: a worker's heartbeat over its running jobs. ARGV[6] = consumer, ARGV[7] = n, then per
-- job: id, run. Resets the idle time (the lease) of the job's queue entry.
-- returns per job 'ok', 'cancel' (cancellation requested) or 'lost' (fenced)
local function renew()
  local consumer = ARGV[6]
  local n = tonumber(ARGV[7])
  local out = {}
  local i = 8
  for _ = 1, n do
    local id, run = ARGV[i], ARGV[i + 1]
    i = i + 2
    local f = redis.call('HMGET', P .. 'job:' .. id, 'state', 'run', 'queue', 'entry', 'cancel')
    if f[1] ~= 'running' or f[2] ~= run then
      out[#out + 1] = 'lost'
    else
      redis.call('XCLAIM', P .. 'q:' .. f[3], GROUP, consumer, 0, f[4], 'JUSTID')
      out[#out + 1] = f[5] == '1' and 'cancel' or 'ok'
    end
  end
  return out
end

-- promote: move due scheduled jobs to their queues. Idempotent; any worker may run it.
-- ARGV[6] = max jobs per queue. Returns {moved, ms until the next due job or -1}
local function promote()
  local limit = tonumber(ARGV[6])
  local moved = 0
  local wait = -1
  for _, queue in ipairs(redis.call('SMEMBERS', P .. 'queues')) do
    local skey = P .. 'sched:' .. queue
    local due = redis.call('ZRANGEBYSCORE', skey, '-inf', NOW, 'LIMIT', 0, limit)
    for _, id in ipairs(due) do
      redis.call('ZREM', skey, id)
      local jobkey = P .. 'job:' .. id
      local f = redis.call('HMGET', jobkey, 'state', 'task', 'attempt')
      if f[1] == 'scheduled' then
        local e = enqueue(id, queue)
        redis.call('HSET', jobkey, 'state', 'queued', 'entry', e)
        emit(id, 'queued', 'queued', f[3], f[2], queue, '')
        moved = moved + 1
      end
    end
    local nxt = redis.call('ZRANGE', skey, 0, 0, 'WITHSCORES')
    if #nxt > 0 then
      local w = math.max(0, tonumber(nxt[2]) - NOW)
      if wait < 0 or w < wait then wait = w end
    end
  end
  return {moved, wait}
end

-- cancel: ARGV[6] = id. Returns {status, state}: 'done' (now cancelled), 'requested'
-- (running: the worker will stop it), 'finished' (already terminal), 'missing'
local function cancel()
  local id = ARGV[6]
  local jobkey = P .. 'job:' .. id
  local f = redis.call('HMGET', jobkey, 'state', 'task', 'queue', 'attempt', 'entry')
  local state = f[1]
  if not state then return {'missing', ''} end
  if TERMINAL[state] then return {'finished', state} end
  if state == 'running' then
    redis.call('HSET', jobkey, 'cancel', '1')
    return {'requested', state}
  end
  if state == 'scheduled' then
    redis.call('ZREM', P .. 'sched:' .. f[3], id)
  else
    drop_entry(f[3], f[5])
  end
  redis.call('HSET', jobkey, 'state', 'cancelled', 'finished_at', NOW_ISO, 'entry', '')
  emit(id, 'cancelled', 'cancelled', f[4], f[2], f[3], '')
  expire(id)
  return {'done', 'cancelled'}
end

-- retry: ARGV[6] = id. A failed or cancelled job goes back to its queue with fresh attempts.
local function retry()
  local id = ARGV[6]
  local jobkey = P .. 'job:' .. id
  local f = redis.call('HMGET', jobkey, 'state', 'task', 'queue')
  local state = f[1]
  if not state then return {'missing', ''} end
  if state ~= 'failed' and state ~= 'cancelled' then return {'conflict', state} end
  persist(id)
  redis.call('ZREM', P .. 'dead:' .. f[3], id)
  local e = enqueue(id, f[3])
  redis.call('HSET', jobkey, 'state', 'queued', 'attempt', 0, 'entry', e, 'error', '',
    'result', '', 'finished_at', '', 'cancel', '', 'p_current', '', 'p_total', '', 'p_message', '')
  emit(id, 'queued', 'queued', 0, f[2], f[3], '')
  return {'done', 'queued'}
end

-- sweep: drop index and dead-letter entries whose jobs have expired. ARGV[6] = max.
local function sweep()
  local cutoff = NOW - RETAIN_MS
  local removed = redis.call('ZREMRANGEBYSCORE', P .. 'idx', '-inf', cutoff * 1000)
  for _, q in ipairs(redis.call('SMEMBERS', P .. 'queues')) do
    removed = removed + redis.call('ZREMRANGEBYSCORE', P .. 'dead:' .. q, '-inf', cutoff)
  end
  return removed
end

local ops = {submit = submit, start = start, apply = apply, renew = renew, promote = promote,
  cancel = cancel, retry = retry, sweep = sweep}
return ops[op]()
