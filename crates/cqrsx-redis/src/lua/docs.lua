-- Library of read-model documents, prepended to every script that reads or writes them (the
-- ones that write also take docs_write.lua). A collection's keys all start with its hash tag T:
--   T ids      sorted set of every id, scored by expiry (ms; +inf when none)
--   T docs     hash id -> the JSON document
--   T exp      sorted set of the ids that have an expiry, scored by it: absent when none has,
--              so that one EXISTS tells a read it need not compare expiries at all
--   T entries  hash id -> the document's index entries: per indexed field with an entry,
--              `field NUL mark NUL`, where mark is 'n' | 's:<value>' | 'o'; and `NUL e NUL`
--              when the document has an expiry
--   T x:<f>    ids whose field f is a number, scored by it
--   T xs:<f>   `<value>\0<id>` for ids whose field f is a string (score 0, ordered by value)
--   T xo:<f>   ids whose field f holds anything else but null (booleans, objects, arrays)
-- A document whose expiry has passed is gone to every reader; writes and counts remove a
-- bounded number of such documents per call, the `purge` operation any number. Every key is
-- passed in KEYS by the caller: `c` describes a collection's keys there — c.ids, c.docs, c.exp
-- (positions of those keys) and c.ix (position of the first index key; field j's x, xs, xo keys
-- follow at c.ix + 3 * (j - 1)); for writes also c.entries, c.fields (j -> field name) and
-- c.slot (field name -> j).
-- This file holds only what reads need: every function defined here is made anew on each call.

-- The server's clock in ms.
local function docs_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Whether a document whose expiry score is `score` (false: no such document) is live; `now`
-- gives the clock, read only for a finite expiry.
local function docs_live(score, now)
  return score ~= false and score ~= nil and (score == 'inf' or tonumber(score) > now())
end

-- Candidate ids of a selection: every live id, a score range of a numeric index, or a value
-- range of a string index (the field's indexes at KEYS[xk], KEYS[xk + 1]).
local function docs_select(c, mode, xk, min, max, now)
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
