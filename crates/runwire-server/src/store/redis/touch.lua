if redis.call('EXISTS', KEYS[1]) == 1 then
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
end
return 1
