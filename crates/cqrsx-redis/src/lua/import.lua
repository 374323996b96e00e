-- Imports a batch of events copied from another store into one stream, atomically: their ids,
-- versions and recorded-at times kept, positions assigned here (see event_store/import.rs).
-- KEYS: 1 partition log, 2 position counter, 3 the stream's commit index, 4 its meta hash,
--       5 its tiny streams' bucket (see small.lua), 6 the partition's stream catalogue, then
--       the index stream of each event type in the batch (KEYS[6 + j]). Every key shares the
--       partition's hash tag.
-- ARGV: 1 the version the batch continues (`after`), 2 the batch's event ids (16 bytes each),
--       3 '1' when they strictly increase, else '0'; then per commit (consecutive events with
--       one recorded-at): its event count, its recorded-at (ms), its types field `t`, its
--       events field `e` (see layout.rs), the number q of its event types, and q pairs: j (its
--       type index is KEYS[6 + j]) and the type's offsets `from-to,...` ('' when the commit
--       holds one type).
-- Reply: 'ok <version> <last position>' ('ok <after> 0' for a stream started with no events)
--      | 'conflict <actual>' | 'ids <actual> <offset of the first id the stream holds>'
--      | 'deleted <actual>' | 'corrupt <what>'.
-- Every check runs before the first write. A stream never written starts at `after` (versions
-- up to it read as truncated: its meta hash's 'tr'); one at version `after` continues. The
-- stream ends in the form an append would leave it in (see append.lua, "Idempotency"):
-- ordered when its ids only increase, from version 1 or from an ordered stream; else indexed
-- (every id a field of the meta hash) — also a stream that starts truncated, whose commit
-- index lacks the entries an ordered stream's binary search needs.
-- Each commit's type index entries get the server's clock as their ids, as an append's do: by_type.lua
-- starts at `since` there, and the commit's own recorded-at filters. A recorded-at ahead of this
-- server's clock (a source whose clock ran ahead) is the one case that misses: such an event is
-- not found from a time between the import and its recorded-at. Its index entry cannot carry
-- that time instead: appends take their recorded-at from those ids, which never go back.
local fmt, sub = string.format, string.sub
local after = tonumber(ARGV[1])
local ids = ARGV[2]
local sorted = ARGV[3] == '1'
local n = #ids / 16
local name = sub(KEYS[4], #KEYS[1])

-- The stream's state: its meta hash's 'v', else its tiny state (see small.lua).
local meta = redis.call('HGET', KEYS[4], 'v')
local tiny
if not meta then
  local state = redis.call('HGET', KEYS[5], name)
  if state then
    local v, g = string.match(sub(state, 17), '^(%d+) (%d+)$')
    if #state < 18 or not v then return 'corrupt version' end
    meta = v .. sub(state, 1, 16)
    tiny = {{1, g, tonumber(v), false}}
  end
end
local ver, high = 0, nil
local new = not meta
if meta then
  if #meta > 16 then
    high, ver = sub(meta, -16), tonumber(sub(meta, 1, -17))
  else
    ver = tonumber(meta)
  end
  if not ver then
    local dead = string.match(meta, '^d(%d+)$')
    return dead and 'deleted ' .. dead or 'corrupt version'
  end
  if ver ~= after then return fmt('conflict %d', ver) end
  if n == 0 then return fmt('ok %d 0', ver) end
end

-- Ids the stream already holds: at versions up to `after`, so never this batch's (a resumed
-- batch is a conflict above, which core compares with what is there).
local fresh = sorted and (new and after == 0 or (high ~= nil and above(ids, high)))
local check_ordered, check_indexed, index_ids, moving
if not new and not fresh then
  check_ordered, check_indexed, index_ids, moving = slow_path(above)
  local reply
  if high then
    reply = check_ordered(3, ids, n, ver, sorted, high, tiny)
  else
    reply = check_indexed(3, ids, n, ver)
  end
  if reply then
    if sub(reply, 1, 4) == 'dup ' then return fmt('ids %d 0', ver) end
    return reply
  end
end

-- Writes. A tiny stream moves into its meta hash first; a new one enters the catalogue.
if tiny then
  redis.call('HDEL', KEYS[5], name)
  redis.call('HSET', KEYS[4], 'v', meta, 'c1', tiny[1][2] .. ' ' .. fmt('%d', tiny[1][3]))
end
if new then
  redis.call('ZADD', KEYS[6], 0, name)
  local tr = tonumber(redis.call('HGET', KEYS[4], 'tr')) or 1
  if after + 1 > tr then redis.call('HSET', KEYS[4], 'tr', fmt('%d', after + 1)) end
  if n == 0 then
    redis.call('HSET', KEYS[4], 'v', fmt('%d', after))
    return fmt('ok %d 0', after)
  end
end
local last = after + n
-- Accepted out of order: an ordered stream becomes indexed before this batch's writes.
if high and not fresh and not index_ids(3, ver) then return 'corrupt index' end
-- Past SMALL: a small stream's commits move from its meta hash to a commit index stream.
if ver > 0 and ver <= SMALL and last > SMALL then
  if not moving then check_ordered, check_indexed, index_ids, moving = slow_path(above) end
  local moved = moving(3)
  if not moved then return 'corrupt index' end
  local fields = {}
  for i, c in ipairs(moved) do
    if c[4] then
      redis.call('XADD', KEYS[3], fmt('%d-0', c[1]), 'g', c[2], 'n', fmt('%d', c[3]), 'i', c[4])
    else
      redis.call('XADD', KEYS[3], fmt('%d-0', c[1]), 'g', c[2], 'n', fmt('%d', c[3]))
    end
    fields[i] = fmt('c%d', c[1])
  end
  if #fields > 0 then redis.call('HDEL', KEYS[4], unpack(fields)) end
end

local seq = redis.call('INCRBY', KEYS[2], n)
local pos = seq - n + 1
local v0 = after + 1
-- The meta hash's writes: 'v', a small stream's commits, an indexed stream's ids.
local writes = {'v', fresh and fmt('%d', last) .. sub(ids, -16) or fmt('%d', last)}
local a, done = 4, 0
while done < n do
  local count, r, types, blob, q = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], tonumber(ARGV[a + 4])
  local pos_s, v0_s, n_s = fmt('%d', pos), fmt('%d', v0), fmt('%d', count)
  for i = 1, q do
    local j, runs = tonumber(ARGV[a + 3 + 2 * i]), ARGV[a + 4 + 2 * i]
    if runs == '' then
      redis.call('XADD', KEYS[6 + j], '*', 'g', pos_s)
    else
      redis.call('XADD', KEYS[6 + j], '*', 'g', pos_s, 'k', runs)
    end
  end
  redis.call('XADD', KEYS[1], pos_s, 's', name, 'v', v0_s, 'n', n_s, 'r', r, 't', types, 'e', blob)
  if last <= SMALL then
    writes[#writes + 1], writes[#writes + 2] = 'c' .. v0_s, pos_s .. ' ' .. n_s
  elseif fresh then
    redis.call('XADD', KEYS[3], v0_s, 'g', pos_s, 'n', n_s, 'i', sub(ids, done * 16 + 1, (done + count) * 16))
  else
    redis.call('XADD', KEYS[3], v0_s, 'g', pos_s, 'n', n_s)
  end
  pos, v0, done = pos + count, v0 + count, done + count
  a = a + 5 + 2 * q
end
if not fresh then
  if n >= 16 then
    -- As append.lua: many ids, so the meta hash becomes a hash table (O(1) lookups).
    writes[#writes + 1], writes[#writes + 2] = '_', string.rep('.', 65)
  end
  for i = 1, n do
    writes[#writes + 1] = sub(ids, i * 16 - 15, i * 16)
    writes[#writes + 1] = fmt('%d', after + i)
  end
end
for i = 1, #writes, 2000 do
  redis.call('HSET', KEYS[4], unpack(writes, i, math.min(i + 1999, #writes)))
end
return fmt('ok %d %d', last, seq)
