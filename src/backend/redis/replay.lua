-- Read what a resume replays.
-- KEYS: counter, then the history streams. ARGV: the last event id, `1` if it is a sequence
-- number. Returns `{snapshot, complete, after, messages...}`; `after` is -1 for an unknown id.
local snapshot = tonumber(redis.call('GET', KEYS[1]) or '0')
local id = ARGV[1]
local after = -1
if ARGV[2] == '1' then
  local n = tonumber(id)
  if n <= snapshot then after = n end
else
  for i = 2, #KEYS do
    for _, e in ipairs(redis.call('XREVRANGE', KEYS[i], '+', '-')) do
      local f = e[2]
      for j = 1, #f, 2 do
        if f[j] == 'i' and f[j + 1] == id then
          local seq = tonumber(string.match(e[1], '^(%d+)'))
          if seq > after then after = seq end
        end
      end
    end
  end
end
if after < 0 then return {snapshot, 0, -1} end
local out = {snapshot, 1, after}
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local info = redis.call('XINFO', 'STREAM', KEYS[i])
    for j = 1, #info, 2 do
      if info[j] == 'max-deleted-entry-id' then
        if tonumber(string.match(info[j + 1], '^(%d+)')) > after then out[2] = 0 end
      end
    end
    for _, e in ipairs(redis.call('XRANGE', KEYS[i], string.format('%d', after + 1) .. '-0', '+')) do
      local f = e[2]
      for j = 1, #f, 2 do
        if f[j] == 'm' then table.insert(out, f[j + 1]) end
      end
    end
  end
end
return out
