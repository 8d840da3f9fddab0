local meta = redis.call('HMGET', KEYS[1], 'epoch', 'head', 'snap')
if meta[1] ~= ARGV[1] then return 0 end
local head = tonumber(meta[2] or '0')
local snap = tonumber(meta[3] or '0')
local asof = tonumber(ARGV[2])
if asof > snap and asof <= head then
  redis.call('SET', KEYS[2], ARGV[3])
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
  redis.call('HSET', KEYS[1], 'snap', ARGV[2])
  snap = asof
end
local retain = tonumber(ARGV[4])
if retain > 0 then
  local cut = math.min(snap, head - retain)
  if cut > 0 then
    local old = redis.call('XRANGE', KEYS[3], '-', string.format('%d', cut) .. '-0', 'COUNT', ARGV[5])
    local last = nil
    for _, e in ipairs(old) do
      local f = e[2]
      for j = 1, #f, 2 do
        if f[j] == 'k' then redis.call('HDEL', KEYS[4], f[j + 1]) end
      end
      last = e[1]
    end
    if last then
      local dash = string.find(last, '-', 1, true)
      local seq = tonumber(string.sub(last, 1, dash - 1))
      redis.call('XTRIM', KEYS[3], 'MINID', string.format('%d', seq + 1) .. '-0')
    end
  end
end
return 1
