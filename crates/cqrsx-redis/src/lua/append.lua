-- Appends a batch to one stream, atomically. Every key shares the partition's hash tag.
-- KEYS: 1 events stream, 2 meta hash, 3 event-id hash, 4 partition log, 5 position counter
-- ARGV: 1 expected (-1 any, -2 no stream, -3 stream exists, n exact), 2 stream key,
--       3 aggregate type, 4 event count, 5 type-index key prefix (sorted set per type:
--       score = recorded-at in microseconds, member = position),
--       then 6 per event: id, type, content type, schema version, payload, metadata
-- Reply: {'ok', version, position} | {'dup', version, position} | {'conflict', actual}
--      | {'ids', actual} | {'deleted', actual}
-- Every check runs before the first write, so a refused append writes nothing. Per event the
-- script issues only the stream's XADD; the partition log gets one entry per commit, and ids,
-- positions and type-index entries go in one call each (in chunks, under Lua's unpack limit).
local CHUNK = 1000

local function chunked(cmd, key, list)
  for i = 1, #list, CHUNK do
    redis.call(cmd, key, unpack(list, i, math.min(i + CHUNK - 1, #list)))
  end
end

local meta = redis.call('HMGET', KEYS[2], 'v', 'd')
local ver = tonumber(meta[1]) or 0
if meta[2] == '1' then return {'deleted', ver} end
local n = tonumber(ARGV[4])

local ids = {}
for k = 0, n - 1 do ids[k + 1] = ARGV[6 + k * 6] end
local known = {}
for i = 1, n, CHUNK do
  local part = redis.call('HMGET', KEYS[3], unpack(ids, i, math.min(i + CHUNK - 1, n)))
  for j = 1, #part do known[i + j - 1] = part[j] end
end
if known[1] then
  -- A retry of an earlier commit only if every id is there, at consecutive versions.
  local first = tonumber(known[1])
  for k = 2, n do
    if (not known[k]) or tonumber(known[k]) ~= first + k - 1 then return {'ids', ver} end
  end
  local last = first + n - 1
  local pos = 0
  local e = redis.call('XRANGE', KEYS[1], last .. '-0', last .. '-0')
  if e[1] then
    local f = e[1][2]
    for j = 1, #f, 2 do if f[j] == 'g' then pos = tonumber(f[j + 1]) end end
  end
  return {'dup', last, pos}
end
for k = 2, n do
  if known[k] then return {'ids', ver} end
end
local expected = tonumber(ARGV[1])
if (expected == -2 and ver ~= 0) or (expected == -3 and ver == 0) or (expected >= 0 and expected ~= ver) then
  return {'conflict', ver}
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- The type index orders by microseconds, so events of one millisecond keep their commit order.
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local first = redis.call('INCRBY', KEYS[5], n) - n + 1
-- One log entry per commit, at the commit's first position: event k of the commit sits at
-- position first + k and version v0 + k.
redis.call('XADD', KEYS[4], first .. '-0', 's', ARGV[2], 'v', ver + 1, 'n', n, 'a', ARGV[3])
local pos = first - 1
local id_versions = {}
local by_type = {}
for k = 0, n - 1 do
  local a = 6 + k * 6
  ver = ver + 1
  pos = pos + 1
  redis.call('XADD', KEYS[1], ver .. '-0', 'i', ARGV[a], 't', ARGV[a + 1], 'c', ARGV[a + 2], 'sv', ARGV[a + 3],
    'p', ARGV[a + 4], 'm', ARGV[a + 5], 'g', pos, 'r', now)
  id_versions[#id_versions + 1] = ARGV[a]
  id_versions[#id_versions + 1] = ver
  local entries = by_type[ARGV[a + 1]]
  if not entries then
    entries = {}
    by_type[ARGV[a + 1]] = entries
  end
  entries[#entries + 1] = now_us
  entries[#entries + 1] = pos
end
for event_type, entries in pairs(by_type) do
  chunked('ZADD', ARGV[5] .. event_type, entries)
end
chunked('HSET', KEYS[3], id_versions)
redis.call('HSET', KEYS[2], 'v', ver)
return {'ok', ver, pos}
