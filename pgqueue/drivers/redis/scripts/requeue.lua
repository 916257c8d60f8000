-- ARGV: prefix, worker, n, then n x (member, delay_ms, count_attempt '1'|'0'|'s', error|'',
-- last_error|'', attempt|'', max_attempts|''). Puts running jobs of the worker (at the given
-- attempt, if any) back to waiting; returns their ids. 's' is a snooze: the attempt is given
-- back (as with '0') and the job's 'snoozes' count goes up by one. max_attempts raises the
-- job's cap (never lowers it).
local now = now_ms()
local w, n = ARGV[2], tonumber(ARGV[3])
local out = {}
for i = 0, n - 1 do
  local b = 4 + i * 7
  local m = ARGV[b]
  local h = redis.call('HMGET', jkey(m), 'state', 'worker_id', 'queue', 'priority', 'errors',
                       'attempt')
  if held(h[1], h[2], h[6], w, ARGV[b + 5]) then
    local q = h[3]
    leave_running(m, q, w)
    local run_at = now + math.floor(tonumber(ARGV[b + 1]))
    redis.call('HSET', jkey(m), 'state', 'waiting', 'run_at', num(run_at))
    redis.call('HDEL', jkey(m), 'worker_id')
    if ARGV[b + 2] ~= '1' then redis.call('HINCRBY', jkey(m), 'attempt', -1) end
    if ARGV[b + 2] == 's' then redis.call('HINCRBY', jkey(m), 'snoozes', 1) end
    if ARGV[b + 6] ~= '' then
      local cap = tonumber(ARGV[b + 6])
      if cap > tonumber(redis.call('HGET', jkey(m), 'max_attempts')) then
        redis.call('HSET', jkey(m), 'max_attempts', ARGV[b + 6])
      end
    end
    if ARGV[b + 3] ~= '' then
      redis.call('HSET', jkey(m), 'errors', append_error(h[5], ARGV[b + 3]))
    end
    if ARGV[b + 4] ~= '' then redis.call('HSET', jkey(m), 'last_error', ARGV[b + 4]) end
    add_waiting(m, q, tonumber(h[4]), run_at, now)
    out[#out + 1] = tonumber(m)
  end
end
publish_wakes()
return out
