-- Shared by every script (prepended to each when the driver loads them).
-- ARGV[1] is always the key prefix. Numbers written to Redis go through num() ('%.0f'): Lua's
-- default number formatting would use an exponent for 16-digit scores.
local P = ARGV[1]
local PRIO = 4398046511104
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function num(n) return string.format('%.0f', n) end
local function jkey(m) return P .. ':job:' .. m end
local function qkey(q, kind) return P .. ':q:' .. q .. ':' .. kind end
local function wkey(w) return P .. ':w:' .. w end
local function append_error(errors, err)
  if not errors or errors == '' or errors == '[]' then return '[' .. err .. ']' end
  return string.sub(errors, 1, -2) .. ',' .. err .. ']'
end
-- queues with new work, in first-seen order: wake(q) records one, publish_wakes() tells workers
local woken, woken_set = {}, {}
local function wake(q)
  if not woken_set[q] then woken_set[q] = true; woken[#woken + 1] = q end
end
local function publish_wakes()
  for _, q in ipairs(woken) do redis.call('PUBLISH', P .. ':jobs', q) end
end
-- puts a job in its queue's ready or delayed set, and records the queue for a wake-up
local function add_waiting(m, q, prio, run_at, now)
  wake(q)
  if run_at <= now then
    redis.call('ZADD', qkey(q, 'ready'), num(prio * PRIO + run_at), m)
  else
    redis.call('ZADD', qkey(q, 'delayed'), num(run_at), m)
  end
end
local function promote(q, now)
  local due = redis.call('ZRANGEBYSCORE', qkey(q, 'delayed'), '-inf', num(now))
  for _, m in ipairs(due) do
    local h = redis.call('HMGET', jkey(m), 'priority', 'run_at')
    if h[1] then
      redis.call('ZADD', qkey(q, 'ready'), num(tonumber(h[1]) * PRIO + tonumber(h[2])), m)
    end
  end
  if #due > 0 then redis.call('ZREMRANGEBYSCORE', qkey(q, 'delayed'), '-inf', num(now)) end
end
local function leave_running(m, q, w)
  redis.call('ZREM', P .. ':running', m)
  redis.call('SREM', qkey(q, 'active'), m)
  if w then redis.call('SREM', wkey(w), m) end
end
local function release_unique(m, uk)
  if uk and uk ~= '' and redis.call('HGET', P .. ':unique', uk) == m then
    redis.call('HDEL', P .. ':unique', uk)
  end
end
local function to_history(m, state, result, now, limit)
  local flat = redis.call('HGETALL', jkey(m))
  local rec = {}
  for i = 1, #flat, 2 do rec[flat[i]] = flat[i + 1] end
  rec['id'] = m
  rec['final_state'] = state
  if result and result ~= '' then rec['result'] = result end
  rec['finished_at'] = num(now)
  redis.call('LPUSH', P .. ':history', cjson.encode(rec))
  redis.call('LTRIM', P .. ':history', 0, limit - 1)
end
local function archive(m, q, w, uk, errors, err, reason, last, now)
  leave_running(m, q, w)
  redis.call('SREM', P .. ':cancel', m)
  release_unique(m, uk)
  redis.call('HSET', jkey(m), 'state', 'failed', 'errors', append_error(errors, err),
             'reason', reason, 'failed_at', num(now))
  if last and last ~= '' then redis.call('HSET', jkey(m), 'last_error', last) end
  redis.call('HDEL', jkey(m), 'worker_id', 'cancel_requested')
  redis.call('ZADD', P .. ':failed', num(now), m)
  redis.call('ZADD', qkey(q, 'failed'), num(now), m)
end
local function held(h_state, h_worker, h_attempt, w, a)
  return h_state == 'running' and h_worker == w
    and (a == nil or a == '' or tonumber(h_attempt) == tonumber(a))
end
local function flat_job(m)
  local flat = redis.call('HGETALL', jkey(m))
  flat[#flat + 1] = 'id'
  flat[#flat + 1] = m
  return flat
end
