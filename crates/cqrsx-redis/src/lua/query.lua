-- Read-model operations on one collection (docs.lua is prepended; see its header for the
-- layout). ARGV[1] is the operation.
-- Operations that write (write, count, purge) take the whole collection: KEYS ids, docs,
-- entries, then 3 per index field (x, xs, xo); ARGV 2 number of index fields, then their
-- names, then the operation's arguments:
--   write, (count, then per document: 'put', id, json, ttl ms, (kind, value) per index field
--          | 'del', id)                              -> how many deletes found a live document
--   count, mode ('all' | 'score' | 'lex'), field slot, min, max
--                                                    -> live count
--   purge, most                                      -> how many expired documents were removed
-- Reads (get, ids, top) take only what they use, whatever the number of index fields (each
-- key and argument costs the call time): KEYS ids, docs, then the x, xs, xo keys of the one
-- field they select or sort by; ARGV the operation's arguments from 2:
--   get, id                                          -> the JSON | nil
--   ids, mode, min, max, most inline                 -> {'docs', id, json, ...} for at most
--                                                       `most` candidates, else {'ids', id, ...}
--   top, 'asc' | 'desc', min, max, how many, bounded (1: a range on the field)
--                                                    -> {'fallback'} | {'ok', id, json, ...}
-- Reads never return an expired document; writes and counts remove a bounded number of them
-- per call, purge any number.
local op = ARGV[1]
local c, a
if op == 'get' or op == 'ids' or op == 'top' then
  -- (No entries key, field names or slots: a read writes nothing and names its field's keys.)
  c, a = {ids = 1, docs = 2, ix = 3}, 2
else
  c, a = docs_collection(2, 1)
end

if op == 'write' then
  return docs_write(c, a)
end

-- The server's clock, read once, and only when an expiry must be compared with it.
local clock
local function now()
  clock = clock or docs_now()
  return clock
end

-- Whether a document whose expiry score is `score` (false: no such document) is live.
local function live_score(score)
  return score ~= false and score ~= nil and (score == 'inf' or tonumber(score) > now())
end

local function live(id)
  return live_score(redis.call('ZSCORE', KEYS[c.ids], id))
end

if op == 'get' then
  local id = ARGV[a]
  if not live(id) then return nil end
  return redis.call('HGET', KEYS[c.docs], id)
elseif op == 'purge' then
  return docs_purge(c, now(), tonumber(ARGV[a]))
end

-- Candidate ids of a selection: every id, a score range of a numeric index, or a value range
-- of a string index (the field's indexes at KEYS[xk], KEYS[xk + 1]).
local function select(mode, xk, min, max)
  if mode == 'score' then
    return redis.call('ZRANGEBYSCORE', KEYS[xk], min, max)
  elseif mode == 'lex' then
    local ids = {}
    for _, m in ipairs(redis.call('ZRANGEBYLEX', KEYS[xk + 1], min, max)) do
      ids[#ids + 1] = string.match(m, '%z(.*)$')
    end
    return ids
  end
  return redis.call('ZRANGEBYSCORE', KEYS[c.ids], string.format('(%d', now()), '+inf')
end

-- Whether some document has expired (and not yet been purged): only then must each indexed
-- id be checked for being live, one ZSCORE each. The soonest expiry tells, and when no
-- document has one the clock is not read.
local function some_expired()
  local soonest = redis.call('ZRANGE', KEYS[c.ids], 0, 0, 'WITHSCORES')
  return soonest[2] ~= nil and not live_score(soonest[2])
end

if op == 'ids' then
  local mode, min, max, most = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  local check = mode ~= 'all' and some_expired()
  local found = {}
  for _, id in ipairs(select(mode, c.ix, min, max)) do
    if not check or live(id) then found[#found + 1] = id end
  end
  if #found > most then
    table.insert(found, 1, 'ids')
    return found
  end
  return docs_fetch(c, found, {'docs'})
elseif op == 'count' then
  local mode, j, min, max = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3]
  local xk = c.ix + 3 * (j - 1)
  -- With no expired document left, an index counts in O(log n).
  docs_purge(c, now(), 1000)
  local expired = redis.call('ZCOUNT', KEYS[c.ids], '-inf', string.format('(%d', now()))
  if mode == 'all' then
    return redis.call('ZCARD', KEYS[c.ids]) - expired
  elseif expired == 0 and mode == 'score' then
    return redis.call('ZCOUNT', KEYS[xk], min, max)
  elseif expired == 0 and mode == 'lex' then
    return redis.call('ZLEXCOUNT', KEYS[xk + 1], min, max)
  end
  local n = 0
  for _, id in ipairs(select(mode, xk, min, max)) do
    if live(id) then n = n + 1 end
  end
  return n
elseif op == 'top' then
  local dir, min, max = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local need, bounded = tonumber(ARGV[a + 3]), ARGV[a + 4] == '1'
  local xk = c.ix
  -- Only numbers in the field: strings and other kinds would sort around them.
  -- (Redis deletes an empty sorted set, so one EXISTS asks both indexes.)
  if redis.call('EXISTS', KEYS[xk + 1], KEYS[xk + 2]) > 0 then
    return {'fallback'}
  end
  -- Whether some documents lack a number in the field (two ZCARDs, asked only when it matters).
  local function some_without()
    return redis.call('ZCARD', KEYS[c.ids]) > redis.call('ZCARD', KEYS[xk])
  end
  -- Ascending, documents without the field come first (unless a range on it excludes them).
  if dir == 'asc' and not bounded and some_without() then return {'fallback'} end
  -- Ids of the range in the query's order, from `pos`; options such as WITHSCORES go last.
  local function range(pos, size, ...)
    if dir == 'asc' then
      return redis.call('ZRANGEBYSCORE', KEYS[xk], min, max, 'LIMIT', pos, size, ...)
    end
    return redis.call('ZREVRANGEBYSCORE', KEYS[xk], max, min, 'LIMIT', pos, size, ...)
  end
  -- Nothing expired: the first `need` ids answer, unless the next one ties with the last (the
  -- client breaks ties by id, so a tie at the edge needs every tied id). Ids alone and the two
  -- scores at the edge cost the server less than every score of the page (Redis formats each
  -- score as text). Returns nil when the chunked scan must answer.
  local function first_ids()
    local ids = range(0, need + 1)
    if #ids <= need then return ids end
    local edge = range(need - 1, 2, 'WITHSCORES')
    if edge[2] == edge[4] then return nil end
    ids[need + 1] = nil
    return ids
  end
  -- Chunks start just past what is needed (expired ids and ties take more) and double.
  local function scan(check)
    local ids, taken, last, pos, size = {}, 0, nil, 0, need + 1
    while true do
      local chunk = range(pos, size, 'WITHSCORES')
      if #chunk == 0 then return ids end
      pos = pos + #chunk / 2
      size = math.min(2 * size, 1024)
      for i = 1, #chunk, 2 do
        local id, score = chunk[i], chunk[i + 1]
        -- Past what is needed, only ties of the last score still count (ids break ties).
        if taken >= need and score ~= last then return ids end
        if not check or live(id) then
          ids[#ids + 1] = id
          taken = taken + 1
          last = score
        end
      end
    end
  end
  local check = some_expired()
  local ids = (not check and need <= 1000 and first_ids()) or scan(check)
  local taken = #ids
  -- Descending, documents without the field come last: needed when the numbers run out.
  if dir == 'desc' and not bounded and taken < need and some_without() then return {'fallback'} end
  return docs_fetch(c, ids, {'ok'})
end
return redis.error_reply('unknown read-model operation ' .. op)
