-- Reads a stream's commits from a version. KEYS: 1 commit index, 2 meta hash, 3 partition log,
-- 4 (unused), 5 the tiny streams' bucket. ARGV: 1 from version, 2 most events.
-- Reply: {'deleted'} | {'ok', read-from version, stream version, log entry, log entry, ...}
--      | {'corrupt', what} for stored data this store did not write: an index entry it does
--        not know or that disagrees with its log entry, a version that is not one, a commit
--        whose log entry is gone
-- Each log entry is a whole commit; the caller keeps its events from the version on, and
-- checks that they run without a gap up to the stream's version. Commits removed from the log
-- by truncation lie below the read-from version and are not visited.
local meta = redis.call('HMGET', KEYS[2], 'v', 'tr')
local commits, bad
if not meta[1] then
  -- A tiny stream (see small.lua): one commit, versions 1 to its version.
  local _, _, _, tiny = small_lib()
  local high, v, g = tiny(2, 5, 3)
  if high == false then return {'corrupt', 'its tiny state is not one this store wrote'} end
  if high then
    meta[1] = v .. high
    commits = {{1, g, tonumber(v), false}}
  end
end
local version, dead = meta_version(meta[1])
if dead then return {'deleted'} end
local fmt = string.format
if not version or version > 9007199254740991 then
  return {'corrupt', 'its version field is not a version'}
end
local from = math.max(tonumber(ARGV[1]), tonumber(meta[2]) or 1)
local want = tonumber(ARGV[2])
local out = {'ok', fmt('%d', from), fmt('%d', version)}
local found = 0

if version <= SMALL then
  -- A small stream: its commits are in its meta hash (see small.lua).
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return {'corrupt', fmt('it has a commit index stream, though at version %d its commits sit in its meta hash', version)}
  end
  local inline, entry_of = small_lib()
  if not commits then commits, bad = inline(2) end
  if not commits then
    return {'corrupt', fmt('its meta hash field %q is not a commit this store wrote', bad)}
  end
  for _, c in ipairs(commits) do
    if found >= want then break end
    if c[1] + c[3] - 1 >= from then
      local e, why = entry_of(c, 3)
      if not e then return {'corrupt', why} end
      out[#out + 1] = e
      found = found + math.min(c[3], c[1] + c[3] - from)
    end
  end
  return out
end

local function foreign(id)
  return {'corrupt', fmt('its commit index holds %q, not an entry this store wrote', id)}
end
-- The commit holding `from` may start before it.
local start = fmt('%d-0', from)
local prev = redis.call('XREVRANGE', KEYS[1], start, '-', 'COUNT', 1)
if prev[1] then
  local _, n = commit_of(prev[1])
  if not n then return foreign(prev[1][1]) end
  local v0 = tonumber(string.match(prev[1][1], '^(%d+)'))
  if v0 + n - 1 >= from then start = prev[1][1] end
end
while found < want do
  local commits = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 64)
  if #commits == 0 then break end
  for _, c in ipairs(commits) do
    local v0 = tonumber(string.match(c[1], '^(%d+)'))
    local _, n = commit_of(c)
    if not n then return foreign(c[1]) end
    local entry = redis.call('XRANGE', KEYS[3], c[2][2] .. '-0', c[2][2] .. '-0')
    if not entry[1] then
      return {'corrupt', fmt('the log entry %s-0 of its commit at version %d is missing', c[2][2], v0)}
    end
    local f = entry[1][2]
    if f[3] ~= 'v' or tonumber(f[4]) ~= v0 or f[5] ~= 'n' or tonumber(f[6]) ~= n then
      return {'corrupt', fmt('its commit index entry %s disagrees with the log entry %s-0 it points to', c[1], c[2][2])}
    end
    out[#out + 1] = entry[1]
    found = found + math.min(n, v0 + n - from)
    if found >= want then break end
    start = '(' .. c[1]
  end
  if #commits < 64 then break end
end
return out
