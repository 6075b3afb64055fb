-- purge: delete finished jobs of one queue for good: the job hash (its record and its events),
-- its dead-letter entry and its index entry. Only a finished job of this queue that finished
-- before the cutoff is deleted; any other is kept (a dead letter retried meanwhile is queued
-- again and stays). It only deletes, so it may run while Redis is out of memory (allow-oom):
-- purging is how an operator makes room. Idempotent: a re-sent call finds the jobs it deleted
-- missing, and changes nothing more.
-- KEYS: index, the queue's dead letters, then per job: job
-- ARGV: queue, finished before (ms; 0 = any time), n, then per job: id, its index entry id
--   ('' = look it up near the job's creation time, when its index entry was added)
-- reply (JSON): per job 'purged' | 'kept' | 'missing'
local IDX, DKEY = KEYS[1], KEYS[2]
local queue, before, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for i = 0, n - 1 do
  local id, entry = ARGV[4 + i * 2], ARGV[5 + i * 2]
  local jkey = KEYS[3 + i]
  local v = redis.call('HMGET', jkey, 's', 'q', 'f', 'c')
  local s, q, f, c = v[1], v[2], v[3], v[4]
  if not s then
    -- gone already (expired, or purged by an earlier try of this call): drop what points at it
    redis.call('ZREM', DKEY, id)
    if entry ~= '' then redis.call('XDEL', IDX, entry) end
    out[#out + 1] = 'missing'
  elseif q ~= queue or not TERMINAL[s] or (before > 0 and tonumber(f or '0') >= before) then
    out[#out + 1] = 'kept'
  else
    if entry == '' and c then
      -- the entry was added by the submit that set `c`, in the same call, a few ms later at
      -- most; one not found here is left to the retention sweep (listing skips it)
      local upto = tostring(tonumber(c) + 250)
      for _, e in ipairs(redis.call('XRANGE', IDX, c, upto, 'COUNT', 2000)) do
        if e[2][2] == id then
          entry = e[1]
          break
        end
      end
    end
    if entry ~= '' then redis.call('XDEL', IDX, entry) end
    redis.call('ZREM', DKEY, id)
    redis.call('DEL', jkey)
    out[#out + 1] = 'purged'
  end
end
return reply(out)
