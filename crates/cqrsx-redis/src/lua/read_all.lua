-- Reads one partition's log from a position, joining each matching entry to its event.
-- KEYS: 1 partition log. ARGV: 1 from position, 2 max events, 3 scan budget, 4 key prefix of
-- the partition ("{p:n}:"), 5 number of event types, then the types, then the number of
-- aggregate types, then those. Empty lists match everything.
-- Reply: {next position, {stream key, fields, stream key, fields, ...}}
-- Truncated and deleted events are skipped; the next position still moves past them.
local from = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local kp = ARGV[4]
local nt = tonumber(ARGV[5])
local types = {}
for i = 1, nt do types[ARGV[5 + i]] = true end
local na = tonumber(ARGV[6 + nt])
local aggs = {}
for i = 1, na do aggs[ARGV[6 + nt + i]] = true end
local out = {}
local found = 0
local nextpos = from
local deleted = {}
while found < max and budget > 0 do
  local entries = redis.call('XRANGE', KEYS[1], nextpos .. '-0', '+', 'COUNT', math.min(budget, 256))
  if #entries == 0 then break end
  for _, e in ipairs(entries) do
    local f = e[2]
    nextpos = tonumber(string.match(e[1], '^(%d+)')) + 1
    budget = budget - 1
    if (nt == 0 or types[f[8]]) and (na == 0 or aggs[f[6]]) then
      local sk = f[2]
      if deleted[sk] == nil then deleted[sk] = redis.call('HGET', kp .. 'm:' .. sk, 'd') == '1' end
      if not deleted[sk] then
        local ev = redis.call('XRANGE', kp .. 's:' .. sk, f[4] .. '-0', f[4] .. '-0')
        if ev[1] then
          out[#out + 1] = sk
          out[#out + 1] = ev[1]
          found = found + 1
        end
      end
    end
    if found >= max then break end
  end
end
return {nextpos, out}
