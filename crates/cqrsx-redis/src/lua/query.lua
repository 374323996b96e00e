-- Read-model reads on one collection (docs.lua is prepended; see its header for the layout).
-- They take only what they use, whatever the number of index fields (each key and argument
-- costs the call time): KEYS ids, docs, exp, then the x, xs, xo keys of the one field they
-- select or sort by; ARGV 1 the operation, then its arguments:
--   get, id                                          -> the JSON | nil
--   ids, mode, min, max, most inline                 -> {'docs', id, json, ...} for at most
--                                                       `most` candidates, else {'ids', id, ...}
--   top, 'asc' | 'desc', min, max, how many (n), bounded (1: a range on the field),
--        exact (1: every id tied with the last)      -> {'fallback'}
--                                                     | {'page', id, json, ...}: the first
--                                                       n + 1 in index order (ties not broken)
--                                                     | {'ok', id, json, ...}: the first n and
--                                                       every id tied with the last of them
-- Reads never return an expired document, and write nothing.
local op = ARGV[1]
local c = {ids = 1, docs = 2, exp = 3, ix = 4}

-- The server's clock, read once, and only when an expiry must be compared with it.
local clock
local function now()
  clock = clock or docs_now()
  return clock
end

local function live(id)
  return docs_live(redis.call('ZSCORE', KEYS[c.ids], id), now)
end

-- Whether some document has expired (and not yet been purged): only then must each indexed
-- id be checked for being live, one ZSCORE each. The soonest expiry tells.
local function some_expired()
  local soonest = redis.call('ZRANGE', KEYS[c.exp], 0, 0, 'WITHSCORES')
  return soonest[2] ~= nil and tonumber(soonest[2]) <= now()
end

if op == 'get' then
  local id = ARGV[2]
  if not live(id) then return nil end
  return redis.call('HGET', KEYS[c.docs], id)
elseif op == 'ids' then
  local mode, min, max, most = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
  local check = mode ~= 'all' and some_expired()
  local found = {}
  for _, id in ipairs(docs_select(c, mode, c.ix, min, max, now)) do
    if not check or live(id) then found[#found + 1] = id end
  end
  if #found > most then
    table.insert(found, 1, 'ids')
    return found
  end
  return docs_fetch(c, found, {'docs'})
elseif op == 'top' then
  local dir, min, max = ARGV[2], ARGV[3], ARGV[4]
  local need, bounded, exact = tonumber(ARGV[5]), ARGV[6] == '1', ARGV[7] == '1'
  local xk = c.ix
  -- Only numbers in the field: strings and other kinds would sort around them. Redis deletes
  -- an empty sorted set, so one EXISTS asks both indexes — and, in the same call, whether any
  -- document has an expiry (none: no expiry need be compared).
  local check = false
  if redis.call('EXISTS', KEYS[xk + 1], KEYS[xk + 2], KEYS[c.exp]) > 0 then
    if redis.call('EXISTS', KEYS[xk + 1], KEYS[xk + 2]) > 0 then return {'fallback'} end
    check = some_expired()
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
  -- Nothing expired: the first `need` ids answer, but for ties (the client breaks ties by id,
  -- so a tie at the edge needs every tied id). One more id and document tell the client
  -- whether the last of the page ties with the next: it asks again with `exact` if so. (The
  -- ids alone cost the server less than with their scores, which Redis formats as text, and
  -- an extra document less than a second range call.)
  local ids, tag
  if not check and not exact and need <= 1000 then
    ids, tag = range(0, need + 1), 'page'
  else
    -- Chunks, starting just past what is needed (expired ids and ties take more), and doubling.
    ids, tag = {}, 'ok'
    local taken, last, pos, size, done = 0, nil, 0, need + 1, false
    repeat
      local chunk = range(pos, size, 'WITHSCORES')
      done = #chunk == 0
      pos = pos + #chunk / 2
      size = math.min(2 * size, 1024)
      for i = 1, #chunk, 2 do
        local id, score = chunk[i], chunk[i + 1]
        -- Past what is needed, only ties of the last score still count (ids break ties).
        if taken >= need and score ~= last then
          done = true
          break
        end
        if not check or live(id) then
          ids[#ids + 1] = id
          taken = taken + 1
          last = score
        end
      end
    until done
  end
  -- Descending, documents without the field come last: needed when the numbers run out.
  if dir == 'desc' and not bounded and #ids < need and some_without() then return {'fallback'} end
  return docs_fetch(c, ids, {tag})
end
return redis.error_reply('unknown read-model operation ' .. op)
