-- Reads one partition's log from a position, joining each matching commit to its events.
-- KEYS: 1 partition log (one entry per commit at its first position: s stream key, v first
-- version, n event count, a aggregate type). ARGV: 1 from position, 2 max events, 3 scan budget
-- (log entries), 4 key prefix of the partition ("{p:n}:"), 5 number of event types, then the
-- types, then the number of aggregate types, then those. Empty lists match everything.
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

-- The commit holding `from` may start before it.
local cursor = from
local prev = redis.call('XREVRANGE', KEYS[1], from .. '-0', '-', 'COUNT', 1)
if prev[1] then
  local first = tonumber(string.match(prev[1][1], '^(%d+)'))
  if first + tonumber(prev[1][2][6]) - 1 >= from then cursor = first end
end

while found < max and budget > 0 do
  local entries = redis.call('XRANGE', KEYS[1], cursor .. '-0', '+', 'COUNT', math.min(budget, 256))
  if #entries == 0 then break end
  for _, e in ipairs(entries) do
    local f = e[2]
    local first = tonumber(string.match(e[1], '^(%d+)'))
    local sk, v0, n = f[2], tonumber(f[4]), tonumber(f[6])
    local last = first + n - 1
    cursor = last + 1
    budget = budget - 1
    if na == 0 or aggs[f[8]] then
      if deleted[sk] == nil then deleted[sk] = redis.call('HGET', kp .. 'm:' .. sk, 'd') == '1' end
      if not deleted[sk] then
        local lo = math.max(from, first)
        local events = redis.call('XRANGE', kp .. 's:' .. sk, (v0 + lo - first) .. '-0', (v0 + n - 1) .. '-0')
        for _, ev in ipairs(events) do
          local pos = first + tonumber(string.match(ev[1], '^(%d+)')) - v0
          if nt == 0 or types[ev[2][4]] then
            if found >= max then return {pos, out} end
            out[#out + 1] = sk
            out[#out + 1] = ev
            found = found + 1
          end
          nextpos = pos + 1
        end
      end
    end
    if last + 1 > nextpos then nextpos = last + 1 end
    if found >= max or budget <= 0 then break end
  end
end
return {nextpos, out}
