-- ARGV: prefix, limit, iso timestamp, reason, quarantine_after, quarantine reason ('{n}' = the
-- count), spread_ms. The rescue rule of pgqueue.job (rescue_counts, rescue_quarantines), in one
-- script: jobs whose lease expired go back to ready, or are quarantined to the archive.
-- A rescue counts against a job (its 'rescues' field) only when its worker died: the worker's
-- registry heartbeat is older than the job's lease (a live worker that did not list the job, a
-- lost claim answer, was not running it). A job is quarantined when that count reaches
-- quarantine_after and it is the prime suspect among the jobs its worker held (a higher count
-- than each; or twice quarantine_after whatever its neighbours). The other jobs of a dead worker
-- come back spread_ms apart, most-rescued last. Every rescue appends an error record (the stored
-- shape of pgqueue.job.AttemptError) with `reason`. Returns {requeued ids, quarantined ids}.
local now = now_ms()
local reason, after = ARGV[4], tonumber(ARGV[5])
local qreason, spread = ARGV[6], tonumber(ARGV[7])
local expired = redis.call('ZRANGEBYSCORE', P .. ':running', '-inf', '(' .. num(now),
                           'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
-- the verdicts first, on the state before this rescue changes anything
local held = {}  -- worker -> {member -> rescues} of the jobs it holds
local function held_by(w)
  if not held[w] then
    local t = {}
    for _, o in ipairs(redis.call('SMEMBERS', wkey(w))) do
      local oh = redis.call('HMGET', jkey(o), 'state', 'worker_id', 'rescues')
      if oh[1] == 'running' and oh[2] == w then t[o] = tonumber(oh[3]) or 0 end
    end
    held[w] = t
  end
  return held[w]
end
local todo, groups = {}, {}
for i = 1, #expired, 2 do
  local m, lease = expired[i], tonumber(expired[i + 1])
  local h = redis.call('HMGET', jkey(m), 'state', 'worker_id', 'queue', 'unique_key', 'errors',
                       'attempt', 'max_attempts', 'priority', 'rescues')
  if h[1] ~= 'running' then
    redis.call('ZREM', P .. ':running', m)
  else
    local w, r = h[2], tonumber(h[9]) or 0
    local died = true
    if w then
      local hb = redis.call('ZSCORE', P .. ':workers:hb', w)
      if hb and tonumber(hb) >= lease then died = false end
    end
    local quarantine = false
    if died and r + 1 >= after then
      local co = nil
      if w then
        for o, orr in pairs(held_by(w)) do
          if o ~= m and (co == nil or orr > co) then co = orr end
        end
      end
      quarantine = co == nil or r > co or r + 1 >= 2 * after
    end
    local job = {m = m, h = h, w = w, r = r, died = died, quarantine = quarantine, rank = 0}
    todo[#todo + 1] = job
    if died then
      local g = w or ''
      groups[g] = groups[g] or {}
      table.insert(groups[g], job)
    end
  end
end
for _, g in pairs(groups) do
  table.sort(g, function(a, b)
    if a.r ~= b.r then return a.r < b.r end
    return tonumber(a.m) < tonumber(b.m)
  end)
  for i, job in ipairs(g) do job.rank = i - 1 end
end
local rescued, failed = {}, {}
for _, job in ipairs(todo) do
  local m, h, w = job.m, job.h, job.w
  local q, attempt = h[3], tonumber(h[6])
  local err = cjson.encode({attempt = attempt, error = reason,
                            traceback = cjson.null, at = ARGV[3], worker = w or cjson.null})
  if job.quarantine then
    local why = string.gsub(qreason, '{n}', tostring(job.r + 1))
    archive(m, q, w, h[4], h[5], err, why, reason, now)
    failed[#failed + 1] = tonumber(m)
  else
    leave_running(m, q, w)
    local run_at = now + math.floor(job.rank * spread)
    redis.call('HSET', jkey(m), 'state', 'waiting', 'run_at', num(run_at),
               'errors', append_error(h[5], err), 'last_error', reason)
    if job.died then redis.call('HSET', jkey(m), 'rescues', tostring(job.r + 1)) end
    redis.call('HDEL', jkey(m), 'worker_id')
    add_waiting(m, q, tonumber(h[8]), run_at, now)
    rescued[#rescued + 1] = tonumber(m)
  end
end
publish_wakes()
return {rescued, failed}
