-- Library of a small stream's commits, prepended to the scripts that read or write a stream.
-- A stream is small while its version is at most SMALL (a new stream too). A small stream has
-- no commit index stream: each of its commits is a field of its meta hash,
-- 'c<first version>' -> '<first position> <event count>', followed by a space and the
-- commit's event ids (16 bytes each) once truncation took its log entry away (while the entry
-- is there, the ids are read from it). The append that takes a stream past SMALL moves them
-- into a commit index stream, as entries without ids (see append.lua, `entry_ids`). Measured (`cargo xtask bench`, memory rows): a stream key costs
-- about 4.5 KB from its first entry, the listpack the server allocates ahead of it; a commit in
-- the meta hash about 20 bytes, and a small meta hash stays a listpack.
local SMALL = 120
--
-- Tiny streams. A stream of one commit (of at most SMALL events, ids increasing) has no key of
-- its own: its state is a field of one of its partition's shared buckets (`{prefix:p}:b:<n>`,
-- n from a hash of the stream key), named by the stream key: its largest event id (16 bytes),
-- then '<version> <first position>' (the commit is versions 1 to the version). Its second
-- append, or a truncation or deletion, first moves that state into a meta hash of its own
-- ('v' and 'c1'), and goes on from there. Measured: a key costs Redis about 130 bytes however
-- little it holds, a field of a shared listpack hash about 50.

-- Made only when a call needs it: a function defined at the top of a script is made anew on
-- every call (see append.lua, "Shape").
local function small_lib()
  local sub, match, fmt = string.sub, string.match, string.format

  -- The event ids of the events field `e` of a commit of n events (see layout.rs), or nil if
  -- it is not one this store wrote.
  local function blob_ids(e, n)
    if type(e) ~= 'string' or string.byte(e, 1) ~= 1 then return nil end
    local at, out = 2, {}
    local function len()
      local value, scale = 0, 1
      for _ = 1, 8 do
        local b = string.byte(e, at)
        if not b then return nil end
        at = at + 1
        if b < 128 then return value + b * scale end
        value, scale = value + (b - 128) * scale, scale * 128
      end
      return nil
    end
    for i = 1, n do
      out[i] = sub(e, at, at + 15)
      if #out[i] ~= 16 then return nil end
      at = at + 17
      local schema = len()
      local payload = schema and len()
      if not payload then return nil end
      at = at + payload
      local metadata = len()
      if not metadata then return nil end
      at = at + metadata
      if at > #e + 1 then return nil end
    end
    return table.concat(out)
  end

  -- The commits in the meta hash KEYS[km], by first version: {v0, position (digits), count,
  -- ids or false} each; or nil and the first field that is not one this store wrote.
  local function inline(km)
    local all = redis.call('HGETALL', KEYS[km])
    local out = {}
    for i = 1, #all, 2 do
      local f = all[i]
      -- (Event ids, the other fields that start with 'c' in an indexed stream, are 16 bytes.)
      if #f < 16 and sub(f, 1, 1) == 'c' then
        local value = all[i + 1]
        local v0 = tonumber(match(f, '^c(%d+)$'))
        local head, g, n = match(value, '^((%d+) (%d+))')
        n = tonumber(n)
        if not v0 or v0 < 1 or v0 > SMALL or not g or #g > 16 or not n or n < 1 then return nil, f end
        local ids = false
        if #value > #head then
          ids = sub(value, #head + 2)
          if sub(value, #head + 1, #head + 1) ~= ' ' or #ids ~= n * 16 then return nil, f end
        end
        out[#out + 1] = {v0, g, n, ids}
      end
    end
    table.sort(out, function(a, b) return a[1] < b[1] end)
    return out
  end

  -- The log entry of commit c (from `inline`) in the log KEYS[kl]: the entry; or nil and what
  -- is wrong (it is gone, or it is another commit's).
  local function entry_of(c, kl)
    local id = c[2] .. '-0'
    local e = redis.call('XRANGE', KEYS[kl], id, id)[1]
    if not e then
      return nil, fmt('the log entry %s of its commit at version %d is missing', id, c[1])
    end
    local f = e[2]
    if f[3] ~= 'v' or tonumber(f[4]) ~= c[1] or f[5] ~= 'n' or tonumber(f[6]) ~= c[3] then
      return nil, fmt('its commit at version %d disagrees with the log entry %s it points to', c[1], id)
    end
    return e
  end

  -- Commit c's event ids: those it keeps, else those of its log entry in KEYS[kl]; nil if
  -- neither holds them.
  local function ids_of(c, kl)
    if c[4] then return c[4] end
    local e = entry_of(c, kl)
    return e and e[2][11] == 'e' and blob_ids(e[2][12], c[3]) or nil
  end

  -- A tiny stream's state in the bucket KEYS[kb] (the stream key is the end of its meta hash
  -- key KEYS[km] from character #KEYS[kl], KEYS[kl] its partition's log): nil if it has none,
  -- false if the field is not one this store wrote, else the largest id, the version and the
  -- first position (digits).
  local function tiny(km, kb, kl)
    local value = redis.call('HGET', KEYS[kb], sub(KEYS[km], #KEYS[kl]))
    if not value then return nil end
    local v, g = match(sub(value, 17), '^(%d+) (%d+)$')
    if #value < 18 or not v or #v > 16 or #g > 16 or tonumber(v) < 1 or tonumber(v) > SMALL then
      return false
    end
    return sub(value, 1, 16), v, g
  end

  -- Moves a tiny stream's state into its meta hash KEYS[km] (see `tiny`); false if its field is
  -- not one this store wrote.
  local function grow(km, kb, kl)
    local high, v, g = tiny(km, kb, kl)
    if high == false then return false end
    if high then
      redis.call('HDEL', KEYS[kb], sub(KEYS[km], #KEYS[kl]))
      redis.call('HSET', KEYS[km], 'v', v .. high, 'c1', g .. ' ' .. v)
    end
    return true
  end

  return inline, entry_of, ids_of, tiny, grow
end
