-- Library of read-model writes, prepended (after docs.lua, which describes the layout) to the
-- scripts that write documents.

local function docs_unindex(c, id)
  local old = redis.call('HGET', KEYS[c.entries], id)
  if not old then return end
  for field, mark in string.gmatch(old, '([^%z]*)%z([^%z]*)%z') do
    local j = c.slot[field]
    if field == '' then
      redis.call('ZREM', KEYS[c.exp], id)
    -- An index no longer declared has no keys here; its stale entries are never queried.
    elseif j then
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
  local marks = {}
  if ttl_ms > 0 then
    redis.call('ZADD', KEYS[c.ids], now + ttl_ms, id)
    redis.call('ZADD', KEYS[c.exp], now + ttl_ms, id)
    marks[1] = '\0e\0'
  else
    redis.call('ZADD', KEYS[c.ids], '+inf', id)
  end
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
  local found = docs_live(redis.call('ZSCORE', KEYS[c.ids], id), function() return now end)
  docs_unindex(c, id)
  redis.call('ZREM', KEYS[c.ids], id)
  redis.call('HDEL', KEYS[c.docs], id)
  return found and 1 or 0
end

-- Removes up to `most` documents whose expiry has passed; how many.
local function docs_purge(c, now, most)
  local ids = redis.call('ZRANGEBYSCORE', KEYS[c.exp], '-inf', string.format('(%d', now), 'LIMIT', 0, most)
  for _, id in ipairs(ids) do docs_remove(c, id, now) end
  return #ids
end

-- Reads a collection descriptor from ARGV at `a`: number of index fields, then the names.
-- Its keys start at KEYS[k]: ids, docs, entries, exp, then three per index field. Returns the
-- descriptor and the next ARGV position.
local function docs_collection(a, k)
  local n = tonumber(ARGV[a])
  local c = {ids = k, docs = k + 1, entries = k + 2, exp = k + 3, ix = k + 4, fields = {}, slot = {}}
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
