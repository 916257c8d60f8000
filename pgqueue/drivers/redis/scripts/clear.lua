-- ARGV: prefix, queue, chunk. Deletes up to 2 x chunk waiting jobs; returns how many.
local q, chunk = ARGV[2], tonumber(ARGV[3])
local n = 0
for _, kind in ipairs({'ready', 'delayed'}) do
  local ms = redis.call('ZRANGE', qkey(q, kind), 0, chunk - 1)
  for _, m in ipairs(ms) do
    release_unique(m, redis.call('HGET', jkey(m), 'unique_key'))
    redis.call('SREM', P .. ':cancel', m)
    redis.call('DEL', jkey(m))
    redis.call('ZREM', qkey(q, kind), m)
    n = n + 1
  end
end
return n
