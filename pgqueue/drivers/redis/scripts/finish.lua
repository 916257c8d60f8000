-- ARGV: prefix, worker, history_limit, n, then n x (member, state, result|'', attempt|'').
-- Moves running jobs of the worker (at the given attempt, if any) to history; returns their ids.
local now = now_ms()
local w, limit, n = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for i = 0, n - 1 do
  local b = 5 + i * 4
  local m, state, result = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local h = redis.call('HMGET', jkey(m), 'state', 'worker_id', 'queue', 'unique_key', 'attempt')
  if held(h[1], h[2], h[5], w, ARGV[b + 3]) then
    to_history(m, state, result, now, limit)
    leave_running(m, h[3], w)
    redis.call('SREM', P .. ':cancel', m)
    release_unique(m, h[4])
    redis.call('DEL', jkey(m))
    out[#out + 1] = tonumber(m)
  end
end
return out
