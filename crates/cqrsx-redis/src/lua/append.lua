-- Appends batches to streams of one partition, atomically: a group of appends that arrived
-- together (group commit), taken in order, each with its own checks and reply.
-- KEYS: 1 partition log, 2 position counter, then per append: events stream, meta hash
--       (v version, d tombstone, and event id -> version). Every key shares the partition's
--       hash tag.
-- ARGV: 1 type-index key prefix (a stream per event type, one entry per commit and type:
--       s stream key, g first position, v first version, n events in the commit, k runs
--       `from-to,...` of this type's offsets when not all of them), 2 number of appends,
--       then per append: expected (-1 any, -2 no stream, -3 stream exists, n exact),
--       stream key, aggregate type, event count, then 6 per event: id, type, content type,
--       schema version, payload, metadata
-- Reply: one per append: {'ok', version, position} | {'dup', version, position}
--      | {'conflict', actual} | {'ids', actual} | {'deleted', actual}
-- Every check of an append runs before its first write, so a refused append writes nothing
-- and does not affect the others. One HMGET reads the version, the tombstone and every event
-- id; one HSET writes the new version and the ids. Per event only the stream's XADD; the
-- partition log gets one entry per commit and each event type one index entry per commit.
local CHUNK = 1000
-- Numbers go to Redis as strings made with %d: Lua's own number-to-string is a slow %.14g.
local fmt = string.format
local now

local function append(events_key, meta_key, a0)
  local stream = ARGV[a0 + 1]
  local n = tonumber(ARGV[a0 + 3])
  local base = a0 + 4 -- event k's fields start at base + 6k

  local fields = {'v', 'd'}
  for k = 0, n - 1 do fields[k + 3] = ARGV[base + k * 6] end
  local got = {}
  for i = 1, n + 2, CHUNK do
    local part = redis.call('HMGET', meta_key, unpack(fields, i, math.min(i + CHUNK - 1, n + 2)))
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
    local e = redis.call('XRANGE', events_key, last .. '-0', last .. '-0')
    if e[1] then
      local f = e[1][2]
      for j = 1, #f, 2 do if f[j] == 'g' then pos = tonumber(f[j + 1]) end end
    end
    return {'dup', last, pos}
  end
  for k = 2, n do
    if got[k + 2] then return {'ids', ver} end
  end
  local expected = tonumber(ARGV[a0])
  if (expected == -2 and ver ~= 0) or (expected == -3 and ver == 0) or (expected >= 0 and expected ~= ver) then
    return {'conflict', ver}
  end

  if not now then
    local t = redis.call('TIME')
    now = fmt('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  end
  local count = ARGV[a0 + 3]
  local first = redis.call('INCRBY', KEYS[2], count) - n + 1
  local v0 = ver + 1
  local first_s, v0_s = fmt('%d', first), fmt('%d', v0)
  -- One log entry per commit, at the commit's first position: event k of the commit sits at
  -- position first + k and version v0 + k.
  redis.call('XADD', KEYS[1], first_s .. '-0', 's', stream, 'v', v0_s, 'n', count, 'a', ARGV[a0 + 2])
  local writes = {}
  local by_type = {}
  for k = 0, n - 1 do
    local a = base + k * 6
    ver = v0 + k
    local ver_s = fmt('%d', ver)
    redis.call('XADD', events_key, ver_s .. '-0', 'i', ARGV[a], 't', ARGV[a + 1], 'c', ARGV[a + 2],
      'sv', ARGV[a + 3], 'p', ARGV[a + 4], 'm', ARGV[a + 5], 'g', fmt('%d', first + k), 'r', now)
    writes[#writes + 1] = ARGV[a]
    writes[#writes + 1] = ver_s
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
      redis.call('XADD', ARGV[1] .. event_type, '*', 's', stream, 'g', first_s, 'v', v0_s, 'n', count)
    else
      local k = {}
      for r = 1, #runs, 2 do k[#k + 1] = fmt('%d-%d', runs[r], runs[r + 1]) end
      redis.call('XADD', ARGV[1] .. event_type, '*', 's', stream, 'g', first_s, 'v', v0_s, 'n', count,
        'k', table.concat(k, ','))
    end
  end
  writes[#writes + 1] = 'v'
  writes[#writes + 1] = fmt('%d', ver)
  for i = 1, #writes, CHUNK * 2 do
    redis.call('HSET', meta_key, unpack(writes, i, math.min(i + CHUNK * 2 - 1, #writes)))
  end
  return {'ok', ver, first + n - 1}
end

local replies = {}
local a0 = 3
for g = 1, tonumber(ARGV[2]) do
  replies[g] = append(KEYS[1 + g * 2], KEYS[2 + g * 2], a0)
  a0 = a0 + 4 + tonumber(ARGV[a0 + 3]) * 6
end
return replies
