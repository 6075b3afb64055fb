-- Tidings: shared by the scripts that change jobs and emit events (after common.lua).
-- They take KEYS[1] = the partition's firehose, KEYS[2] = its stats hash, and ARGV[1..3] =
-- firehose length, events kept per job, retention (ms).

local FIRE, STATS = KEYS[1], KEYS[2]
local FIRE_MAX, EV_MAX, RETAIN_MS = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])

-- the partition's event counter: every firehose entry carries the next number, so a reader
-- that finds a jump knows it missed entries (trimmed before it read them)
local counter = nil
local function next_n()
  if counter == nil then counter = tonumber(redis.call('HGET', STATS, 'n') or '0') end
  counter = counter + 1
  return counter
end

-- A job being changed: `set` collects fields for one HSET at the end (`save`).
local function job(key, id, fields)
  local j = {key = key, id = id, set = {}}
  local names = {'s', 'n', 't', 'q'}
  for _, f in ipairs(fields) do names[#names + 1] = f end
  local v = redis.call('HMGET', key, unpack(names))
  for i, f in ipairs(names) do j[f] = v[i] end
  j.n = tonumber(j.n or '0')
  return j
end

local function put(j, ...)
  local args = {...}
  for i = 1, #args, 2 do
    j.set[#j.set + 1] = args[i]
    j.set[#j.set + 1] = args[i + 1]
    j[args[i]] = args[i + 1]
  end
end

local function set_state(j, to)
  local from = j.s or ''
  if not ALLOWED[from] or not ALLOWED[from][to] then
    error('tidings: transition ' .. from .. ' -> ' .. to .. ' is not allowed (job ' .. j.id .. ')')
  end
  put(j, 's', to)
end

local function save(j)
  if #j.set > 0 then
    redis.call('HSET', j.key, unpack(j.set))
    j.set = {}
  end
end

-- Append one event (its compact body) to the firehose and to the job's own fields.
local function emit(j, body)
  local eid = redis.call('XADD', FIRE, 'MAXLEN', '~', FIRE_MAX, '*',
    'j', j.id, 't', j.t, 'q', j.q, 'n', next_n(), 'v', body)
  j.n = j.n + 1
  put(j, 'n', j.n, j.n, eid .. ' ' .. body)
  if j.n > EV_MAX then
    -- bounded: drop the oldest; a reader resuming from a dropped id gets a snapshot
    redis.call('HDEL', j.key, j.n - EV_MAX)
  end
  return eid
end

local function drop_entry(qkey, entry)
  if entry and entry ~= '' then
    redis.call('XACK', qkey, GROUP, entry)
    redis.call('XDEL', qkey, entry)
  end
end

-- Does `consumer` hold `entry` in the queue's consumer group? (a fence for stale fetches)
local function owns(qkey, entry, consumer)
  local p = redis.call('XPENDING', qkey, GROUP, entry, entry, 1)
  return #p > 0 and p[1][2] == consumer
end

-- Metrics kept by the transitions themselves (exact, whatever the number of processes). A
-- script adds the increments up per field and `commit` writes each field once, with one
-- HINCRBY: a batch of 100 finishes of one task costs a handful of commands, not hundreds. The
-- per-minute trend hash gets its expiry when one of its fields is created (a new minute's
-- hash), not at every write. This runs for every job: it stays plain (a measured choice, see
-- bench/metrics_cost.py).
local NB = #BUCKETS + 1  -- histogram buckets, +Inf last
local function bucket(ms)
  for i = 1, NB - 1 do
    if ms <= BUCKETS[i] then return i end
  end
  return NB
end

local TREND_TTL_MS = 7200000
local stat_adds, trend_adds = {}, {}  -- field -> increment
local trend_key = nil

local function label(j)
  local lbl = j.lbl
  if lbl == nil then
    lbl = j.q .. '|' .. j.t
    j.lbl = lbl
  end
  return lbl
end

-- kind: sub (submitted), ret (retried), dl (dead-lettered), rq (put back by hand)
local function count(kind, j)
  local f = kind .. '|' .. label(j)
  stat_adds[f] = (stat_adds[f] or 0) + 1
end

-- kind: w (wait) or r (run): ms into the histogram's buckets and sum (and this minute's trend)
local function observe(kind, j, ms, trend)
  local lbl, b = label(j), bucket(ms)
  local f = kind .. 'b|' .. lbl .. '|' .. b
  stat_adds[f] = (stat_adds[f] or 0) + 1
  f = kind .. 's|' .. lbl
  stat_adds[f] = (stat_adds[f] or 0) + ms
  if trend then
    f = kind .. '|' .. lbl .. '|' .. b
    trend_adds[f] = (trend_adds[f] or 0) + 1
    trend_key = trend
  end
end

local function outcome(j, what, trend)
  local lbl = label(j)
  local f = 'fin|' .. lbl .. '|' .. what
  stat_adds[f] = (stat_adds[f] or 0) + 1
  if trend then
    f = 'o|' .. lbl .. '|' .. what
    trend_adds[f] = (trend_adds[f] or 0) + 1
    trend_key = trend
  end
end

-- The end of every event-writing script: the partition's event counter and the metrics.
local function commit()
  if counter ~= nil then redis.call('HSET', STATS, 'n', counter) end
  for f, by in pairs(stat_adds) do
    if by ~= 0 then redis.call('HINCRBY', STATS, f, by) end
  end
  if trend_key ~= nil then
    -- a field created now (its count is this increment) may be a new minute's hash
    local created = false
    for f, by in pairs(trend_adds) do
      if redis.call('HINCRBY', trend_key, f, by) == by then created = true end
    end
    if created then redis.call('PEXPIRE', trend_key, TREND_TTL_MS) end
  end
end

local function retain(j)
  redis.call('PEXPIRE', j.key, RETAIN_MS)
end

local function stream_ms(eid)
  return tonumber(string.match(eid, '^(%d+)'))
end
