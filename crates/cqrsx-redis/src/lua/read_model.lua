-- Read-model operations that write, on one collection (docs.lua and docs_write.lua are
-- prepended; see docs.lua for the layout; reads are query.lua). KEYS: the whole collection —
-- ids, docs, entries, exp, then 3 per index field (x, xs, xo). ARGV: 1 the operation, 2 number
-- of index fields, then their names, then the operation's arguments:
--   write, (count, then per document: 'put', id, json, ttl ms, (kind, value) per index field
--          | 'del', id)                              -> how many deletes found a live document
--   count, mode ('all' | 'score' | 'lex'), field slot, min, max
--                                                    -> live count
--   purge, most                                      -> how many expired documents were removed
-- Writes and counts remove a bounded number of expired documents per call, purge any number.
local op = ARGV[1]
local c, a = docs_collection(2, 1)

if op == 'write' then
  return docs_write(c, a)
end

local now = docs_now()
if op == 'purge' then
  return docs_purge(c, now, tonumber(ARGV[a]))
elseif op == 'count' then
  local mode, j, min, max = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3]
  local xk = c.ix + 3 * (j - 1)
  -- With no expired document left, an index counts in O(log n).
  docs_purge(c, now, 1000)
  local expired = redis.call('ZCOUNT', KEYS[c.exp], '-inf', string.format('(%d', now))
  if mode == 'all' then
    return redis.call('ZCARD', KEYS[c.ids]) - expired
  elseif expired == 0 and mode == 'score' then
    return redis.call('ZCOUNT', KEYS[xk], min, max)
  elseif expired == 0 and mode == 'lex' then
    return redis.call('ZLEXCOUNT', KEYS[xk + 1], min, max)
  end
  local clock = function() return now end
  local n = 0
  for _, id in ipairs(docs_select(c, mode, xk, min, max, clock)) do
    if docs_live(redis.call('ZSCORE', KEYS[c.ids], id), clock) then n = n + 1 end
  end
  return n
end
return redis.error_reply('unknown read-model operation ' .. op)
