-- Snapshot operations on one stream. KEYS: 1 version index (sorted set of versions), 2 the
-- snapshots (hash: <version>:c content type, <version>:sv schema version, <version>:t
-- created-at, <version>:p payload). ARGV: 1 operation, then its arguments.
--   save, version, content type, schema version, payload, created-at  -> 'ok'
--   latest, max version ('+inf' for none)  -> {} | {version, content type, schema version, payload, created-at}
--   list  -> {version, content type, schema version, bytes, created-at, ...} newest first
--   prune, keep  -> removed count
--   clear  -> removed count
local op = ARGV[1]
local function fields(v)
  return redis.call('HMGET', KEYS[2], v .. ':c', v .. ':sv', v .. ':p', v .. ':t')
end
if op == 'save' then
  local v = ARGV[2]
  redis.call('HSET', KEYS[2], v .. ':c', ARGV[3], v .. ':sv', ARGV[4], v .. ':p', ARGV[5], v .. ':t', ARGV[6])
  redis.call('ZADD', KEYS[1], v, v)
  return 'ok'
elseif op == 'latest' then
  local v = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[2], '-inf', 'LIMIT', 0, 1)
  if #v == 0 then return {} end
  local h = fields(v[1])
  return {v[1], h[1], h[2], h[3], h[4]}
elseif op == 'list' then
  local out = {}
  for _, v in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, -1)) do
    local h = fields(v)
    out[#out + 1] = v
    out[#out + 1] = h[1]
    out[#out + 1] = h[2]
    out[#out + 1] = redis.call('HSTRLEN', KEYS[2], v .. ':p')
    out[#out + 1] = h[4]
  end
  return out
elseif op == 'prune' or op == 'clear' then
  local keep = 0
  if op == 'prune' then keep = tonumber(ARGV[2]) end
  local doomed = redis.call('ZRANGE', KEYS[1], 0, -(keep + 1))
  for _, v in ipairs(doomed) do
    redis.call('HDEL', KEYS[2], v .. ':c', v .. ':sv', v .. ':p', v .. ':t')
    redis.call('ZREM', KEYS[1], v)
  end
  return #doomed
end
return redis.error_reply('unknown snapshot operation ' .. op)
