-- Reads a stream from a version. KEYS: 1 events stream, 2 meta hash. ARGV: 1 from version, 2 count.
-- Reply: {'deleted'} | {'ok', entries}
if redis.call('HGET', KEYS[2], 'd') == '1' then return {'deleted'} end
return {'ok', redis.call('XRANGE', KEYS[1], ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])}
