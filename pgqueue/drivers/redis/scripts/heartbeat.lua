-- ARGV: prefix, worker, lease_ms, all '1'|'0', members... Extends the leases of the listed
-- jobs (all the worker's jobs when ``all`` is '1') that run under the worker, and its registry
-- heartbeat. Members of the worker's set that no longer run under it are dropped from the set.
local now = now_ms()
local w, lease = ARGV[2], tonumber(ARGV[3])
redis.call('ZADD', P .. ':workers:hb', 'XX', num(now), w)
local listed = {}
if ARGV[4] == '1' then
  listed = redis.call('SMEMBERS', wkey(w))
else
  for i = 5, #ARGV do listed[#listed + 1] = ARGV[i] end
end
for _, m in ipairs(listed) do
  local h = redis.call('HMGET', jkey(m), 'state', 'worker_id')
  if h[1] == 'running' and h[2] == w then
    redis.call('ZADD', P .. ':running', 'XX', num(now + lease), m)
  else
    redis.call('SREM', wkey(w), m)
  end
end
return 1
