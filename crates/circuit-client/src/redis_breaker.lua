-- One breaker key's policy step, run atomically inside Redis (EVALSHA).
-- The same semantics as the circuit-breaker crate's Breakers, for one key:
-- every transition increments the generation, clears the counts and drops
-- the probe slots; a record of an older generation is ignored; an expired
-- probe counts as a failure; open becomes half-open once, stored, when its
-- time has passed. The clock is Redis's TIME (microseconds), never a
-- client's.
--
-- KEYS[1] spec      hash: FailureThreshold, FailureRate ('' = none), WindowUs,
--                   MinimumCalls, SuccessThreshold, HalfOpenMaxProbes,
--                   OpenTimeoutUs, PermitTtlUs, Json
-- KEYS[2] ids       string: the last permit id given (INCR)
-- KEYS[3] state     hash: State, Gen, Req, Succ, Fail, Excl, CSucc, CFail,
--                   OpenUntil, WindowEnd (times in microseconds of TIME)
-- KEYS[4] permits   zset: 'GEN:ID' scored by lease end, every generation
-- KEYS[5] probes    zset: 'ID' scored by lease end, current half-open
--                   generation's probes only
-- ARGV[1] op        allow | record | reset | open | close | show
-- ARGV[2] key       the breaker key (for transitions and events)
-- ARGV[3] channel   where transitions are PUBLISHed ('' = nowhere)
-- ARGV[4] idle ms   how long an idle key is kept
-- record: ARGV[5] generation, ARGV[6] id, ARGV[7] success|failure|excluded

local op, bkey, channel = ARGV[1], ARGV[2], ARGV[3]
local idle_ms = tonumber(ARGV[4])

local s = redis.call('HMGET', KEYS[1], 'FailureThreshold', 'FailureRate', 'WindowUs', 'MinimumCalls',
  'SuccessThreshold', 'HalfOpenMaxProbes', 'OpenTimeoutUs', 'PermitTtlUs')
if not s[1] then
  return {'nobreaker'}
end
local failure_threshold = tonumber(s[1])
local failure_rate = (s[2] and s[2] ~= '') and tonumber(s[2]) or nil
local window = tonumber(s[3])
local minimum_calls = tonumber(s[4])
local success_threshold = tonumber(s[5])
local max_probes = tonumber(s[6])
local open_timeout = tonumber(s[7])
local permit_ttl = tonumber(s[8])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local transitions = {}

local function load()
  local h = redis.call('HMGET', KEYS[3], 'State', 'Gen', 'Req', 'Succ', 'Fail', 'Excl', 'CSucc', 'CFail',
    'OpenUntil', 'WindowEnd')
  if not h[1] then
    return nil
  end
  return {
    state = h[1], gen = tonumber(h[2]), req = tonumber(h[3]), succ = tonumber(h[4]), fail = tonumber(h[5]),
    excl = tonumber(h[6]), csucc = tonumber(h[7]), cfail = tonumber(h[8]), open_until = tonumber(h[9]),
    window_end = tonumber(h[10]),
  }
end

local function fresh()
  return {
    state = 'closed', gen = 0, req = 0, succ = 0, fail = 0, excl = 0, csucc = 0, cfail = 0, open_until = 0,
    window_end = (window > 0) and (now + window) or 0,
  }
end

local function clear_counts(c)
  c.req, c.succ, c.fail, c.excl, c.csucc, c.cfail = 0, 0, 0, 0, 0, 0
end

