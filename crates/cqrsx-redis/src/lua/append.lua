-- Appends batches to streams of one partition, atomically: a group of appends that arrived
-- together (group commit), taken in order, each with its own checks and reply.
-- KEYS: 1 partition log, 2 position counter, 3 the partition's stream catalogue (a sorted set
--       of stream keys, score 0: see event_store/catalogue.rs), then per append: the stream's commit index, its
--       meta hash, its tiny streams' bucket (see small.lua), and the index stream of each event
--       type in the batch. Every key shares the
--       partition's hash tag, and every key the script touches is one of these.
-- ARGV: per append, until the arguments end: one argument holding a header, the event ids
--       and the events blob (read by `read_header` in append_header.lua, which comes first);
--       then, only when the batch has m > 1 event types, the event types field and per event
--       type its offsets (`from-to,...`). The stream key is the meta hash key's end,
--       and a batch's one event type its type index key's end: each key is the partition's
--       tag followed by its name, and the log's name ('log') is as long as the meta hash's and
--       a type index's prefixes ('m:', 't:') plus one, so the name starts at #KEYS[1]. Every
--       argument costs the call time (measured: about half a microsecond each), so an append
--       of one event type sends one.
-- Reply: one line per append, joined by newlines: 'ok <version> <position>'
--      | 'dup <version> <position>' | 'conflict <actual>'
--      | 'ids <actual> <offset of the first reused id>' | 'deleted <actual>'
--      | 'corrupt <what>' (a meta hash or index this store did not write). One string, not
--      an array: measured, an array reply cost the client 2.5-3.5 us more to receive.
-- The meta hash's 'v' is the stream's whole state for an append, read by one HGET and written
-- by one HSET: the version's digits (at most 16: versions stay below 2^53), then, while the
-- stream is ordered, its largest event id ('h', 16 bytes); 'd' and the version once deleted.
-- (Measured: one field instead of 'v', 'd' and 'h' took 0.4-1.1 us off a single-event call.)
-- Every check of an append runs before its first write, so a refused append writes nothing
-- and does not affect the others. The commit is one log entry, one index entry and one entry
-- per event type. The position counter is one INCRBY per call, plus one SET when a group wrote
-- more than one append. Numbers go to Redis as %d strings (Lua's own formatting is a slow
-- %.14g).
--
-- Idempotency. A stream is "ordered" while every id appended to it was larger than all ids
-- before it, as time-ordered (v7) ids are: its meta hash keeps only the largest id ('h', in
-- 'v'), and each commit index entry keeps its commit's ids ('i'). An append whose ids increase
-- from above 'h' is new, with no lookup per id. Any other append looks its ids up by binary
-- search over the versions (ids grow with them), or a large batch in one walk over the commit
-- index. The first accepted append out of that order (after every check, before its writes)
-- makes the stream "indexed": every id becomes a field of the meta hash (id -> version), and
-- 'v' holds the version alone. A retry is recognised in both: it repeats every id of one
-- earlier commit, in order.
--
-- Shape. A script's body runs anew on every call, and every function it defines is made anew
-- (a closure, and a cell per local it captures). So the common append runs inline in the loop
-- at the bottom, and the checks it does not need are made only when needed, capturing nothing
-- (measured: this shape and the strings below took about 2 us off the 22-24 us of server time
-- of a single-event call). A single event's strings are formatted once and reused.
local CHUNK = 1000
local WIDE = 16
local fmt, sub = string.format, string.sub

