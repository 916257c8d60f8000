-- ARGV: prefix, nq, queues... The run_at (ms) of the next job in claim order over the unpaused
-- queues (a time not after now when jobs are ready), else nil.
local best = false
for i = 1, tonumber(ARGV[2]) do
  local q = ARGV[2 + i]
  if redis.call('SISMEMBER', P .. ':paused', q) == 0 then
    local r = redis.call('ZRANGE', qkey(q, 'ready'), 0, 0)
    if r[1] then
      local v = tonumber(redis.call('HGET', jkey(r[1]), 'run_at'))
      if v and (not best or v < best) then best = v end
    end
    local d = redis.call('ZRANGE', qkey(q, 'delayed'), 0, 0, 'WITHSCORES')
    if d[1] then
      local v = tonumber(d[2])
      if not best or v < best then best = v end
    end
  end
end
return best
