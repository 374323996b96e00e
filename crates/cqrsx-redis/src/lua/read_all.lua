-- Reads one partition's log from a position. KEYS: 1 partition log, 2 partially truncated
-- commits (hash: first position -> events removed). ARGV: 1 from position, 2 most events,
-- 3 scan budget (log entries), 4 number of event types, then the types, then the number of
-- aggregate types, then those. Empty lists match everything.
-- Reply: {next position, {log entry, first offset, last offset, ...}}: each returned commit
-- with the range of its events (0-based) in the page; the caller keeps those that match the
-- type filter, or {'corrupt', entry id} for an entry this store did not write. Deleted
-- streams' commits are gone from the log; truncated events are skipped.
local fmt = string.format
local from = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local nt = tonumber(ARGV[4])
local types = {}
for i = 1, nt do types[ARGV[4 + i]] = true end
local na = tonumber(ARGV[5 + nt])
local aggs = {}
for i = 1, na do aggs[ARGV[5 + nt + i]] = true end
local trimmed = redis.call('HLEN', KEYS[2]) > 0
local out = {}
local found = 0
local nextpos = from

-- The commit holding `from` may start before it.
local cursor = fmt('%d-0', from)
local prev = redis.call('XREVRANGE', KEYS[1], cursor, '-', 'COUNT', 1)
if prev[1] then
  local n = count_of(prev[1])
  if not n then return {'corrupt', prev[1][1]} end
  local first = tonumber(string.match(prev[1][1], '^(%d+)'))
  if first + n - 1 >= from then cursor = prev[1][1] end
end

-- The offsets in [lo, hi] whose event type passes the filter, for commits that mix types.
local function matching(t, lo, hi)
  local list, i = {}, 0
  for name in string.gmatch(t .. '\n', '([^\n]*)\n') do
    if i >= lo and i <= hi and types[name] then list[#list + 1] = i end
    i = i + 1
  end
  return list
end

while found < max and budget > 0 do
  local entries = redis.call('XRANGE', KEYS[1], cursor, '+', 'COUNT', math.min(budget, 256))
  if #entries == 0 then break end
  for _, e in ipairs(entries) do
    local f = e[2]
    local first_s = string.match(e[1], '^(%d+)')
    local first = tonumber(first_s)
    local n = count_of(e)
    if not n then return {'corrupt', e[1]} end
    local last = first + n - 1
    cursor = '(' .. e[1]
    budget = budget - 1
    local lo, hi = math.max(from, first) - first, n - 1
    if trimmed then
      local k = tonumber(redis.call('HGET', KEYS[2], first_s)) or 0
      if k > lo then lo = k end
    end
    local taken, take_hi, complete = 0, hi, true
    if lo <= hi and (na == 0 or aggs[f[8]]) then
      local room = max - found
      local single = not string.find(f[12], '\n', 1, true)
      if nt == 0 or (single and types[f[12]]) then
        if hi - lo + 1 <= room then
          taken = hi - lo + 1
        else
          taken, take_hi, complete = room, lo + room - 1, false
        end
      elseif not single then
        local list = matching(f[12], lo, hi)
        if #list <= room then
          taken, take_hi = #list, list[#list] or hi
        else
          taken, take_hi, complete = room, list[room], false
        end
      end
    end
    if taken > 0 then
      out[#out + 1] = e
      out[#out + 1] = lo
      out[#out + 1] = take_hi
      found = found + taken
    end
    if complete then nextpos = last + 1 else nextpos = first + take_hi + 1 end
    if found >= max then return {nextpos, out} end
  end
end
if nextpos < from then nextpos = from end
return {nextpos, out}
