-- ARGV: prefix, queue. Removes the next ready job (paused or not) and returns it.
local now = now_ms()
local q = ARGV[2]
promote(q, now)
local top = redis.call('ZRANGE', qkey(q, 'ready'), 0, 0)
if #top == 0 then return false end
local m = top[1]
redis.call('ZREM', qkey(q, 'ready'), m)
local flat = flat_job(m)
release_unique(m, redis.call('HGET', jkey(m), 'unique_key'))
redis.call('SREM', P .. ':cancel', m)
redis.call('DEL', jkey(m))
return flat
