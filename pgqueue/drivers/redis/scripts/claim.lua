-- ARGV: prefix, worker, lease_ms, limit, nq, queues... Claims the best ``limit`` ready jobs
-- over the unpaused queues; returns them as flat field lists.
local now = now_ms()
local w, lease, limit, nq = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local cands = {}
for i = 1, nq do
  local q = ARGV[5 + i]
  if redis.call('SISMEMBER', P .. ':paused', q) == 0 then
    promote(q, now)
    local top = redis.call('ZRANGE', qkey(q, 'ready'), 0, limit - 1, 'WITHSCORES')
    for j = 1, #top, 2 do cands[#cands + 1] = {tonumber(top[j + 1]), top[j], q} end
  end
end
if nq > 1 then
  table.sort(cands, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
end
local out = {}
for i = 1, math.min(limit, #cands) do
  local m, q = cands[i][2], cands[i][3]
  redis.call('ZREM', qkey(q, 'ready'), m)
  redis.call('HINCRBY', jkey(m), 'attempt', 1)
  redis.call('HSET', jkey(m), 'state', 'running', 'worker_id', w, 'started_at', num(now))
  redis.call('ZADD', P .. ':running', num(now + lease), m)
  redis.call('SADD', qkey(q, 'active'), m)
  redis.call('SADD', wkey(w), m)
  out[#out + 1] = flat_job(m)
end
return out