-- A new state: new generation, counts cleared, probe slots dropped.
local function transit(c, to, at)
  local from = c.state
  c.state = to
  c.gen = c.gen + 1
  clear_counts(c)
  c.window_end = 0
  redis.call('DEL', KEYS[5])
  if to == 'open' then
    c.open_until = at + open_timeout
  elseif to == 'closed' and window > 0 then
    c.window_end = at + window
  end
  transitions[#transitions + 1] = {from, to, c.gen}
end

-- Clears a closed window's counts once it has ended (not a transition).
local function roll_window(c, at)
  if c.state == 'closed' and c.window_end > 0 and at >= c.window_end then
    clear_counts(c)
    c.window_end = (window > 0) and (at + window) or 0
  end
end

-- Counts an outcome of the current generation; makes the transition it
-- calls for.
local function count(c, outcome, at)
  if outcome == 'excluded' then
    c.excl = c.excl + 1
    return
  end
  c.req = c.req + 1
  if outcome == 'success' then
    c.succ = c.succ + 1
    c.csucc = c.csucc + 1
    c.cfail = 0
  else
    c.fail = c.fail + 1
    c.cfail = c.cfail + 1
    c.csucc = 0
  end
  if c.state == 'closed' then
    if outcome == 'failure' then
      local by_count = c.cfail >= failure_threshold
      local by_rate = failure_rate ~= nil and c.req >= minimum_calls and c.fail >= failure_rate * c.req
      if by_count or by_rate then
        transit(c, 'open', at)
      end
    end
  elseif c.state == 'half-open' then
    if outcome == 'failure' then
      transit(c, 'open', at)
    elseif c.csucc >= success_threshold then
      transit(c, 'closed', at)
    end
  end
end

-- Carries out what is due at or before now, in time order: the oldest
-- expired probe (a failure at its lease end: half-open becomes open), an
-- open timeout that has passed (half-open, at now), then drops every
-- permit whose lease has ended (they are of older generations or closed
-- ones, which count nothing). Later probes of a generation that ended are
-- dropped with the slots (transit deletes them).
local function expire(c)
  if c.state == 'half-open' then
    local first = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
    if first[1] and tonumber(first[2]) <= now then
      count(c, 'failure', tonumber(first[2]))
    end
  end
  if c.state == 'open' and c.open_until <= now then
    transit(c, 'half-open', now)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  if c.state == 'half-open' then
    redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  end
end

-- Stores the key, keeps it (and its permits) at least as long as its open
-- timeout, its window and its leases run, and an idle time after, then
-- publishes its transitions.
local function save(c)
  redis.call('HSET', KEYS[3], 'State', c.state, 'Gen', c.gen, 'Req', c.req, 'Succ', c.succ, 'Fail', c.fail,
    'Excl', c.excl, 'CSucc', c.csucc, 'CFail', c.cfail, 'OpenUntil', c.open_until, 'WindowEnd', c.window_end)
  local keep_until = now
  if c.state == 'open' then
    keep_until = math.max(keep_until, c.open_until)
  end
  keep_until = math.max(keep_until, c.window_end)
  local last = redis.call('ZRANGE', KEYS[4], -1, -1, 'WITHSCORES')
  if last[1] then
    keep_until = math.max(keep_until, tonumber(last[2]))
  end
  local at_ms = math.floor(keep_until / 1000) + idle_ms
  for i = 3, 5 do
    redis.call('PEXPIREAT', KEYS[i], at_ms)
  end
  if channel ~= '' then
    for _, tr in ipairs(transitions) do
      redis.call('PUBLISH', channel,
        cjson.encode({Key = bkey, From = tr[1], To = tr[2], Generation = tr[3]}))
    end
  end
end

local function oldest_probe_end()
  local first = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
  if first[1] then
    return tonumber(first[2])
  end
  return now
end

local c = load()

if op == 'allow' then
  if not c then
    c = fresh()
  end
  expire(c)
  roll_window(c, now)
  if c.state == 'open' then
    save(c)
    return {'open', c.open_until - now, 0, 0, transitions}
  end
  if c.state == 'half-open' and redis.call('ZCARD', KEYS[5]) >= max_probes then
    save(c)
    return {'full', math.max(oldest_probe_end() - now, 0), 0, 0, transitions}
  end
  local id = redis.call('INCR', KEYS[2])
  local lease_end = now + permit_ttl
  redis.call('ZADD', KEYS[4], lease_end, c.gen .. ':' .. id)
  if c.state == 'half-open' then
    redis.call('ZADD', KEYS[5], lease_end, id)
  end
  save(c)
  return {'permit', c.gen, id, permit_ttl, transitions}
elseif op == 'record' then
  if not c then
    return {'unknown', 0, 0, 0, transitions}
  end
  local gen, id, outcome = tonumber(ARGV[5]), ARGV[6], ARGV[7]
  expire(c)
  local reply
  if redis.call('ZREM', KEYS[4], ARGV[5] .. ':' .. id) == 0 then
    reply = {'unknown', 0, 0, 0}
  elseif gen ~= c.gen then
    roll_window(c, now)
    reply = {'stale', gen, c.gen, 0}
  else
    if c.state == 'half-open' then
      redis.call('ZREM', KEYS[5], id)
    end
    roll_window(c, now)
    count(c, outcome, now)
    reply = {'counted', 0, 0, 0}
  end
  save(c)
  reply[5] = transitions
  return reply
elseif op == 'reset' or op == 'close' then
  if not c then
    return {'unchanged', 0, 0, 0, transitions}
  end
  expire(c)
  local changed = 0
  if op == 'reset' or c.state ~= 'closed' then
    transit(c, 'closed', now)
    changed = 1
  end
  save(c)
  return {changed == 1 and 'changed' or 'unchanged', 0, 0, 0, transitions}
elseif op == 'open' then
  if not c then
    c = fresh()
  end
  expire(c)
  transit(c, 'open', now)
  save(c)
  return {'changed', 0, 0, 0, transitions}
elseif op == 'show' then
  if not c then
    return {'none', 0, 0, 0, transitions}
  end
  expire(c)
  save(c)
  local open_remaining = -1
  if c.state == 'open' then
    open_remaining = c.open_until - now
  end
  -- An ended window shows no counts; it is rolled (a new window started)
  -- by the next allow or record, as the core does.
  local n = {c.req, c.succ, c.fail, c.excl, c.csucc, c.cfail}
  if c.state == 'closed' and c.window_end > 0 and now >= c.window_end then
    n = {0, 0, 0, 0, 0, 0}
  end
  n[7] = redis.call('ZCARD', KEYS[5])
  n[8] = redis.call('ZCARD', KEYS[4])
  return {'snapshot', c.state, c.gen, open_remaining, transitions, n}
end
return redis.error_reply('unknown breaker op ' .. tostring(op))
