-- Reads a stream's commits from a version. KEYS: 1 commit index, 2 meta hash, 3 partition log.
-- ARGV: 1 from version, 2 most events.
-- Reply: {'deleted'} | {'ok', truncated-before version, log entry, log entry, ...}
--      | {'corrupt', entry id} for an index entry this store did not write
-- Each log entry is a whole commit; the caller keeps its events from the version on. Commits
-- removed from the log by truncation are skipped.
local meta = redis.call('HMGET', KEYS[2], 'v', 'tr')
if select(2, meta_version(meta[1])) then return {'deleted'} end
local fmt = string.format
local from = math.max(tonumber(ARGV[1]), tonumber(meta[2]) or 1)
local want = tonumber(ARGV[2])
local out = {'ok', fmt('%d', from)}
-- The commit holding `from` may start before it.
local start = fmt('%d-0', from)
local prev = redis.call('XREVRANGE', KEYS[1], start, '-', 'COUNT', 1)
if prev[1] then
  local _, n = commit_of(prev[1])
  if not n then return {'corrupt', prev[1][1]} end
  local v0 = tonumber(string.match(prev[1][1], '^(%d+)'))
  if v0 + n - 1 >= from then start = prev[1][1] end
end
local found = 0
while found < want do
  local commits = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 64)
  if #commits == 0 then break end
  for _, c in ipairs(commits) do
    local v0 = tonumber(string.match(c[1], '^(%d+)'))
    local _, n = commit_of(c)
    if not n then return {'corrupt', c[1]} end
    local entry = redis.call('XRANGE', KEYS[3], c[2][2] .. '-0', c[2][2] .. '-0')
    if entry[1] then
      out[#out + 1] = entry[1]
      found = found + math.min(n, v0 + n - from)
      if found >= want then break end
    end
    start = '(' .. c[1]
  end
  if #commits < 64 then break end
end
return out
