-- ARGV: prefix, queue|'', before_ms|'', chunk. Deletes up to chunk archived jobs.
local key = P .. ':failed'
if ARGV[2] ~= '' then key = qkey(ARGV[2], 'failed') end
local max = '+inf'
if ARGV[3] ~= '' then max = '(' .. ARGV[3] end
local ms = redis.call('ZRANGEBYSCORE', key, '-inf', max, 'LIMIT', 0, tonumber(ARGV[4]))
for _, m in ipairs(ms) do
  local q = redis.call('HGET', jkey(m), 'queue')
  redis.call('DEL', jkey(m))
  redis.call('ZREM', P .. ':failed', m)
  if q then redis.call('ZREM', qkey(q, 'failed'), m) end
  redis.call('ZREM', key, m)
end
return #ms
