-- register_queue: a queue is created on first use, up to a cap (jobs.max_queues).
-- KEYS: the deployment's queue registry
-- ARGV: name, cap (0 = none), settings JSON for a new queue
-- reply: 'ok' | 'full'
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 'ok' end
local cap = tonumber(ARGV[2])
if cap > 0 and redis.call('HLEN', KEYS[1]) >= cap then return 'full' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 'ok'
