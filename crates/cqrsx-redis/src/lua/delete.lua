-- Deletes a stream, leaving a tombstone that refuses later appends.
-- KEYS: 1 events stream, 2 meta hash (with the event ids). ARGV: 1 expected version (as append).
-- Reply: {'deleted'} | {'conflict', actual} | {'ok'}
local meta = redis.call('HMGET', KEYS[2], 'v', 'd')
local ver = tonumber(meta[1]) or 0
if meta[2] == '1' then return {'deleted'} end
local expected = tonumber(ARGV[1])
if (expected == -2 and ver ~= 0) or (expected == -3 and ver == 0) or (expected >= 0 and expected ~= ver) then
  return {'conflict', ver}
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[2], 'v', ver, 'd', '1')
return {'ok'}
