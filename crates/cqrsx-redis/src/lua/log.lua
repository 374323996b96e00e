-- Library of the event store's layout, prepended to the scripts that read the log or a
-- stream's commit index (it declares no keys of its own).
-- A partition log entry is one commit: fields s (stream key, `Type/id`: it names the aggregate
-- type too), v (first version), n (event count), r (recorded at: `<ms>-<seq>`, the id of the
-- type index entry the append made, or `<ms>`), t (event types), e (the events).
-- A commit index entry: fields g (the commit's first position) and n (its event count).
-- A stream's meta hash field 'v': its version's digits, then its largest event id (16 bytes)
-- while its ids are ordered, or 'd' and its version once deleted (see append.lua).

-- A meta hash's 'v' (false when the stream has none): the version (nil if 'v' is not one
-- this store wrote) and whether the stream is deleted.
local function meta_version(v)
  if not v then return 0, false end
  local dead = string.match(v, '^d(%d+)$')
  if dead then return tonumber(dead), true end
  return tonumber(#v > 16 and string.sub(v, 1, -17) or v), false
end

-- A log entry's recorded-at in ms, or nil.
local function recorded_ms(e)
  local r = e[2][8]
  return tonumber(string.match(r, '^(%d+)%-%d+$') or string.match(r, '^(%d+)$'))
end

-- A log entry's event count, or nil when the entry is not a commit this store wrote.
local function count_of(e)
  local f = e[2]
  if f[1] ~= 's' or f[3] ~= 'v' or f[5] ~= 'n' or f[7] ~= 'r' or f[9] ~= 't' or f[11] ~= 'e' then
    return nil
  end
  local n, v = tonumber(f[6]), tonumber(f[4])
  if not n or n < 1 or n % 1 ~= 0 or not v or v < 1 or not recorded_ms(e) then return nil end
  return n
end

-- A commit index entry's position and event count, or nil when it is not one this store wrote.
local function commit_of(c)
  local f = c[2]
  if f[1] ~= 'g' or f[3] ~= 'n' then return nil end
  local g, n = tonumber(f[2]), tonumber(f[4])
  if not g or not n or n < 1 then return nil end
  return g, n
end
