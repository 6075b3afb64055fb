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
local function save_counter()
  if counter ~= nil then redis.call('HSET', STATS, 'n', counter) end
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

local function bucket(ms)
  for i, le in ipairs(BUCKETS) do
    if ms <= le then return i end
  end
  return #BUCKETS + 1
end

-- Metrics kept by the transitions themselves (exact, whatever the number of processes).
local function count(field, by)
  redis.call('HINCRBY', STATS, field, by or 1)
end

local function observe(kind, j, ms, trend)
  local lbl = j.q .. '|' .. j.t
  local b = bucket(ms)
  count(kind .. 'b|' .. lbl .. '|' .. b)
  count(kind .. 's|' .. lbl, ms)
  if trend then
    redis.call('HINCRBY', trend, kind .. '|' .. lbl .. '|' .. b, 1)
    redis.call('PEXPIRE', trend, 7200000)
  end
end

local function outcome(j, what, trend)
  count('fin|' .. j.q .. '|' .. j.t .. '|' .. what)
  if trend then
    redis.call('HINCRBY', trend, 'o|' .. j.q .. '|' .. j.t .. '|' .. what, 1)
    redis.call('PEXPIRE', trend, 7200000)
  end
end

local function retain(j)
  redis.call('PEXPIRE', j.key, RETAIN_MS)
end

local function stream_ms(eid)
  return tonumber(string.match(eid, '^(%d+)'))
end
