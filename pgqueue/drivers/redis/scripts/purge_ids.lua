-- ARGV: prefix, m1, m2, ...: deletes these archived jobs (any that is no longer archived, e.g.
-- re-driven meanwhile, is skipped); returns how many were deleted.
local n = 0
for i = 2, #ARGV do
  local m = ARGV[i]
  local h = redis.call('HMGET', jkey(m), 'state', 'queue')
  if h[1] == 'failed' then
    redis.call('DEL', jkey(m))
    redis.call('ZREM', P .. ':failed', m)
    if h[2] then redis.call('ZREM', qkey(h[2], 'failed'), m) end
    n = n + 1
  end
end
return n
