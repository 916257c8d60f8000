-- ARGV: prefix, worker, info JSON.
redis.call('HSET', P .. ':workers', ARGV[2], ARGV[3])
redis.call('ZADD', P .. ':workers:hb', num(now_ms()), ARGV[2])
return 1