-- Each append in turn: its arguments start at ARGV[a] and its keys at KEYS[k] (see the header).
-- `repeat ... until true` holds one append: `break` ends it with its reply.
local replies = {}
local seq, grouped
local check_ordered, check_indexed, index_ids, moving
local a, k = 1, 4
while a <= #ARGV do
  local expected, m, sorted, n, ids, blob = read_header(ARGV[a])
  local types = m == 1 and sub(KEYS[k + 3], #KEYS[1]) or ARGV[a + 1]
  local reply
  repeat
    -- The meta hash's 'v' (see the header), or the stream's tiny state (see small.lua), which
    -- an append that writes moves into the meta hash first.
    local meta = redis.call('HGET', KEYS[k + 1], 'v')
    local own, tiny = meta, nil
    if not meta then
      local state = redis.call('HGET', KEYS[k + 2], sub(KEYS[k + 1], #KEYS[1]))
      if state then
        local v, g = string.match(sub(state, 17), '^(%d+) (%d+)$')
        if #state < 18 or not v then reply = 'corrupt version' break end
        meta, own = v .. sub(state, 1, 16), true
        -- Its one commit, as `inline` reads a small stream's.
        tiny = {{1, g, tonumber(v), false}}
      end
    end
    local ver, high = 0, nil
    if meta then
      if #meta > 16 then
        high, ver = sub(meta, -16), tonumber(sub(meta, 1, -17))
      else
        ver = tonumber(meta)
      end
      if not ver then
        local dead = string.match(meta, '^d(%d+)$')
        reply = dead and 'deleted ' .. dead or 'corrupt version'
        break
      end
    end
    local ordered = high or ver == 0
    -- New by order alone: increasing ids, all above every id of the stream.
    -- (`above` reads the first 16 bytes: the first id.)
    local fresh = ordered and sorted == 1 and (not high or above(ids, high))
    if not fresh then
      if not check_ordered then check_ordered, check_indexed, index_ids, moving = slow_path(above) end
      if ordered then
        reply = check_ordered(k, ids, n, ver, sorted == 1, high, tiny)
      else
        reply = check_indexed(k, ids, n, ver)
      end
      if reply then break end
    end
    if (expected == -2 and ver ~= 0) or (expected == -3 and ver == 0) or (expected >= 0 and expected ~= ver) then
      reply = fmt('conflict %d', ver)
      break
    end
    -- A stream's first write enters it in the catalogue (once: nothing per event).
    if ver == 0 then redis.call('ZADD', KEYS[3], 0, sub(KEYS[k + 1], #KEYS[1])) end
    if tiny then
      redis.call('HDEL', KEYS[k + 2], sub(KEYS[k + 1], #KEYS[1]))
      redis.call('HSET', KEYS[k + 1], 'v', meta, 'c1', tiny[1][2] .. ' ' .. fmt('%d', tiny[1][3]))
    end
    -- Past SMALL: the stream's commits move from its meta hash to a commit index stream.
    local moved
    if ver > 0 and ver <= SMALL and ver + n > SMALL then
      if not check_ordered then check_ordered, check_indexed, index_ids, moving = slow_path(above) end
      moved = moving(k)
      if not moved then reply = 'corrupt index' break end
    end
    -- Accepted out of order: the stream becomes indexed before this append's writes.
    if high and not fresh and not index_ids(k, ver) then reply = 'corrupt index' break end

    -- The first append of a call moves the position counter; the others of its group count on
    -- from there, and the counter is written once at the end.
    local first
    if seq then
      first, grouped = seq + 1, true
      seq = seq + n
    else
      seq = redis.call('INCRBY', KEYS[2], n)
      first = seq - n + 1
    end
    local v0, last = ver + 1, ver + n
    local first_s, v0_s = fmt('%d', first), fmt('%d', v0)
    local n_s, last_s, to_s = '1', v0_s, first_s
    if n > 1 then n_s, last_s, to_s = fmt('%d', n), fmt('%d', last), fmt('%d', first + n - 1) end
    -- Auto ids keep each type index in commit order and carry the time events_by_type starts
    -- at; the first one (`<ms>-<seq>`: the server's clock, never behind that index's last
    -- entry) is the commit's recorded-at, so the clock costs no command of its own.
    local now
    if m == 1 then
      now = redis.call('XADD', KEYS[k + 3], '*', 'g', first_s)
    else
      for j = 1, m do
        local id = redis.call('XADD', KEYS[k + 2 + j], '*', 'g', first_s, 'k', ARGV[a + 1 + j])
        now = now or id
      end
    end
    -- The commit, at its first position: event i sits at position first + i and version v0 + i.
    -- (An explicit id without its `-seq` part is `-0`.)
    redis.call('XADD', KEYS[1], first_s, 's', sub(KEYS[k + 1], #KEYS[1]), 'v', v0_s, 'n', n_s, 'r', now, 't', types, 'e', blob)
    reply = 'ok ' .. last_s .. ' ' .. to_s
    if fresh and not own and last <= SMALL then
      -- A new stream of one commit: tiny (see small.lua).
      redis.call('HSET', KEYS[k + 2], sub(KEYS[k + 1], #KEYS[1]), (n == 1 and ids or sub(ids, -16)) .. last_s .. ' ' .. first_s)
      break
    end
    if fresh and last <= SMALL then
      redis.call('HSET', KEYS[k + 1], 'v', last_s .. (n == 1 and ids or sub(ids, -16)), 'c' .. v0_s, first_s .. ' ' .. n_s)
      break
    end
    if moved then
      local fields = {}
      for i, c in ipairs(moved) do
        if c[4] then
          redis.call('XADD', KEYS[k], fmt('%d-0', c[1]), 'g', c[2], 'n', fmt('%d', c[3]), 'i', c[4])
        else
          redis.call('XADD', KEYS[k], fmt('%d-0', c[1]), 'g', c[2], 'n', fmt('%d', c[3]))
        end
        fields[i] = fmt('c%d', c[1])
      end
      redis.call('HDEL', KEYS[k + 1], unpack(fields))
    end
    if fresh then
      redis.call('XADD', KEYS[k], v0_s, 'g', first_s, 'n', n_s, 'i', ids)
      redis.call('HSET', KEYS[k + 1], 'v', last_s .. (n == 1 and ids or sub(ids, -16)))
      break
    end
    local writes = {'v', last_s}
    if last <= SMALL then
      writes[3], writes[4] = 'c' .. v0_s, first_s .. ' ' .. n_s
    else
      redis.call('XADD', KEYS[k], v0_s, 'g', first_s, 'n', n_s)
    end
    if n >= WIDE then
      -- A large batch: from now on the stream's ids live in a hash table (a value longer than
      -- the server's listpack limit converts the hash, before the write), where a lookup is
      -- O(1); a small hash is a listpack, scanned per lookup.
      writes[#writes + 1], writes[#writes + 2] = '_', string.rep('.', 65)
    end
    for i = 1, n do
      writes[#writes + 1] = sub(ids, i * 16 - 15, i * 16)
      writes[#writes + 1] = fmt('%d', v0 + i - 1)
    end
    for i = 1, #writes, CHUNK * 2 do
      redis.call('HSET', KEYS[k + 1], unpack(writes, i, math.min(i + CHUNK * 2 - 1, #writes)))
    end
  until true
  replies[#replies + 1] = reply
  a = a + (m > 1 and 2 + m or 1)
  k = k + 3 + m
end
if grouped then redis.call('SET', KEYS[2], fmt('%d', seq)) end
if #replies == 1 then return replies[1] end
return table.concat(replies, '\n')
