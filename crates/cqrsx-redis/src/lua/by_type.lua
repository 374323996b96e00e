-- Events of one type recorded at or after a time, in one partition, in commit order.
-- KEYS: 1 type index (a stream, one entry per commit: s stream key, g first position,
-- v first version, n events in the commit, k runs `from-to,...` of this type's offsets if not all).
-- ARGV: 1 since (ms), 2 max events, 3 key prefix of the partition.
-- Reply: {stream key, entry, index entry id, ...}
local since = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local kp = ARGV[3]
local out = {}
local found = 0
local deleted = {}
-- An index entry's id is never earlier than the commit's recorded-at (ids are monotonic and
-- taken after it), so starting there misses nothing; recorded-at is checked per event.
local start = ARGV[1] .. '-0'
local function recorded_at(fields)
  for j = 1, #fields, 2 do
    if fields[j] == 'r' then return tonumber(fields[j + 1]) end
  end
  return 0
end
while found < max do
  local entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 256)
  for _, entry in ipairs(entries) do
    start = '(' .. entry[1]
    local f = {}
    for j = 1, #entry[2], 2 do f[entry[2][j]] = entry[2][j + 1] end
    local sk = f['s']
    if deleted[sk] == nil then
      deleted[sk] = redis.call('HGET', kp .. 'm:' .. sk, 'd') == '1'
    end
    if not deleted[sk] then
      local offsets = {}
      if f['k'] then
        for from, to in string.gmatch(f['k'], '(%d+)-(%d+)') do
          for k = tonumber(from), tonumber(to) do offsets[#offsets + 1] = k end
        end
      else
        for k = 0, tonumber(f['n']) - 1 do offsets[#offsets + 1] = k end
      end
      local v0 = tonumber(f['v'])
      for _, k in ipairs(offsets) do
        local version = v0 + k
        local ev = redis.call('XRANGE', kp .. 's:' .. sk, version .. '-0', version .. '-0')
        if ev[1] and recorded_at(ev[1][2]) >= since then
          out[#out + 1] = sk
          out[#out + 1] = ev[1]
          out[#out + 1] = entry[1]
          found = found + 1
          if found >= max then return out end
        end
      end
    end
  end
  if #entries < 256 then break end
end
return out
