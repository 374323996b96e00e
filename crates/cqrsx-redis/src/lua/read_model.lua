-- Read-model operations on one collection (docs.lua is prepended; see its header for the
-- layout). KEYS: 1 T ids, then 3 per index field (x, xs, xo), then per document written its
-- d:<id> and e:<id>. ARGV: 1 operation, 2 number of index fields, then their names, then the
-- operation's arguments:
--   write, (count, then per document: 'put', id, json, ttl ms, (kind, value) per index field
--          | 'del', id)                              -> how many deletes found a live document
--   ids, mode ('all' | 'score' | 'lex'), field slot, min, max
--                                                    -> {expired seen, live id, ...}
--   count, mode, field slot, min, max                 -> {expired seen, live count}
--   top, field slot, 'asc' | 'desc', min, max, how many, bounded (1: a range on the field)
--                                                    -> {'fallback'} | {'ok', id, ...}
--   expired, most                                     -> ids whose expiry passed
local op = ARGV[1]
local c, a = docs_collection(2, 1, 2)

if op == 'write' then
  local removed = docs_write(c, a, c.ix + 3 * #c.fields)
  return removed
end

local now = docs_now()
local function live(id)
  local score = redis.call('ZSCORE', KEYS[c.ids], id)
  return score and tonumber(score) > now
end

-- Candidate ids of a selection: every id, a score range of a numeric index, or a value range
-- of a string index.
local function select(mode, j, min, max)
  if mode == 'score' then
    return redis.call('ZRANGEBYSCORE', KEYS[c.ix + 3 * (j - 1)], min, max)
  elseif mode == 'lex' then
    local ids = {}
    for _, m in ipairs(redis.call('ZRANGEBYLEX', KEYS[c.ix + 3 * (j - 1) + 1], min, max)) do
      ids[#ids + 1] = string.match(m, '%z(.*)$')
    end
    return ids
  end
  return redis.call('ZRANGE', KEYS[c.ids], 0, -1)
end

if op == 'ids' or op == 'count' then
  local mode, j, min, max = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3]
  if op == 'count' and mode == 'all' then
    local total = redis.call('ZCARD', KEYS[c.ids])
    local alive = redis.call('ZCOUNT', KEYS[c.ids], string.format('(%d', now), '+inf')
    return {total - alive, alive}
  end
  local out, expired, seen = {0}, 0, {}
  local n = 0
  for _, id in ipairs(select(mode, j, min, max)) do
    if not seen[id] then
      seen[id] = true
      if live(id) then
        n = n + 1
        if op == 'ids' then out[#out + 1] = id end
      else
        expired = expired + 1
      end
    end
  end
  out[1] = expired
  if op == 'count' then return {expired, n} end
  return out
elseif op == 'top' then
  local j, dir, min, max = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local need, bounded = tonumber(ARGV[a + 4]), ARGV[a + 5] == '1'
  local xk = c.ix + 3 * (j - 1)
  -- Only numbers in the field: strings and other kinds would sort around them.
  if redis.call('ZCARD', KEYS[xk + 1]) > 0 or redis.call('ZCARD', KEYS[xk + 2]) > 0 then
    return {'fallback'}
  end
  local all = redis.call('ZCARD', KEYS[c.ids])
  local numeric = redis.call('ZCARD', KEYS[xk])
  -- Ascending, documents without the field come first (unless a range on it excludes them).
  if dir == 'asc' and not bounded and all > numeric then return {'fallback'} end
  local out, taken, last, pos = {'ok'}, 0, nil, 0
  while true do
    local chunk
    if dir == 'asc' then
      chunk = redis.call('ZRANGEBYSCORE', KEYS[xk], min, max, 'WITHSCORES', 'LIMIT', pos, 256)
    else
      chunk = redis.call('ZREVRANGEBYSCORE', KEYS[xk], max, min, 'WITHSCORES', 'LIMIT', pos, 256)
    end
    if #chunk == 0 then break end
    pos = pos + #chunk / 2
    for i = 1, #chunk, 2 do
      local id, score = chunk[i], chunk[i + 1]
      -- Past what is needed, only ties of the last score still count (ids break ties).
      if taken >= need and score ~= last then return out end
      if live(id) then
        out[#out + 1] = id
        taken = taken + 1
        last = score
      end
    end
  end
  -- Descending, documents without the field come last: needed when the numbers run out.
  if dir == 'desc' and not bounded and taken < need and all > numeric then return {'fallback'} end
  return out
elseif op == 'expired' then
  return redis.call('ZRANGEBYSCORE', KEYS[c.ids], '-inf', string.format('(%d', now), 'LIMIT', 0, tonumber(ARGV[a]))
end
return redis.error_reply('unknown read-model operation ' .. op)
