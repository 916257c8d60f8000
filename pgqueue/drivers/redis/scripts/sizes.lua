-- ARGV: prefix, queue. {waiting (ready now), scheduled, running, failed}.
local now, q = now_ms(), ARGV[2]
local due = redis.call('ZCOUNT', qkey(q, 'delayed'), '-inf', num(now))
return {redis.call('ZCARD', qkey(q, 'ready')) + due,
        redis.call('ZCOUNT', qkey(q, 'delayed'), '(' .. num(now), '+inf'),
        redis.call('SCARD', qkey(q, 'active')), redis.call('ZCARD', qkey(q, 'failed'))}
