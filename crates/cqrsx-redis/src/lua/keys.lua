-- The data keys of one subject (cqrsx_core::crypto): one hash per subject.
-- Fields: v:<n> wrapped key, m:<n> master key id, t:<n> created-at ms, latest, forgotten.
-- KEYS[1] the subject's hash. ARGV[1] the operation.
local key = KEYS[1]
local op = ARGV[1]

local function found(v)
  local wrapped = redis.call('HGET', key, 'v:' .. v)
  if not wrapped then
    return {'none'}
  end
  return {'ok', v, wrapped, redis.call('HGET', key, 'm:' .. v), redis.call('HGET', key, 't:' .. v)}
end

if op == 'create' then
  -- ARGV: version, wrapped, master key id, created-at ms
  if redis.call('HEXISTS', key, 'forgotten') == 1 then
    return {'forgotten'}
  end
  local v = ARGV[2]
  if redis.call('HSETNX', key, 'v:' .. v, ARGV[3]) == 1 then
    redis.call('HSET', key, 'm:' .. v, ARGV[4], 't:' .. v, ARGV[5])
    local latest = tonumber(redis.call('HGET', key, 'latest') or '0')
    if tonumber(v) > latest then
      redis.call('HSET', key, 'latest', v)
    end
  end
  return found(v)
elseif op == 'get' then
  return found(ARGV[2])
elseif op == 'latest' then
  local v = redis.call('HGET', key, 'latest')
  if not v then
    return {'none'}
  end
  return found(v)
elseif op == 'forget' then
  local had = redis.call('HEXISTS', key, 'latest')
  redis.call('DEL', key)
  redis.call('HSET', key, 'forgotten', '1')
  return {'ok', had}
elseif op == 'forgotten' then
  return {'ok', redis.call('HEXISTS', key, 'forgotten')}
end
return redis.error_reply('unknown key operation ' .. tostring(op))
