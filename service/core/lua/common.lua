-- Tidings: shared by every script (prepended to each op; see service/core/scripts.py).
--
-- Every key a script touches arrives in KEYS (Redis's rule, and what a cluster client routes
-- by); all of them share one hash tag. Times are Redis's own clock in ms. The constants below
-- are rendered from service/core/states.py and wire.py, so the state machine is defined once:
-- `set_state` refuses any transition that is not listed there.

local GROUP = '{{GROUP}}'
local ALLOWED = {{TRANSITIONS}}
local TERMINAL = {{TERMINAL}}
local BUCKETS = {{BUCKETS}}

local T = redis.call('TIME')
local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
-- the same as a string, made without Lua's number formatting (a sprintf per use)
local NOW_S = T[1] .. string.sub(string.rep('0', 6 - #T[2]) .. T[2], 1, 3)
local fmt = string.format

local function reply(t)
  if #t == 0 then return '[]' end
  return cjson.encode(t)
end
