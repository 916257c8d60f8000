-- ARGV: prefix, worker, member, error, reason, last_error, attempt|''. Archives a running job
-- of the worker (at the given attempt, if any); returns 1, or 0 when the worker does not hold
-- it.
local now = now_ms()
local w, m = ARGV[2], ARGV[3]
local h = redis.call('HMGET', jkey(m), 'state', 'worker_id', 'queue', 'unique_key', 'errors',
                     'attempt')
if not held(h[1], h[2], h[6], w, ARGV[7]) then return 0 end
archive(m, h[3], w, h[4], h[5], ARGV[4], ARGV[5], ARGV[6], now)
return 1
