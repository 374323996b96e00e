-- Appends batches to streams of one partition, atomically: a group of appends that arrived
-- together (group commit), taken in order, each with its own checks and reply.
-- KEYS: 1 partition log, 2 position counter, then per append: the stream's commit index, its
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

-- a > b for two ids, as unsigned big-endian numbers (Lua's own string order is the server's
-- locale's).
local function above(a, b)
  local a1, a2, a3, a4 = struct.unpack('>I4I4I4I4', a)
  local b1, b2, b3, b4 = struct.unpack('>I4I4I4I4', b)
  if a1 ~= b1 then return a1 > b1 end
  if a2 ~= b2 then return a2 > b2 end
  if a3 ~= b3 then return a3 > b3 end
  return a4 > b4
end

-- The checks of an append that is not new by order alone (a retry, a reused id, ids out of
-- order), and the switch to indexed: made only when an append needs them (see "Shape").
local function slow_path(above)
  local CHUNK = 1000
  local fmt, sub = string.format, string.sub

  local function id_at(ids, i)
    return sub(ids, i * 16 - 15, i * 16)
  end

  local function version_of(entry)
    return tonumber(string.match(entry[1], '^(%d+)'))
  end

  local inline, _, ids_of = small_lib()

  -- In a small stream (its meta hash KEYS[k + 1]): each id it holds -> {commit, offset, the
  -- commit's ids}; nil if a commit or its ids are not ones this store wrote.
  local function held_ids(k, tiny)
    local commits = tiny or inline(k + 1)
    if not commits then return nil end
    local at = {}
    for _, c in ipairs(commits) do
      local ids = ids_of(c, 1)
      if not ids then return nil end
      for j = 0, #ids / 16 - 1 do at[sub(ids, j * 16 + 1, j * 16 + 16)] = {c, j, ids} end
    end
    return at
  end

  -- The checks of an append to a small ordered stream (see check_ordered).
  local function check_small(k, ids, n, ver, tiny)
    local at = held_ids(k, tiny)
    if not at then return 'corrupt index' end
    local hit = at[sub(ids, 1, 16)]
    if hit then
      if hit[2] == 0 and hit[3] == ids then
        return fmt('dup %d %d', hit[1][1] + n - 1, tonumber(hit[1][2]) + n - 1)
      end
      return fmt('ids %d 0', ver)
    end
    for i = 2, n do
      if at[id_at(ids, i)] then return fmt('ids %d %d', ver, i - 1) end
    end
    return nil
  end

  -- The event ids of commit index entry c (KEYS[k] the index): those it keeps ('i'), else
  -- those of its log entry (a commit moved out of a small stream), else those its meta hash
  -- keeps in 'k<version>' (such a commit truncated out of the log); nil if none holds them.
  local function entry_ids(k, c)
    local f = c[2]
    if f[5] == 'i' then
      if #f[6] == 0 or #f[6] % 16 ~= 0 then return nil end
      return f[6]
    end
    local v0, n = version_of(c), tonumber(f[4])
    if f[1] ~= 'g' or not n or n < 1 then return nil end
    local held = ids_of({v0, f[2], n, false}, 1)
    if held then return held end
    held = redis.call('HGET', KEYS[k + 1], fmt('k%d', v0))
    if held and #held == n * 16 then return held end
    return nil
  end

  -- In an ordered stream of `ver` events (KEYS[k] its commit index): the entry holding id x,
  -- x's offset in it and the entry's ids; nil if no commit holds it, or false for an entry
  -- whose ids are nowhere.
  local function find(k, x, ver)
    local lo, hi = 1, ver
    while lo <= hi do
      local mid = math.floor((lo + hi) / 2)
      local c = redis.call('XREVRANGE', KEYS[k], fmt('%d-0', mid), '-', 'COUNT', 1)[1]
      local ids = c and entry_ids(k, c)
      if not ids then return false end
      local v0 = version_of(c)
      -- (The bounds move past `mid` even if the index were damaged: the search always ends.)
      if above(sub(ids, 1, 16), x) then
        hi = math.min(v0, mid) - 1
      elseif above(x, sub(ids, -16)) then
        lo = math.max(v0 + #ids / 16, mid + 1)
      else
        local at = 1
        while true do
          local s = string.find(ids, x, at, true)
          if not s then return nil end
          if s % 16 == 1 then return c, (s - 1) / 16, ids end
          at = s + 1
        end
      end
    end
    return nil
  end

  -- Ids 2..n of a batch, looked up in one walk over the commit index: the offset of the first one
  -- the stream holds, nil if none, false for an entry without ids.
  local function first_held(k, ids, n)
    local want = {}
    for i = 2, n do want[id_at(ids, i)] = i end
    local first
    local start = '-'
    while true do
      local commits = redis.call('XRANGE', KEYS[k], start, '+', 'COUNT', 256)
      for _, c in ipairs(commits) do
        start = '(' .. c[1]
        local held = entry_ids(k, c)
        if not held then return false end
        for p = 1, #held - 15, 16 do
          local i = want[sub(held, p, p + 15)]
          if i and (not first or i < first) then first = i end
        end
      end
      if #commits < 256 then break end
    end
    return first and first - 1
  end

  -- The checks of an append to an ordered stream whose ids are not all new by order alone:
  -- a reply if it is a retry or reuses an id, nil if every id is new.
  local function check_ordered(k, ids, n, ver, sorted, high, tiny)
    if ver <= SMALL then return check_small(k, ids, n, ver, tiny) end
    local c, j, held = find(k, sub(ids, 1, 16), ver)
    if c == false then return 'corrupt index' end
    if c then
      if j == 0 and held == ids then
        return fmt('dup %d %d', version_of(c) + n - 1, tonumber(c[2][2]) + n - 1)
      end
      return fmt('ids %d 0', ver)
    end
    -- A binary search per id reads about log2(ver) index entries; one walk over the index reads
    -- every id of the stream once (measured: 5,000 ids against 10,000 single-event commits took
    -- 1.1 s of searches). Take whichever reads less.
    if n > 2 and ver < (n - 1) * math.log(ver) / math.log(2) * 16 then
      local held = first_held(k, ids, n)
      if held == false then return 'corrupt index' end
      if held then return fmt('ids %d %d', ver, held) end
      return nil
    end
    for i = 2, n do
      local x = id_at(ids, i)
      -- In increasing ids, the first one above the largest so far starts the new ones.
      if sorted and above(x, high) then return nil end
      c = find(k, x, ver)
      if c == false then return 'corrupt index' end
      if c then return fmt('ids %d %d', ver, i - 1) end
    end
    return nil
  end

  -- The checks of an append to an indexed stream: a reply if it is a retry or reuses an id,
  -- nil if every id is new.
  local function check_indexed(k, ids, n, ver)
    local got
    if n <= CHUNK then
      local fields = {}
      for i = 1, n do fields[i] = id_at(ids, i) end
      got = redis.call('HMGET', KEYS[k + 1], unpack(fields))
    else
      got = {}
      for i = 1, n, CHUNK do
        local fields = {}
        for j = i, math.min(i + CHUNK - 1, n) do fields[#fields + 1] = id_at(ids, j) end
        local part = redis.call('HMGET', KEYS[k + 1], unpack(fields))
        for j = 1, #part do got[i + j - 1] = part[j] end
      end
    end
    -- got[i] is the version already holding event i's id, if any.
    if got[1] then
      local first = tonumber(got[1])
      for i = 2, n do
        if tonumber(got[i]) ~= first + i - 1 then return fmt('ids %d 0', ver) end
      end
      -- The commit at that version: its first position and event count.
      local g, count
      if ver <= SMALL then
        local c = redis.call('HGET', KEYS[k + 1], fmt('c%d', first))
        if c then g, count = string.match(c, '^(%d+) (%d+)') end
      else
        local c = redis.call('XRANGE', KEYS[k], fmt('%d-0', first), fmt('%d-0', first))[1]
        if c then g, count = c[2][2], c[2][4] end
      end
      if tonumber(count) ~= n then return fmt('ids %d 0', ver) end
      return fmt('dup %d %d', first + n - 1, tonumber(g) + n - 1)
    end
    for i = 2, n do
      if got[i] then return fmt('ids %d %d', ver, i - 1) end
    end
    return nil
  end

  -- Makes an ordered stream indexed: each id of its commits becomes a field of the meta hash
  -- ('h' goes with the append's own write of 'v'). False at an index entry without ids (the
  -- fields written so far hold the versions they will hold, and an ordered stream does not
  -- read them).
  local function index_ids(k, ver)
    if ver <= SMALL then
      local at = held_ids(k)
      if not at then return false end
      local writes = {}
      for id, hit in pairs(at) do
        writes[#writes + 1] = id
        writes[#writes + 1] = fmt('%d', hit[1][1] + hit[2])
      end
      if #writes > 0 then redis.call('HSET', KEYS[k + 1], unpack(writes)) end
      return true
    end
    local start = '-'
    while true do
      local commits = redis.call('XRANGE', KEYS[k], start, '+', 'COUNT', 256)
      local writes = {}
      for _, c in ipairs(commits) do
        start = '(' .. c[1]
        local ids, v0 = entry_ids(k, c), version_of(c)
        if not ids then return false end
        for i = 1, #ids / 16 do
          writes[#writes + 1] = id_at(ids, i)
          writes[#writes + 1] = fmt('%d', v0 + i - 1)
        end
        if #writes >= CHUNK * 2 then
          redis.call('HSET', KEYS[k + 1], unpack(writes))
          writes = {}
        end
      end
      if #writes > 0 then redis.call('HSET', KEYS[k + 1], unpack(writes)) end
      if #commits < 256 then break end
    end
    return true
  end

  -- The commits of a small stream about to pass SMALL, for its new commit index: {v0,
  -- position, count, ids kept or false} each; nil if one is not a commit this store wrote. (The
  -- ids of a commit still in the log stay there: reading them for every commit made the call
  -- that passes SMALL take about 2 ms.)
  local function moving(k)
    return inline(k + 1)
  end

  return check_ordered, check_indexed, index_ids, moving
end

-- Each append in turn: its arguments start at ARGV[a] and its keys at KEYS[k] (see the header).
-- `repeat ... until true` holds one append: `break` ends it with its reply.
local replies = {}
local seq, grouped
local check_ordered, check_indexed, index_ids, moving
local a, k = 1, 3
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
