-- Snapshot operations on one stream. KEYS: 1 version index (sorted set; one hash per snapshot
-- at "<index>:<version>"). ARGV: 1 operation, then its arguments.
--   save, version, content type, schema version, payload, created-at  -> 'ok'
--   latest, max version ('+inf' for none)  -> {} | {version, content type, schema version, payload, created-at}
--   list  -> {version, content type, schema version, bytes, created-at, ...} newest first
--   prune, keep  -> removed count
--   clear  -> removed count
local idx = KEYS[1]
local op = ARGV[1]
local function fields(v)
  local h = redis.call('HMGET', idx .. ':' .. v, 'c', 'sv', 'p', 't')
  return h
end
if op == 'save' then
  redis.call('HSET', idx .. ':' .. ARGV[2], 'c', ARGV[3], 'sv', ARGV[4], 'p', ARGV[5], 't', ARGV[6])
  redis.call('ZADD', idx, ARGV[2], ARGV[2])
  return 'ok'
elseif op == 'latest' then
  local v = redis.call('ZREVRANGEBYSCORE', idx, ARGV[2], '-inf', 'LIMIT', 0, 1)
  if #v == 0 then return {} end
  local h = fields(v[1])
  return {v[1], h[1], h[2], h[3], h[4]}
elseif op == 'list' then
  local out = {}
  for _, v in ipairs(redis.call('ZREVRANGE', idx, 0, -1)) do
    local h = fields(v)
    out[#out + 1] = v
    out[#out + 1] = h[1]
    out[#out + 1] = h[2]
    out[#out + 1] = redis.call('HSTRLEN', idx .. ':' .. v, 'p')
    out[#out + 1] = h[4]
  end
  return out
elseif op == 'prune' or op == 'clear' then
  local keep = 0
  if op == 'prune' then keep = tonumber(ARGV[2]) end
  local doomed = redis.call('ZRANGE', idx, 0, -(keep + 1))
  for _, v in ipairs(doomed) do
    redis.call('DEL', idx .. ':' .. v)
    redis.call('ZREM', idx, v)
  end
  return #doomed
end
return redis.error_reply('unknown snapshot operation ' .. op)
