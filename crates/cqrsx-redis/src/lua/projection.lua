-- Projection state of one projection (docs.lua is prepended). All keys share the projection's
-- hash tag P: P lease:<v> ("token:owner", with PX), P token:<v> (fencing tokens given),
-- P cp:<v> (checkpoint), P dl:<v> (dead letters: position -> JSON), P active (active
-- version), and the view's documents under P v<v>: (see docs.lua).
-- ARGV: 1 operation, then its arguments.
--   acquire  KEYS lease, token   ARGV owner, ttl ms      -> {'held'} | {'ok', token}
--   renew    KEYS lease, token   ARGV token, ttl ms, owner -> 'ok' | 'lost'
--   release  KEYS lease, token   ARGV token              -> 'ok'
--   activate KEYS token, active  ARGV token, version     -> 'ok' | 'lost'
--   commit   KEYS token, cp, dl, the view's ids, docs, entries, 3 keys per index field
--            ARGV token, checkpoint ('' keeps it), parked count, (position, JSON) each,
--            replayed count, positions, index field count, names, writes (see docs_write)
--                                                        -> 'ok' | 'lost'
-- A commit whose token is not the last one given is refused before any write: fencing.
local op = ARGV[1]
local function holds(token_key, token)
  return redis.call('GET', KEYS[token_key]) == token
end

if op == 'acquire' then
  local held = redis.call('GET', KEYS[1])
  if held and string.match(held, '^%d+:(.*)$') ~= ARGV[2] then return {'held'} end
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], string.format('%d:', token) .. ARGV[2], 'PX', ARGV[3])
  return {'ok', token}
elseif op == 'renew' then
  -- Renewable while no larger token was given, even if the lease lapsed in the meantime.
  if not holds(2, ARGV[2]) then return 'lost' end
  redis.call('SET', KEYS[1], ARGV[2] .. ':' .. ARGV[4], 'PX', ARGV[3])
  return 'ok'
elseif op == 'release' then
  local held = redis.call('GET', KEYS[1])
  if held and string.match(held, '^(%d+):') == ARGV[2] then redis.call('DEL', KEYS[1]) end
  return 'ok'
elseif op == 'activate' then
  if not holds(1, ARGV[2]) then return 'lost' end
  local active = tonumber(redis.call('GET', KEYS[2])) or 0
  if tonumber(ARGV[3]) > active then redis.call('SET', KEYS[2], ARGV[3]) end
  return 'ok'
elseif op == 'commit' then
  if not holds(1, ARGV[2]) then return 'lost' end
  local a = 4
  local parked = tonumber(ARGV[a])
  for i = 1, parked do
    redis.call('HSET', KEYS[3], ARGV[a + 2 * i - 1], ARGV[a + 2 * i])
  end
  a = a + 2 * parked + 1
  local replayed = tonumber(ARGV[a])
  for i = 1, replayed do redis.call('HDEL', KEYS[3], ARGV[a + i]) end
  a = a + replayed + 1
  local c
  c, a = docs_collection(a, 4)
  docs_write(c, a)
  if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3]) end
  return 'ok'
end
return redis.error_reply('unknown projection operation ' .. op)
