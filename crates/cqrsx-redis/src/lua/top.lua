-- The first n documents of a collection by one numeric indexed field (see docs.lua for the
-- layout). A script of its own, with no library: it is the read-model query users run most,
-- and every function a script defines is made anew on each call, so its common path defines
-- none.
-- KEYS: 1 ids, 2 docs, 3 exp, then the field's 4 x, 5 xs, 6 xo.
-- ARGV: 'asc' | 'desc', min, max (score bounds), n, bounded (1: a range on the field), exact
--       (1: every id tied with the n-th).
-- Reply: {'fallback'} when the index cannot answer (the field holds other kinds than numbers,
--        or documents without it sort inside the result), else {tag, id NUL JSON, ...}:
--   'page' the first n + 1 in index order, ties not broken: the client sees from the last two
--          whether the n-th ties with the next, and only then asks again with `exact`. (One
--          more document costs less than the scores at the edge, which Redis formats as text.)
--   'ok'   the first n and every id tied with the n-th (ids break ties in the client).
-- Expired documents are never returned. Each id and its JSON go as one string: every element
-- of a reply costs the call time (measured: returning the ids apart cost a top 10 about 4 us).
local dir, min, max = ARGV[1], ARGV[2], ARGV[3]
local need, bounded, exact = tonumber(ARGV[4]), ARGV[5] == '1', ARGV[6] == '1'

-- Only numbers in the field: strings and other kinds would sort around them. Redis deletes an
-- empty sorted set, so one EXISTS asks both indexes and whether any document has an expiry.
local now
if redis.call('EXISTS', KEYS[5], KEYS[6], KEYS[3]) > 0 then
  if redis.call('EXISTS', KEYS[5], KEYS[6]) > 0 then return {'fallback'} end
  -- Some documents expire: only if the soonest already has (and is not yet purged) must each
  -- id be checked for being live.
  local soonest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  local t = redis.call('TIME')
  local clock = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if soonest[2] and tonumber(soonest[2]) <= clock then now = clock end
end
-- Ascending, documents without the field come first (unless a range on it excludes them).
if dir == 'asc' and not bounded and redis.call('ZCARD', KEYS[1]) > redis.call('ZCARD', KEYS[4]) then
  return {'fallback'}
end

local ids, tag
if not now and not exact and need <= 1000 then
  if dir == 'asc' then
    ids = redis.call('ZRANGEBYSCORE', KEYS[4], min, max, 'LIMIT', 0, need + 1)
  else
    ids = redis.call('ZREVRANGEBYSCORE', KEYS[4], max, min, 'LIMIT', 0, need + 1)
  end
  tag = 'page'
else
  -- Chunks with scores, starting just past what is needed (expired ids and ties take more),
  -- and doubling; past the n-th, only ties of its score still count.
  ids, tag = {}, 'ok'
  local last, pos, size, done = nil, 0, need + 1, false
  repeat
    local chunk
    if dir == 'asc' then
      chunk = redis.call('ZRANGEBYSCORE', KEYS[4], min, max, 'WITHSCORES', 'LIMIT', pos, size)
    else
      chunk = redis.call('ZREVRANGEBYSCORE', KEYS[4], max, min, 'WITHSCORES', 'LIMIT', pos, size)
    end
    done = #chunk == 0
    pos = pos + #chunk / 2
    size = math.min(2 * size, 1024)
    for i = 1, #chunk, 2 do
      local id, score = chunk[i], chunk[i + 1]
      if #ids >= need and score ~= last then
        done = true
        break
      end
      local expiry = now and redis.call('ZSCORE', KEYS[1], id)
      if not now or (expiry and (expiry == 'inf' or tonumber(expiry) > now)) then
        ids[#ids + 1] = id
        last = score
      end
    end
  until done
end
-- Descending, documents without the field come last: needed when the numbers run out.
if dir == 'desc' and not bounded and #ids < need and redis.call('ZCARD', KEYS[1]) > redis.call('ZCARD', KEYS[4]) then
  return {'fallback'}
end

local out = {tag}
for from = 1, #ids, 1000 do
  local to = math.min(from + 999, #ids)
  local docs = redis.call('HMGET', KEYS[2], unpack(ids, from, to))
  for i = from, to do
    local json = docs[i - from + 1]
    if json then out[#out + 1] = ids[i] .. '\0' .. json end
  end
end
return out
