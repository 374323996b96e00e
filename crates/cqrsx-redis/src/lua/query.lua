-- Read-model reads on one collection (docs.lua is prepended; see its header for the layout;
-- the top N by a numeric index is top.lua).
-- They take only what they use, whatever the number of index fields (each key and argument
-- costs the call time): KEYS ids, docs, exp, then the x, xs, xo keys of the one field they
-- select or sort by; ARGV 1 the operation, then its arguments:
--   get, id                                          -> the JSON | nil
--   ids, mode, min, max, most inline                 -> {'docs', id, json, ...} for at most
--                                                       `most` candidates, else {'ids', id, ...}
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
end
return redis.error_reply('unknown read-model operation ' .. op)
