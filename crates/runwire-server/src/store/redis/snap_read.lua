local meta = redis.call('HMGET', KEYS[1], 'epoch', 'head', 'snap')
if not meta[1] then return {'none'} end
local head = tonumber(meta[2] or '0')
local snap = tonumber(meta[3] or '0')
local have = tonumber(ARGV[2])
local from, mode, json
if ARGV[1] == meta[1] and have >= snap and have <= head then
  from = have; mode = 'cached'; json = ''
else
  from = snap; mode = 'stored'; json = redis.call('GET', KEYS[3]) or ''
end
local evs = {}
if from < head then
  evs = redis.call('XRANGE', KEYS[2], string.format('%d', from + 1) .. '-0', string.format('%d', head) .. '-0', 'COUNT', ARGV[3])
end
return {mode, meta[1], string.format('%d', head), string.format('%d', from), json, evs}
