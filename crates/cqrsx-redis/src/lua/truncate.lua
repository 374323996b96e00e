-- Removes a stream's events below a version. KEYS: 1 commit index, 2 meta hash, 3 partition
-- log, 4 partially truncated commits (hash: first position -> events removed). ARGV: 1 version.
-- Reply: {'deleted'} | {'ok', events removed} | {'corrupt', index entry id}
-- Commits wholly below the version leave the log; a commit cut in two keeps its entry and
-- records how many of its events are gone. Index entries stay (a retry of a truncated commit
-- is still recognised); the meta hash remembers the cut for stream reads.
local meta = redis.call('HMGET', KEYS[2], 'v', 'tr')
if select(2, meta_version(meta[1])) then return {'deleted'} end
local fmt = string.format
local before = tonumber(ARGV[1])
-- Versions start at 1: nothing is below 0 or 1 (and '(0-0' is no stream id).
if before <= 1 then return {'ok', 0} end
local removed = 0
local start = '-'
while true do
  local commits = redis.call('XRANGE', KEYS[1], start, fmt('(%d-0', before), 'COUNT', 256)
  for _, c in ipairs(commits) do
    start = '(' .. c[1]
    local v0 = tonumber(string.match(c[1], '^(%d+)'))
    if not commit_of(c) then return {'corrupt', c[1]} end
    local g, n = c[2][2], tonumber(c[2][4])
    if redis.call('XRANGE', KEYS[3], g .. '-0', g .. '-0')[1] then
      local done = tonumber(redis.call('HGET', KEYS[4], g)) or 0
      local cut = math.min(before - v0, n)
      if cut > done then
        removed = removed + cut - done
        if cut == n then
          redis.call('XDEL', KEYS[3], g .. '-0')
          redis.call('HDEL', KEYS[4], g)
        else
          redis.call('HSET', KEYS[4], g, fmt('%d', cut))
        end
      end
    end
  end
  if #commits < 256 then break end
end
if before > (tonumber(meta[2]) or 1) then redis.call('HSET', KEYS[2], 'tr', fmt('%d', before)) end
return {'ok', removed}
