local m, s = KEYS[1], KEYS[2]
local meta = redis.call('HMGET', m, 'epoch', 'head', 'term')
if meta[1] and not (tonumber(meta[2] or '0') > 0 and redis.call('EXISTS', s) == 0) then
  return {meta[1], meta[2] or '0', meta[3] or '0'}
end
if (not meta[1]) and redis.call('EXISTS', s) == 0 then
  return {derived(ARGV[3], tonumber(ARGV[2]), ARGV[4]), '0', '0', 'derived'}
end
redis.call('DEL', s, KEYS[3], KEYS[4])
redis.call('HSET', m, 'epoch', ARGV[1], 'head', '0', 'term', '0', 'snap', '0')
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', m, ttl) end
return {ARGV[1], '0', '0'}
