-- ARGV: prefix, older_than_ms. Forgets workers that stopped heartbeating.
local old = redis.call('ZRANGEBYSCORE', P .. ':workers:hb', '-inf',
                       '(' .. num(now_ms() - tonumber(ARGV[2])))
for _, w in ipairs(old) do
  redis.call('HDEL', P .. ':workers', w)
  redis.call('ZREM', P .. ':workers:hb', w)
end
return #old
