-- Projection state of one projection (docs.lua is prepended). All keys share the projection's
-- hash tag P: P lease:<v> ("token:owner", with PX: who holds it now), P token:<v> (the last
-- fencing token given), P holder:<v> ("token:owner" of that token, no expiry), P cp:<v>
-- (checkpoint), P dl:<v> (dead letters: position -> JSON), P active (active version), and the
-- view's documents under P v<v>: (see docs.lua).
-- ARGV: 1 operation, 2 token ('' for acquire and drop), 3 owner, then the operation's own.
--   acquire  KEYS lease, token, holder   ARGV ttl ms                  -> {'held'} | {'ok', token}
--   renew    KEYS lease, token, holder   ARGV ttl ms                  -> 'ok' | 'lost'
--   release  KEYS lease, token, holder                                -> 'ok'
--   activate KEYS token, holder, active  ARGV version                 -> 'ok' | 'lost'
--   commit   KEYS token, holder, cp, dl, the view's ids, docs, entries, 3 keys per index field
--            ARGV checkpoint ('' keeps it), parked count, (position, JSON) each, replayed
--            count, positions, index field count, names, writes (see docs_write) -> 'ok' | 'lost'
--   drop     KEYS token, holder, then every key of the version's state to remove (the lease too) -> 'ok'
-- Fencing: every write is refused, before it writes anything, unless its (token, owner) is
-- the last one given; a drop gives a new token to no one, so nothing held before it writes
-- again.
local op, token, owner = ARGV[1], ARGV[2], ARGV[3]
local function holds(token_key, holder_key)
  return redis.call('GET', KEYS[token_key]) == token
    and redis.call('GET', KEYS[holder_key]) == token .. ':' .. owner
end

if op == 'acquire' then
  local held = redis.call('GET', KEYS[1])
  if held and string.match(held, '^%d+:(.*)$') ~= owner then return {'held'} end
  local given = redis.call('INCR', KEYS[2])
  local value = string.format('%d:', given) .. owner
  redis.call('SET', KEYS[1], value, 'PX', ARGV[4])
  redis.call('SET', KEYS[3], value)
  return {'ok', given}
elseif op == 'renew' then
  -- Renewable while no later token was given, even if the lease lapsed in the meantime.
  if not holds(2, 3) then return 'lost' end
  redis.call('SET', KEYS[1], token .. ':' .. owner, 'PX', ARGV[4])
  return 'ok'
elseif op == 'release' then
  if redis.call('GET', KEYS[1]) == token .. ':' .. owner then redis.call('DEL', KEYS[1]) end
  return 'ok'
elseif op == 'activate' then
  if not holds(1, 2) then return 'lost' end
  local active = tonumber(redis.call('GET', KEYS[3])) or 0
  if tonumber(ARGV[4]) > active then redis.call('SET', KEYS[3], ARGV[4]) end
  return 'ok'
elseif op == 'commit' then
  if not holds(1, 2) then return 'lost' end
  local a = 5
  local parked = tonumber(ARGV[a])
  for i = 1, parked do
    redis.call('HSET', KEYS[4], ARGV[a + 2 * i - 1], ARGV[a + 2 * i])
  end
  a = a + 2 * parked + 1
  local replayed = tonumber(ARGV[a])
  for i = 1, replayed do redis.call('HDEL', KEYS[4], ARGV[a + i]) end
  a = a + replayed + 1
  local c
  c, a = docs_collection(a, 5)
  docs_write(c, a)
  if ARGV[4] ~= '' then redis.call('SET', KEYS[3], ARGV[4]) end
  return 'ok'
elseif op == 'drop' then
  redis.call('INCR', KEYS[1])
  redis.call('DEL', KEYS[2])
  for i = 3, #KEYS do redis.call('UNLINK', KEYS[i]) end
  return 'ok'
end
return redis.error_reply('unknown projection operation ' .. op)
