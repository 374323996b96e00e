-- Library of read-model documents, prepended to the scripts that read or write them.
-- A collection's keys all start with its hash tag T:
--   T ids      sorted set of every id, scored by expiry (ms; +inf when none)
--   T docs     hash id -> the JSON document
--   T entries  hash id -> the document's index entries: per indexed field with an entry,
--              `field NUL mark NUL`, where mark is 'n' | 's:<value>' | 'o'
--   T x:<f>    ids whose field f is a number, scored by it
--   T xs:<f>   `<value>\0<id>` for ids whose field f is a string (score 0, ordered by value)
--   T xo:<f>   ids whose field f holds anything else but null (booleans, objects, arrays)
-- A document whose expiry has passed is gone to every reader; writes and counts remove a
-- bounded number of such documents per call, the `purge` operation any number. Every key is
-- passed in KEYS by the caller: `c` describes a collection's keys there — c.ids, c.docs,
-- c.entries (positions of those keys) and c.ix (position of the first index key; field j's x,
-- xs, xo keys follow at c.ix + 3 * (j - 1)), c.fields (j -> field name), c.slot (field name ->
-- j).

-- The server's clock in ms.
local function docs_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Whether id is a live document (its expiry is in the future).
local function docs_live(c, id, now)
  local score = redis.call('ZSCORE', KEYS[c.ids], id)
  return score ~= false and score ~= nil and tonumber(score) > now
end

local function docs_unindex(c, id)
  local old = redis.call('HGET', KEYS[c.entries], id)
  if not old then return end
  for field, mark in string.gmatch(old, '([^%z]*)%z([^%z]*)%z') do
    local j = c.slot[field]
    -- An index no longer declared has no keys here; its stale entries are never queried.
    if j then
      local base = c.ix + 3 * (j - 1)
      if mark == 'n' then
        redis.call('ZREM', KEYS[base], id)
      elseif mark == 'o' then
        redis.call('ZREM', KEYS[base + 2], id)
      else
        redis.call('ZREM', KEYS[base + 1], string.sub(mark, 3) .. '\0' .. id)
      end
    end
  end
  redis.call('HDEL', KEYS[c.entries], id)
end

-- Writes a document. `entries[j]` is {kind, value} for index field j: kind 'n' (number),
-- 's' (string), 'o' (other) or '' (missing / null). ttl_ms 0: no expiry.
local function docs_put(c, id, json, ttl_ms, entries, now)
  docs_unindex(c, id)
  redis.call('HSET', KEYS[c.docs], id, json)
  if ttl_ms > 0 then
    redis.call('ZADD', KEYS[c.ids], now + ttl_ms, id)
  else
    redis.call('ZADD', KEYS[c.ids], '+inf', id)
  end
  local marks = {}
  for j = 1, #c.fields do
    local kind, value = entries[j][1], entries[j][2]
    local base = c.ix + 3 * (j - 1)
    if kind == 'n' then
      redis.call('ZADD', KEYS[base], value, id)
      marks[#marks + 1] = c.fields[j] .. '\0n\0'
    elseif kind == 's' then
      redis.call('ZADD', KEYS[base + 1], 0, value .. '\0' .. id)
      marks[#marks + 1] = c.fields[j] .. '\0s:' .. value .. '\0'
    elseif kind == 'o' then
      redis.call('ZADD', KEYS[base + 2], 0, id)
      marks[#marks + 1] = c.fields[j] .. '\0o\0'
    end
  end
  if #marks > 0 then redis.call('HSET', KEYS[c.entries], id, table.concat(marks)) end
end

-- Removes a document; 1 if a live one existed.
local function docs_remove(c, id, now)
  local found = docs_live(c, id, now) and 1 or 0
  docs_unindex(c, id)
  redis.call('ZREM', KEYS[c.ids], id)
  redis.call('HDEL', KEYS[c.docs], id)
  return found
end

-- Removes up to `most` documents whose expiry has passed; how many.
local function docs_purge(c, now, most)
  local ids = redis.call('ZRANGEBYSCORE', KEYS[c.ids], '-inf', string.format('(%d', now), 'LIMIT', 0, most)
  for _, id in ipairs(ids) do docs_remove(c, id, now) end
  return #ids
end

-- Appends id, JSON pairs of `ids` to `out` (one HMGET per thousand ids).
local function docs_fetch(c, ids, out)
  for from = 1, #ids, 1000 do
    local to = math.min(from + 999, #ids)
    local docs = redis.call('HMGET', KEYS[c.docs], unpack(ids, from, to))
    for i = from, to do
      out[#out + 1] = ids[i]
      out[#out + 1] = docs[i - from + 1]
    end
  end
  return out
end

-- Reads a collection descriptor from ARGV at `a`: number of index fields, then the names.
-- Its keys start at KEYS[k]: ids, docs, entries, then three per index field. Returns the
-- descriptor and the next ARGV position.
local function docs_collection(a, k)
  local n = tonumber(ARGV[a])
  local c = {ids = k, docs = k + 1, entries = k + 2, ix = k + 3, fields = {}, slot = {}}
  for j = 1, n do
    c.fields[j] = ARGV[a + j]
    c.slot[ARGV[a + j]] = j
  end
  return c, a + n + 1
end

-- Applies the document writes described in ARGV from `a` (see read_model.lua's `write`), then
-- removes a few expired documents, so that a collection only written to does not keep them.
-- Returns how many removals found a live document, and the next ARGV position.
local function docs_write(c, a)
  local count = tonumber(ARGV[a])
  a = a + 1
  local now = docs_now()
  local removed = 0
  for _ = 1, count do
    local op, id = ARGV[a], ARGV[a + 1]
    if op == 'put' then
      local json, ttl = ARGV[a + 2], tonumber(ARGV[a + 3])
      local entries = {}
      a = a + 4
      for j = 1, #c.fields do
        entries[j] = {ARGV[a], ARGV[a + 1]}
        a = a + 2
      end
      docs_put(c, id, json, ttl, entries, now)
    else
      removed = removed + docs_remove(c, id, now)
      a = a + 2
    end
  end
  docs_purge(c, now, 16)
  return removed, a
end
