-- Events of one type recorded at or after a time, in one partition.
-- KEYS: 1 type index (sorted set: score = recorded-at µs, member = position), 2 partition log
-- (one entry per commit at its first position: s stream key, v first version, n, a).
-- ARGV: 1 since (µs), 2 max events, 3 key prefix of the partition.
-- Reply: {stream key, entry, recorded-at µs, ...}
local since = ARGV[1]
local max = tonumber(ARGV[2])
local kp = ARGV[3]
local out = {}
local found = 0
local offset = 0
while found < max do
  local members = redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf', 'WITHSCORES', 'LIMIT', offset, 256)
  if #members == 0 then break end
  offset = offset + #members / 2
  for m = 1, #members, 2 do
    local pos = tonumber(members[m])
    -- The commit holding the position: the log entry at or before it.
    local entry = redis.call('XREVRANGE', KEYS[2], pos .. '-0', '-', 'COUNT', 1)
    if entry[1] then
      local f = entry[1][2]
      local sk = f[2]
      local version = tonumber(f[4]) + pos - tonumber(string.match(entry[1][1], '^(%d+)'))
      if redis.call('HGET', kp .. 'm:' .. sk, 'd') ~= '1' then
        local ev = redis.call('XRANGE', kp .. 's:' .. sk, version .. '-0', version .. '-0')
        if ev[1] then
          out[#out + 1] = sk
          out[#out + 1] = ev[1]
          out[#out + 1] = members[m + 1]
          found = found + 1
          if found >= max then break end
        end
      end
    end
  end
end
return out
