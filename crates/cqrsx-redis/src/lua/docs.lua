-- Library of read-model document writes, prepended to the scripts that write documents.
-- A collection's keys all start with its hash tag T:
--   T d:<id>   the JSON document (with PX when it expires)
--   T ids      sorted set of every id, scored by expiry (ms; +inf when none)
--   T x:<f>    ids whose field f is a number, scored by it
--   T xs:<f>   `<value>\0<id>` for ids whose field f is a string (score 0, ordered by value)
--   T xo:<f>   ids whose field f holds anything else but null (booleans, objects, arrays)
--   T e:<id>   which index entries the document has (field -> 'n' | 's:<value>' | 'o')
-- Every key is passed in KEYS by the caller: `c` describes a collection's keys there —
-- c.ids (position of T ids) and c.ix (position of the first index key; field j's x, xs, xo
-- keys follow at c.ix + 3 * (j - 1)), c.fields (j -> field name), c.slot (field name -> j) —
-- and each document write names the positions of its d:<id> and e:<id> keys.
local function docs_unindex(c, e_key, id)
  local old = redis.call('HGETALL', KEYS[e_key])
  for i = 1, #old, 2 do
    local j = c.slot[old[i]]
    -- An index no longer declared has no keys here; its stale entries are never queried.
    if j then
      local base = c.ix + 3 * (j - 1)
      local v = old[i + 1]
      if v == 'n' then
        redis.call('ZREM', KEYS[base], id)
      elseif v == 'o' then
        redis.call('ZREM', KEYS[base + 2], id)
      else
        redis.call('ZREM', KEYS[base + 1], string.sub(v, 3) .. '\0' .. id)
      end
    end
  end
  redis.call('DEL', KEYS[e_key])
end

-- Writes a document. `entries[j]` is {kind, value} for index field j: kind 'n' (number),
-- 's' (string), 'o' (other) or '' (missing / null). ttl_ms 0: no expiry.
local function docs_put(c, d_key, e_key, id, json, ttl_ms, entries, now_ms)
  docs_unindex(c, e_key, id)
  if ttl_ms > 0 then
    redis.call('SET', KEYS[d_key], json, 'PX', ttl_ms)
    redis.call('ZADD', KEYS[c.ids], now_ms + ttl_ms, id)
  else
    redis.call('SET', KEYS[d_key], json)
    redis.call('ZADD', KEYS[c.ids], '+inf', id)
  end
  local marks = {}
  for j = 1, #c.fields do
    local kind, value = entries[j][1], entries[j][2]
    local base = c.ix + 3 * (j - 1)
    if kind == 'n' then
      redis.call('ZADD', KEYS[base], value, id)
      marks[#marks + 1] = c.fields[j]
      marks[#marks + 1] = 'n'
    elseif kind == 's' then
      redis.call('ZADD', KEYS[base + 1], 0, value .. '\0' .. id)
      marks[#marks + 1] = c.fields[j]
      marks[#marks + 1] = 's:' .. value
    elseif kind == 'o' then
      redis.call('ZADD', KEYS[base + 2], 0, id)
      marks[#marks + 1] = c.fields[j]
      marks[#marks + 1] = 'o'
    end
  end
  if #marks > 0 then
    redis.call('HSET', KEYS[e_key], unpack(marks))
    if ttl_ms > 0 then redis.call('PEXPIRE', KEYS[e_key], ttl_ms) end
  end
end

-- Removes a document; 1 if a live one existed.
local function docs_remove(c, d_key, e_key, id)
  docs_unindex(c, e_key, id)
  redis.call('ZREM', KEYS[c.ids], id)
  return redis.call('DEL', KEYS[d_key])
end

-- The server's clock in ms.
local function docs_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Reads a collection descriptor from ARGV at `a`: number of index fields, then the names.
-- Returns it and the next ARGV position. ids_key and ix are KEYS positions.
local function docs_collection(a, ids_key, ix)
  local n = tonumber(ARGV[a])
  local c = {ids = ids_key, ix = ix, fields = {}, slot = {}}
  for j = 1, n do
    c.fields[j] = ARGV[a + j]
    c.slot[ARGV[a + j]] = j
  end
  return c, a + n + 1
end

-- Applies the document writes described in ARGV from `a` (see read_model.lua's `write`);
-- d/e keys of document i are at KEYS[dk + 2(i - 1)] and the next. Returns how many removals
-- found a live document, and the next ARGV position.
local function docs_write(c, a, dk)
  local count = tonumber(ARGV[a])
  a = a + 1
  local now = docs_now()
  local removed = 0
  for i = 1, count do
    local d_key, e_key = dk + 2 * (i - 1), dk + 2 * (i - 1) + 1
    local op, id = ARGV[a], ARGV[a + 1]
    if op == 'put' then
      local json, ttl = ARGV[a + 2], tonumber(ARGV[a + 3])
      local entries = {}
      a = a + 4
      for j = 1, #c.fields do
        entries[j] = {ARGV[a], ARGV[a + 1]}
        a = a + 2
      end
      docs_put(c, d_key, e_key, id, json, ttl, entries, now)
    else
      removed = removed + docs_remove(c, d_key, e_key, id)
      a = a + 2
    end
  end
  return removed, a
end
