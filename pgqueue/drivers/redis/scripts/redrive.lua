-- ARGV: prefix, n, members... Re-drives archived jobs (all or nothing on unique conflicts).
local now = now_ms()
local n = tonumber(ARGV[2])
local keys = {}
for i = 1, n do
  local m = ARGV[2 + i]
  local h = redis.call('HMGET', jkey(m), 'state', 'unique_key')
  if h[1] == 'failed' and h[2] then
    if keys[h[2]] or redis.call('HEXISTS', P .. ':unique', h[2]) == 1 then
      return redis.error_reply('PGQUEUE_UNIQUE job ' .. tonumber(m))
    end
    keys[h[2]] = true
  end
end
local out = {}
for i = 1, n do
  local m = ARGV[2 + i]
  local h = redis.call('HMGET', jkey(m), 'state', 'queue', 'priority', 'errors', 'unique_key')
  if h[1] == 'failed' then
    local q = h[2]
    redis.call('HDEL', jkey(m), 'reason', 'failed_at', 'worker_id', 'started_at',
               'cancel_requested', 'last_error', 'rescues')
    redis.call('HSET', jkey(m), 'state', 'waiting', 'attempt', '0', 'snoozes', '0',
               'run_at', num(now))
    local ok, errs = pcall(cjson.decode, h[4] or '[]')
    if ok and type(errs) == 'table' and #errs > 0 and type(errs[#errs]) == 'table' then
      local last = errs[#errs]['error']
      if type(last) == 'string' or type(last) == 'number' then
        redis.call('HSET', jkey(m), 'last_error', tostring(last))
      end
    end
    redis.call('ZREM', P .. ':failed', m)
    redis.call('ZREM', qkey(q, 'failed'), m)
    if h[5] then redis.call('HSET', P .. ':unique', h[5], m) end
    add_waiting(m, q, tonumber(h[3]), now, now)
    out[#out + 1] = tonumber(m)
  end
end
publish_wakes()
return out
