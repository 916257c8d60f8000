-- ARGV: prefix, member, history_limit. A waiting job goes to history as cancelled
-- ('cancelled'); a running job is flagged and its worker told ('requested'); else nil.
local now = now_ms()
local m = ARGV[2]
local h = redis.call('HMGET', jkey(m), 'state', 'worker_id', 'queue', 'unique_key')
if h[1] == 'waiting' then
  redis.call('ZREM', qkey(h[3], 'ready'), m)
  redis.call('ZREM', qkey(h[3], 'delayed'), m)
  to_history(m, 'cancelled', '', now, tonumber(ARGV[3]))
  release_unique(m, h[4])
  redis.call('SREM', P .. ':cancel', m)
  redis.call('DEL', jkey(m))
  return 'cancelled'
elseif h[1] == 'running' then
  redis.call('HSET', jkey(m), 'cancel_requested', '1')
  redis.call('SADD', P .. ':cancel', m)
  redis.call('PUBLISH', P .. ':ctl', cjson.encode({op = 'cancel', id = tonumber(m),
                                                   worker = h[2] or cjson.null}))
  return 'requested'
end
return false
