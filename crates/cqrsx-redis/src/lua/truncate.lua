-- Removes a stream's events below a version. KEYS: 1 events stream, 2 meta hash. ARGV: 1 version.
-- Reply: {'deleted'} | {'ok', removed}
if redis.call('HGET', KEYS[2], 'd') == '1' then return {'deleted'} end
return {'ok', redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1] .. '-0')}
