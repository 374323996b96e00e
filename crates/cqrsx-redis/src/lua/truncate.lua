-- Removes a stream's events below a version. KEYS: 1 commit index, 2 meta hash, 3 partition
-- log, 4 partially truncated commits (hash: first position -> events removed), 5 the tiny
-- streams' bucket. ARGV: 1 version.
-- Reply: {'deleted'} | {'ok', events removed} | {'corrupt', index entry id}
-- Commits wholly below the version leave the log; a commit cut in two keeps its entry and
-- records how many of its events are gone. Index entries stay (a retry of a truncated commit
-- is still recognised: a small stream's fields, and the meta hash for an entry moved out of
-- one ('k<version>'), keep the ids its log entry held); the meta hash remembers the cut for
-- stream reads.
-- A tiny stream (see small.lua) moves into a meta hash of its own first.
if not redis.call('HGET', KEYS[2], 'v') then
  local _, _, _, _, grow = small_lib()
  if not grow(2, 5, 3) then return {'corrupt', 'tiny state'} end
end
local meta = redis.call('HMGET', KEYS[2], 'v', 'tr')
if select(2, meta_version(meta[1])) then return {'deleted'} end
local fmt = string.format
local before = tonumber(ARGV[1])
-- Versions start at 1: nothing is below 0 or 1 (and '(0-0' is no stream id).
if before <= 1 then return {'ok', 0} end
local removed = 0
-- Cuts commit (v0, position g, n events) at `before`: drops its log entry once wholly below.
-- `keep`, when given, is called first for a commit about to leave the log.
local function cut_commit(v0, g, n, keep)
  if not redis.call('XRANGE', KEYS[3], g .. '-0', g .. '-0')[1] then return end
  local done = tonumber(redis.call('HGET', KEYS[4], g)) or 0
  local cut = math.min(before - v0, n)
  if cut <= done then return end
  removed = removed + cut - done
  if cut == n then
    if keep then keep() end
    redis.call('XDEL', KEYS[3], g .. '-0')
    redis.call('HDEL', KEYS[4], g)
  else
    redis.call('HSET', KEYS[4], g, fmt('%d', cut))
  end
end
local version = meta_version(meta[1])
if version and version <= SMALL then
  -- A small stream (see small.lua): a commit leaving the log keeps its ids in its field, all
  -- read before the first write. (Joined by `..`: Lua 5.1's format('%s') cuts a string short
  -- of 100 bytes at its first zero byte.)
  local inline, _, ids_of = small_lib()
  local commits, bad = inline(2)
  if not commits then return {'corrupt', bad} end
  local leaving = {}
  for _, c in ipairs(commits) do
    if c[1] + c[3] <= before and not c[4] and redis.call('XRANGE', KEYS[3], c[2] .. '-0', c[2] .. '-0')[1] then
      leaving[c[1]] = ids_of(c, 3)
      if not leaving[c[1]] then return {'corrupt', fmt('c%d', c[1])} end
    end
  end
  for _, c in ipairs(commits) do
    if c[1] >= before then break end
    cut_commit(c[1], c[2], c[3], function()
      redis.call('HSET', KEYS[2], fmt('c%d', c[1]), c[2] .. fmt(' %d ', c[3]) .. leaving[c[1]])
    end)
  end
else
  local start = '-'
  while true do
    local commits = redis.call('XRANGE', KEYS[1], start, fmt('(%d-0', before), 'COUNT', 256)
    for _, c in ipairs(commits) do
      start = '(' .. c[1]
      local v0 = tonumber(string.match(c[1], '^(%d+)'))
      if not commit_of(c) then return {'corrupt', c[1]} end
      local g, n = c[2][2], tonumber(c[2][4])
      local keep
      if c[2][5] ~= 'i' then
        -- An entry moved out of a small stream reads its ids in its log entry: they stay in
        -- the meta hash ('k<version>').
        keep = function()
          local _, _, ids_of = small_lib()
          local ids = ids_of({v0, g, n, false}, 3)
          if ids then redis.call('HSET', KEYS[2], fmt('k%d', v0), ids) end
        end
      end
      cut_commit(v0, g, n, keep)
    end
    if #commits < 256 then break end
  end
end
if before > (tonumber(meta[2]) or 1) then redis.call('HSET', KEYS[2], 'tr', fmt('%d', before)) end
return {'ok', removed}
