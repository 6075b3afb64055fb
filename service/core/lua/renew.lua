-- renew: a worker's heartbeat over its running jobs: resets the idle time (the lease) of each
-- job's queue entry. Writes no event.
-- KEYS: per job: job, queue stream
-- ARGV: consumer, n, then per job: id, run
-- reply (JSON): per job 'ok' | 'cancel' (cancellation requested) | 'lost' (fenced)
local consumer = ARGV[1]
local n = tonumber(ARGV[2])
local out = {}
for i = 0, n - 1 do
  local run = ARGV[4 + i * 2]
  local f = redis.call('HMGET', KEYS[1 + i * 2], 's', 'r', 'e', 'x')
  if f[1] ~= 'running' or f[2] ~= run then
    out[#out + 1] = 'lost'
  else
    redis.call('XCLAIM', KEYS[2 + i * 2], GROUP, consumer, 0, f[3], 'JUSTID')
    out[#out + 1] = (f[4] and f[4] ~= '') and 'cancel' or 'ok'
  end
end
return reply(out)
