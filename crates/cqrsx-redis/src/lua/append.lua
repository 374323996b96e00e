-- Appends a batch to one stream, atomically. Every key shares the partition's hash tag.
-- KEYS: 1 events stream, 2 meta hash (v version, d tombstone, and event id -> version),
--       3 partition log, 4 position counter
-- ARGV: 1 expected (-1 any, -2 no stream, -3 stream exists, n exact), 2 stream key,
--       3 aggregate type, 4 event count, 5 type-index key prefix (a stream per event type, one
--       entry per commit and type: s stream key, g first position, v first version, n events in
--       the commit, k runs `from-to,...` of this type's offsets when not all of them),
--       then 6 per event: id, type, content type, schema version, payload, metadata
-- Reply: {'ok', version, position} | {'dup', version, position} | {'conflict', actual}
--      | {'ids', actual} | {'deleted', actual}
-- Every check runs before the first write, so a refused append writes nothing. One HMGET reads
-- the version, the tombstone and every event id; one HSET writes the new version and the ids.
-- Per event the script issues only the stream's XADD; the partition log gets one entry per
-- commit and each event type one index entry per commit.
local CHUNK = 1000
local n = tonumber(ARGV[4])

local fields = {'v', 'd'}
for k = 0, n - 1 do fields[k + 3] = ARGV[6 + k * 6] end
local got = {}
for i = 1, n + 2, CHUNK do
  local part = redis.call('HMGET', KEYS[2], unpack(fields, i, math.min(i + CHUNK - 1, n + 2)))
  for j = 1, #part do got[i + j - 1] = part[j] end
end
local ver = tonumber(got[1]) or 0
if got[2] == '1' then return {'deleted', ver} end

-- got[k + 2] is the version already holding event k's id, if any.
if got[3] then
  -- A retry of an earlier commit only if every id is there, at consecutive versions.
  local first = tonumber(got[3])
  for k = 2, n do
    if (not got[k + 2]) or tonumber(got[k + 2]) ~= first + k - 1 then return {'ids', ver} end
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
  if got[k + 2] then return {'ids', ver} end
end
local expected = tonumber(ARGV[1])
if (expected == -2 and ver ~= 0) or (expected == -3 and ver == 0) or (expected >= 0 and expected ~= ver) then
  return {'conflict', ver}
end

local t = redis.call('TIME')
local now = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local first = redis.call('INCRBY', KEYS[4], n) - n + 1
local v0 = ver + 1
-- One log entry per commit, at the commit's first position: event k of the commit sits at
-- position first + k and version v0 + k.
redis.call('XADD', KEYS[3], first .. '-0', 's', ARGV[2], 'v', v0, 'n', n, 'a', ARGV[3])
local writes = {}
local by_type = {}
for k = 0, n - 1 do
  local a = 6 + k * 6
  ver = v0 + k
  redis.call('XADD', KEYS[1], ver .. '-0', 'i', ARGV[a], 't', ARGV[a + 1], 'c', ARGV[a + 2], 'sv', ARGV[a + 3],
    'p', ARGV[a + 4], 'm', ARGV[a + 5], 'g', first + k, 'r', now)
  writes[#writes + 1] = ARGV[a]
  writes[#writes + 1] = ver
  -- Runs of consecutive offsets per type, {from, to, from, to, ...}.
  local runs = by_type[ARGV[a + 1]]
  if not runs then
    by_type[ARGV[a + 1]] = {k, k}
  elseif runs[#runs] == k - 1 then
    runs[#runs] = k
  else
    runs[#runs + 1] = k
    runs[#runs + 1] = k
  end
end
-- Auto ids keep each index in commit order and carry the time `events_by_type` starts from.
for event_type, runs in pairs(by_type) do
  if #runs == 2 and runs[1] == 0 and runs[2] == n - 1 then
    redis.call('XADD', ARGV[5] .. event_type, '*', 's', ARGV[2], 'g', first, 'v', v0, 'n', n)
  else
    local k = {}
    for r = 1, #runs, 2 do k[#k + 1] = runs[r] .. '-' .. runs[r + 1] end
    redis.call('XADD', ARGV[5] .. event_type, '*', 's', ARGV[2], 'g', first, 'v', v0, 'n', n,
      'k', table.concat(k, ','))
  end
end
writes[#writes + 1] = 'v'
writes[#writes + 1] = ver
for i = 1, #writes, CHUNK * 2 do
  redis.call('HSET', KEYS[2], unpack(writes, i, math.min(i + CHUNK * 2 - 1, #writes)))
end
return {'ok', ver, first + n - 1}
