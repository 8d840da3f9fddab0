local m, s, idem, snapk = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ttl = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local maxseq = 9007199254740991
local meta = redis.call('HMGET', m, 'epoch', 'head', 'term', 'snap')
local epoch = meta[1]
local head = tonumber(meta[2] or '0')
local term = meta[3] == '1'
local snap = tonumber(meta[4] or '0')
local created = false
if not epoch then
  if redis.call('EXISTS', s) == 1 then
    epoch = ARGV[1]
  elseif ARGV[6] ~= '1' then
    return {'new'}
  else
    epoch = derived(ARGV[4], ttl, ARGV[5])
  end
  head = 0; term = false; snap = 0; created = true
elseif head > 0 and redis.call('EXISTS', s) == 0 then
  epoch = ARGV[1]; head = 0; term = false; snap = 0; created = true
end
local res = {}
local seen = {}
local nxt = head
for i = 0, n - 1 do
  local b = 8 + i * 6
  local key, fp, eid = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local dup = nil
  if key ~= '' then
    dup = seen[key]
    if (not dup) and (not created) then
      local raw = redis.call('HGET', idem, key)
      if raw then
        local a = string.find(raw, ' ', 1, true)
        local c = string.find(raw, ' ', a + 1, true)
        dup = {string.sub(raw, 1, a - 1), string.sub(raw, a + 1, c - 1), string.sub(raw, c + 1)}
      end
    end
    if dup and dup[3] ~= fp then
      return {'conflict', tostring(i), key, dup[1]}
    end
  end
  if dup then
    res[i + 1] = {'1', dup[1], dup[2]}
  else
    if term then return {'terminal', tostring(i)} end
    if nxt >= maxseq then return {'exhausted', tostring(i)} end
    nxt = nxt + 1
    local sq = string.format('%d', nxt)
    if string.sub(ARGV[b + 5], 2, 2) == '1' then term = true end
    if key ~= '' then seen[key] = {sq, eid, fp} end
    res[i + 1] = {'0', sq, eid}
  end
end
if nxt > head then
  if created then redis.call('DEL', s, idem, snapk) end
  for i = 0, n - 1 do
    local r = res[i + 1]
    if r[1] == '0' then
      local b = 8 + i * 6
      local json = ARGV[b + 3] .. r[2] .. ARGV[b + 4]
      local flush = string.sub(ARGV[b + 5], 1, 1)
      if ARGV[b] ~= '' then
        redis.call('XADD', s, r[2] .. '-0', 'j', json, 'f', flush, 'k', ARGV[b])
        redis.call('HSET', idem, ARGV[b], r[2] .. ' ' .. r[3] .. ' ' .. ARGV[b + 1])
      else
        redis.call('XADD', s, r[2] .. '-0', 'j', json, 'f', flush)
      end
    end
  end
  redis.call('HSET', m, 'epoch', epoch, 'head', string.format('%d', nxt), 'term', term and '1' or '0', 'snap', string.format('%d', snap))
  if ttl > 0 then
    redis.call('PEXPIRE', m, ttl); redis.call('PEXPIRE', s, ttl)
    redis.call('PEXPIRE', idem, ttl); redis.call('PEXPIRE', snapk, ttl)
  end
  if ARGV[7] ~= '' then redis.call('SPUBLISH', ARGV[7], string.format('%d', nxt)) end
end
local out = {'ok', epoch, string.format('%d', nxt), string.format('%d', snap)}
for i = 1, n do
  out[#out + 1] = res[i][1]; out[#out + 1] = res[i][2]; out[#out + 1] = res[i][3]
end
return out
