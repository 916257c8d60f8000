-- ARGV: prefix, limit, iso timestamp, reason. Jobs whose lease expired go back to ready (attempt
-- counted) or, on their last attempt, to the archive (pgqueue.job.rescue_archives); the error
-- record (the stored shape of pgqueue.job.AttemptError) and the archive reason carry `reason`
-- (pgqueue.job.RESCUE_REASON). Returns {requeued ids, archived ids}.
local now = now_ms()
local reason = ARGV[4]
local expired = redis.call('ZRANGEBYSCORE', P .. ':running', '-inf', '(' .. num(now),
                           'LIMIT', 0, tonumber(ARGV[2]))
local rescued, failed = {}, {}
for _, m in ipairs(expired) do
  local h = redis.call('HMGET', jkey(m), 'state', 'worker_id', 'queue', 'unique_key', 'errors',
                       'attempt', 'max_attempts', 'priority')
  if h[1] ~= 'running' then
    redis.call('ZREM', P .. ':running', m)
  else
    local q, w, attempt = h[3], h[2], tonumber(h[6])
    local err = cjson.encode({attempt = attempt, error = reason,
                              traceback = cjson.null, at = ARGV[3], worker = w or cjson.null})
    if attempt >= tonumber(h[7]) then
      archive(m, q, w, h[4], h[5], err, reason, reason, now)
      failed[#failed + 1] = tonumber(m)
    else
      leave_running(m, q, w)
      redis.call('HSET', jkey(m), 'state', 'waiting', 'run_at', num(now),
                 'errors', append_error(h[5], err), 'last_error', reason)
      redis.call('HDEL', jkey(m), 'worker_id')
      add_waiting(m, q, tonumber(h[8]), now, now)
      rescued[#rescued + 1] = tonumber(m)
    end
  end
end
publish_wakes()
return {rescued, failed}
