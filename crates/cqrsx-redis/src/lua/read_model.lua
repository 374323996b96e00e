-- Read-model documents of one collection; every key starts with the collection's hash tag T.
--   T d:<id>  the JSON document (with PX when it expires)
--   T ids     sorted set of every id
--   T x:<f>   numeric index of field f (score = value, member = id)
--   T xs:<f>  string index of field f (score 0, member = value .. "\0" .. id)
--   T e:<id>  which index entries the document has, so a rewrite removes the old ones
-- KEYS: 1 T ids. ARGV: 1 T, 2 operation, then its arguments.
--   save, ttl ms (0 = none), count, then per document: id, json, index count, then per index:
--     field, kind ('n' | 's'), value          -> 'ok'
--   delete, count, ids...                     -> how many existed
--   find, mode ('all' | 'score' | 'lex'), field, min, max
--                                             -> {id, json, ...} (expired entries are cleaned)
local T = ARGV[1]
local op = ARGV[2]
local function unindex(id)
  local old = redis.call('HGETALL', T .. 'e:' .. id)
  for j = 1, #old, 2 do
    local v = old[j + 1]
    if v == 'n' then
      redis.call('ZREM', T .. 'x:' .. old[j], id)
    else
      redis.call('ZREM', T .. 'xs:' .. old[j], string.sub(v, 3) .. '\0' .. id)
    end
  end
  redis.call('DEL', T .. 'e:' .. id)
end
local function remove(id)
  unindex(id)
  redis.call('ZREM', KEYS[1], id)
  return redis.call('DEL', T .. 'd:' .. id)
end
if op == 'save' then
  local ttl = tonumber(ARGV[3])
  local n = tonumber(ARGV[4])
  local a = 5
  for _ = 1, n do
    local id = ARGV[a]
    unindex(id)
    if ttl > 0 then
      redis.call('SET', T .. 'd:' .. id, ARGV[a + 1], 'PX', ttl)
    else
      redis.call('SET', T .. 'd:' .. id, ARGV[a + 1])
    end
    redis.call('ZADD', KEYS[1], 0, id)
    local ni = tonumber(ARGV[a + 2])
    a = a + 3
    for _ = 1, ni do
      local field, kind, value = ARGV[a], ARGV[a + 1], ARGV[a + 2]
      if kind == 'n' then
        redis.call('ZADD', T .. 'x:' .. field, value, id)
        redis.call('HSET', T .. 'e:' .. id, field, 'n')
      else
        redis.call('ZADD', T .. 'xs:' .. field, 0, value .. '\0' .. id)
        redis.call('HSET', T .. 'e:' .. id, field, 's:' .. value)
      end
      a = a + 3
    end
  end
  return 'ok'
elseif op == 'delete' then
  local n = tonumber(ARGV[3])
  local existed = 0
  for i = 1, n do existed = existed + remove(ARGV[3 + i]) end
  return existed
elseif op == 'find' then
  local mode, field, min, max = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local ids
  if mode == 'score' then
    ids = redis.call('ZRANGEBYSCORE', T .. 'x:' .. field, min, max)
  elseif mode == 'lex' then
    ids = {}
    for _, m in ipairs(redis.call('ZRANGEBYLEX', T .. 'xs:' .. field, min, max)) do
      ids[#ids + 1] = string.match(m, '%z(.*)$')
    end
  else
    ids = redis.call('ZRANGE', KEYS[1], 0, -1)
  end
  local out = {}
  local seen = {}
  for _, id in ipairs(ids) do
    if not seen[id] then
      seen[id] = true
      local doc = redis.call('GET', T .. 'd:' .. id)
      if doc then
        out[#out + 1] = id
        out[#out + 1] = doc
      else
        remove(id)
      end
    end
  end
  return out
end
return redis.error_reply('unknown read-model operation ' .. op)
