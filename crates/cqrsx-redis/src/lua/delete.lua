-- Deletes a stream, leaving a tombstone that refuses later appends.
-- KEYS: 1 commit index, 2 meta hash, 3 partition log, 4 partially truncated commits, 5 the
-- tiny streams' bucket, 6 the partition's stream catalogue (a stream never written enters it
-- with its tombstone).
-- ARGV: 1 expected version (as append).
-- Reply: {'deleted'} | {'conflict', actual} | {'ok'} | {'corrupt', what}
-- The stream's commits leave the log, so readers of the log and of type indexes skip them.
-- A tiny stream (see small.lua) moves into a meta hash of its own first.
if not redis.call('HGET', KEYS[2], 'v') then
  local _, _, _, _, grow = small_lib()
  if not grow(2, 5, 3) then return {'corrupt', 'tiny state'} end
end
local ver, dead = meta_version(redis.call('HGET', KEYS[2], 'v'))
if dead then return {'deleted'} end
if not ver then return {'corrupt', 'version'} end
local expected = tonumber(ARGV[1])
if (expected == -2 and ver ~= 0) or (expected == -3 and ver == 0) or (expected >= 0 and expected ~= ver) then
  return {'conflict', ver}
end
if ver <= SMALL then
  -- A small stream (see small.lua): its commits are in the meta hash.
  local inline = small_lib()
  local commits = inline(2)
  if not commits then return {'corrupt', 'commit'} end
  for _, c in ipairs(commits) do
    redis.call('XDEL', KEYS[3], c[2] .. '-0')
    redis.call('HDEL', KEYS[4], c[2])
  end
end
local start = '-'
while true do
  local commits = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 256)
  for _, c in ipairs(commits) do
    start = '(' .. c[1]
    redis.call('XDEL', KEYS[3], c[2][2] .. '-0')
    redis.call('HDEL', KEYS[4], c[2][2])
  end
  if #commits < 256 then break end
end
if ver == 0 then redis.call('ZADD', KEYS[6], 0, string.sub(KEYS[2], #KEYS[3])) end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[2], 'v', string.format('d%d', ver))
return {'ok'}
