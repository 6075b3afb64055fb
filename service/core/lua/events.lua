-- Tidings: shared by the scripts that change jobs and emit events (after common.lua).
-- They take KEYS[1] = the partition's firehose, KEYS[2] = its stats hash, and ARGV[1..3] =
-- firehose length, events kept per job, retention (ms).

local FIRE, STATS = KEYS[1], KEYS[2]
-- (the firehose length and the retention pass through as the strings they came as)
local FIRE_MAX, EV_MAX, RETAIN_MS = ARGV[1], tonumber(ARGV[2]), ARGV[3]

-- the partition's event counter: every firehose entry carries the next number, so a reader
-- that finds a jump knows it missed entries (trimmed before it read them)
local counter = nil
local function next_n()
  if counter == nil then counter = tonumber(redis.call('HGET', STATS, 'n') or '0') end
  counter = counter + 1
  return counter
end

-- The fields a script reads from each job it changes: state, event count, task, queue, then
-- its own (built once per script call, not per job).
local function fields(own)
  local names = {'s', 'n', 't', 'q'}
  for _, f in ipairs(own) do names[#names + 1] = f end
  return names
end

-- A job being changed: `set` collects fields for one HSET at the end (`save`).
local function job(key, id, names)
  local j = {key = key, id = id, set = {}}
  local v = redis.call('HMGET', key, unpack(names))
  for i = 1, #names do j[names[i]] = v[i] end
  j.n = tonumber(j.n or '0')
  return j
end

-- put(j, field, value, field, value, ...): up to six pairs, without a table per call
local function put(j, k1, v1, k2, v2, k3, v3, k4, v4, k5, v5, k6, v6)
  local set = j.set
  local m = #set
  set[m + 1], set[m + 2], j[k1] = k1, v1, v1
  if k2 == nil then return end
  set[m + 3], set[m + 4], j[k2] = k2, v2, v2
  if k3 == nil then return end
  set[m + 5], set[m + 6], j[k3] = k3, v3, v3
  if k4 == nil then return end
  set[m + 7], set[m + 8], j[k4] = k4, v4, v4
  if k5 == nil then return end
  set[m + 9], set[m + 10], j[k5] = k5, v5, v5
  if k6 == nil then return end
  set[m + 11], set[m + 12], j[k6] = k6, v6, v6
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
    'j', j.id, 't', j.t, 'q', j.q, 'n', fmt('%d', next_n()), 'v', body)
  j.n = j.n + 1
  local ns = fmt('%d', j.n)
  local set = j.set
  local m = #set
  set[m + 1], set[m + 2], set[m + 3], set[m + 4] = 'n', ns, ns, eid .. ' ' .. body
  if j.n > EV_MAX then
    -- bounded: drop the oldest; a reader resuming from a dropped id gets a snapshot
    redis.call('HDEL', j.key, j.n - EV_MAX)
  end
  return eid
end

-- Queue entries done with, acknowledged and deleted together by `commit` (one XACK and one
-- XDEL per queue, not per job: the script is atomic, so nobody sees the difference).
local drops = {}  -- queue stream -> entries
local function drop_entry(qkey, entry)
  if entry and entry ~= '' then
    local d = drops[qkey]
    if d == nil then
      d = {}
      drops[qkey] = d
    end
    d[#d + 1] = entry
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

-- The end of every event-writing script (on every path that changed something): the dropped
-- queue entries, the partition's event counter and the metrics.
local function commit()
  for qkey, d in pairs(drops) do
    for i = 1, #d, 1000 do
      local some = {unpack(d, i, math.min(i + 999, #d))}
      redis.call('XACK', qkey, GROUP, unpack(some))
      redis.call('XDEL', qkey, unpack(some))
    end
  end
  if counter ~= nil then redis.call('HSET', STATS, 'n', fmt('%d', counter)) end
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
