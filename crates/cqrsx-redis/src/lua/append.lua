-- Appends a batch to one stream, atomically. Every key shares the partition's hash tag.
-- KEYS: 1 events stream, 2 meta hash, 3 event-id hash, 4 partition log, 5 position counter
-- ARGV: 1 expected (-1 any, -2 no stream, -3 stream exists, n exact), 2 stream key,
--       3 aggregate type, 4 event count, 5 type-index key prefix (sorted set per type:
--       score = recorded-at in microseconds, member = position),
--       then 6 per event: id, type, content type, schema version, payload, metadata
-- Reply: {'ok', version, position} | {'dup', version, position} | {'conflict', actual}
--      | {'ids', actual} | {'deleted', actual}
-- Every check runs before the first write, so a refused append writes nothing.
local meta = redis.call('HMGET', KEYS[2], 'v', 'd')
local ver = tonumber(meta[1]) or 0
if meta[2] == '1' then return {'deleted', ver} end
local n = tonumber(ARGV[4])
local first = redis.call('HGET', KEYS[3], ARGV[6])
if first then
  first = tonumber(first)
  for k = 1, n - 1 do
    local v = redis.call('HGET', KEYS[3], ARGV[6 + k * 6])
    if (not v) or tonumber(v) ~= first + k then return {'ids', ver} end
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
for k = 1, n - 1 do
  if redis.call('HEXISTS', KEYS[3], ARGV[6 + k * 6]) == 1 then return {'ids', ver} end
end
local expected = tonumber(ARGV[1])
if (expected == -2 and ver ~= 0) or (expected == -3 and ver == 0) or (expected >= 0 and expected ~= ver) then
  return {'conflict', ver}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- The type index orders by microseconds, so events of one millisecond keep their commit order.
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pos = 0
for k = 0, n - 1 do
  local a = 6 + k * 6
  ver = ver + 1
  pos = redis.call('INCR', KEYS[5])
  redis.call('XADD', KEYS[1], ver .. '-0', 'i', ARGV[a], 't', ARGV[a + 1], 'c', ARGV[a + 2], 'sv', ARGV[a + 3],
    'p', ARGV[a + 4], 'm', ARGV[a + 5], 'g', pos, 'r', now)
  redis.call('XADD', KEYS[4], pos .. '-0', 's', ARGV[2], 'v', ver, 'a', ARGV[3], 't', ARGV[a + 1])
  redis.call('ZADD', ARGV[5] .. ARGV[a + 1], now_us, pos)
  redis.call('HSET', KEYS[3], ARGV[a], ver)
end
redis.call('HSET', KEYS[2], 'v', ver)
return {'ok', ver, pos}
