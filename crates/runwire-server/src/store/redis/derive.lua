local function derived(seed, ttl, run)
  local period = 0
  if ttl > 0 then
    local t = redis.call('TIME')
    period = math.floor((tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) / ttl)
  end
  return string.sub(redis.sha1hex(seed .. ':' .. string.format('%d', period) .. '\n' .. run), 1, 16)
end
