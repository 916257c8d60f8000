-- ARGV: prefix, n, then n x (queue, task, args, priority, max_attempts, run_at_ms|'',
-- delay_ms|'', unique_key|'', timeout_s|'', meta). Returns ids in input order (the holder's id
-- for a unique key already held by a live job). Wakes the queues' workers.
local now = now_ms()
local n = tonumber(ARGV[2])
local ids = {}
for i = 0, n - 1 do
  local b = 3 + i * 10
  local q, uk = ARGV[b], ARGV[b + 7]
  local held = false
  if uk ~= '' then held = redis.call('HGET', P .. ':unique', uk) end
  if held then
    ids[#ids + 1] = tonumber(held)
  else
    local id = redis.call('INCR', P .. ':seq')
    local m = string.format('%016d', id)
    local run_at
    if ARGV[b + 5] ~= '' then run_at = tonumber(ARGV[b + 5])
    else run_at = now + math.floor(tonumber(ARGV[b + 6])) end
    redis.call('HSET', jkey(m), 'queue', q, 'task', ARGV[b + 1], 'args', ARGV[b + 2],
               'priority', ARGV[b + 3], 'attempt', '0', 'max_attempts', ARGV[b + 4],
               'run_at', num(run_at), 'created_at', num(now), 'meta', ARGV[b + 9],
               'errors', '[]', 'state', 'waiting')
    if uk ~= '' then
      redis.call('HSET', jkey(m), 'unique_key', uk)
      redis.call('HSET', P .. ':unique', uk, m)
    end
    if ARGV[b + 8] ~= '' then redis.call('HSET', jkey(m), 'timeout_s', ARGV[b + 8]) end
    add_waiting(m, q, tonumber(ARGV[b + 3]), run_at, now)
    ids[#ids + 1] = id
  end
end
for _, q in ipairs(woken) do redis.call('SADD', P .. ':queues', q) end
publish_wakes()
return ids
