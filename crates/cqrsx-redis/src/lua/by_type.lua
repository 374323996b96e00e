-- Events of one type recorded at or after a time, in one partition.
-- KEYS: 1 type index (sorted set: score = recorded-at µs, member = position), 2 partition log.
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
    local pos = members[m]
    local entry = redis.call('XRANGE', KEYS[2], pos .. '-0', pos .. '-0')
    if entry[1] then
      local f = entry[1][2]
      local sk = f[2]
      if redis.call('HGET', kp .. 'm:' .. sk, 'd') ~= '1' then
        local ev = redis.call('XRANGE', kp .. 's:' .. sk, f[4] .. '-0', f[4] .. '-0')
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
