-- ARGV: prefix. {now_ms, {name, paused, registered, waiting, scheduled, running, failed,
-- failed_last_hour, oldest ready run_at or -1}...}. The oldest ready job is found exactly by
-- looking at the first job of each priority band of the ready set.
local now = now_ms()
local out = {}
for _, q in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
  local rk = qkey(q, 'ready')
  local oldest = -1
  local top = redis.call('ZRANGE', rk, 0, 0, 'WITHSCORES')
  while top[1] do
    local score = tonumber(top[2])
    local band = math.floor(score / PRIO)
    local run_at = score - band * PRIO
    if oldest < 0 or run_at < oldest then oldest = run_at end
    top = redis.call('ZRANGEBYSCORE', rk, num((band + 1) * PRIO), '+inf', 'WITHSCORES',
                     'LIMIT', 0, 1)
  end
  local d = redis.call('ZRANGE', qkey(q, 'delayed'), 0, 0, 'WITHSCORES')
  if d[1] and tonumber(d[2]) <= now and (oldest < 0 or tonumber(d[2]) < oldest) then
    oldest = tonumber(d[2])
  end
  local due = redis.call('ZCOUNT', qkey(q, 'delayed'), '-inf', num(now))
  out[#out + 1] = {q, redis.call('SISMEMBER', P .. ':paused', q),
                   redis.call('SISMEMBER', P .. ':registered', q),
                   redis.call('ZCARD', rk) + due,
                   redis.call('ZCOUNT', qkey(q, 'delayed'), '(' .. num(now), '+inf'),
                   redis.call('SCARD', qkey(q, 'active')),
                   redis.call('ZCARD', qkey(q, 'failed')),
                   redis.call('ZCOUNT', qkey(q, 'failed'), '(' .. num(now - 3600000), '+inf'),
                   num(oldest)}
end
return {num(now), out}
