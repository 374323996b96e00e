-- Events of one type recorded at or after a time, in one partition, in commit order.
-- KEYS: 1 the type's index (a stream, one entry per commit: g first position, k offsets
-- `from-to,...` of this type when the commit mixes types), 2 partition log, 3 partially
-- truncated commits (hash: first position -> events removed).
-- ARGV: 1 since (ms), 2 most events.
-- Reply: {log entry, offsets `from-to,...` or '', index entry id, ...}, or {'corrupt', id}
-- for an entry this store did not write.
-- Commits gone from the log (deleted streams, truncation) are skipped.
local since = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local trimmed = redis.call('HLEN', KEYS[3]) > 0
local out = {}
local found = 0
-- An index entry's id is never earlier than its commit's recorded-at (both come from the
-- server's clock, the id after), so starting there misses nothing.
local start = ARGV[1] .. '-0'
while found < max do
  local entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 256)
  for _, entry in ipairs(entries) do
    start = '(' .. entry[1]
    if entry[2][1] ~= 'g' or not tonumber(entry[2][2]) then return {'corrupt', entry[1]} end
    local g, runs = entry[2][2], entry[2][4] or ''
    local e = redis.call('XRANGE', KEYS[2], g .. '-0', g .. '-0')
    local n = e[1] and count_of(e[1])
    if e[1] and not n then return {'corrupt', e[1][1]} end
    if e[1] and recorded_ms(e[1]) >= since then
      local k = 0
      if trimmed then k = tonumber(redis.call('HGET', KEYS[3], g)) or 0 end
      -- Offsets of this type still readable, as runs.
      local kept, count = {}, 0
      local function keep(a, b)
        if b >= math.max(a, k) then
          kept[#kept + 1] = string.format('%d-%d', math.max(a, k), b)
          count = count + b - math.max(a, k) + 1
        end
      end
      if runs == '' then
        keep(0, n - 1)
      else
        for a, b in string.gmatch(runs, '(%d+)-(%d+)') do keep(tonumber(a), tonumber(b)) end
      end
      if count > 0 then
        out[#out + 1] = e[1]
        out[#out + 1] = table.concat(kept, ',')
        out[#out + 1] = entry[1]
        found = found + count
        if found >= max then return out end
      end
    end
  end
  if #entries < 256 then break end
end
return out
