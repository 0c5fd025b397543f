-- Read what a resume replays: at most `count` events per channel and `budget` bytes in all,
-- the newest ones; any event after the id that is not replayed makes it incomplete.
--
-- KEYS: counter, clock, then for each channel its history stream and its id index.
-- ARGV: the last event id, `1` if it is a sequence number, count (the history length),
--       budget (bytes), history expiry (ms).
-- Returns `{snapshot, complete, after, messages...}`; `after` is -1 for an unknown id.
--
-- Bounded: an id is looked up in each channel's index (one HGET), never by scanning the
-- histories; each stream is read from its end, at most `count + 1` entries.

-- As in publish.lua.
local function floor_at(clock, cutoff, default)
  local first = redis.call('XRANGE', clock, string.format('%d', cutoff), '+', 'COUNT', 1)
  if #first == 0 then return default end
  return tonumber(first[1][2][2])
end

local function seq_of(entry)
  return tonumber(string.match(entry[1], '^(%d+)'))
end

local snapshot = tonumber(redis.call('GET', KEYS[1]) or '0')
local id = ARGV[1]
local after = -1
if ARGV[2] == '1' then
  local n = tonumber(id)
  if n <= snapshot then after = n end
else
  for i = 3, #KEYS, 2 do
    local seq = tonumber(redis.call('HGET', KEYS[i + 1], id) or '-1')
    if seq > after then after = seq end
  end
end
if after < 0 then return {snapshot, 0, -1} end

local complete = 1
local count, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
local start = string.format('%d-0', after + 1)
local floor = nil
local lists = {}
for i = 3, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local info = redis.call('XINFO', 'STREAM', KEYS[i])
    for j = 1, #info, 2 do
      if info[j] == 'max-deleted-entry-id' then
        if tonumber(string.match(info[j + 1], '^(%d+)')) > after then complete = 0 end
      end
    end
    local entries = redis.call('XREVRANGE', KEYS[i], '+', start, 'COUNT', count + 1)
    if #entries > count then
      complete = 0
      entries[#entries] = nil
    end
    if #entries > 0 then table.insert(lists, entries) end
  else
    -- No stream: nothing was published on this channel for the expiry, or ever. Events up to
    -- the counter of then may have been, and are gone.
    if not floor then
      local now = redis.call('TIME')
      local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
      floor = floor_at(KEYS[2], ms - tonumber(ARGV[5]), snapshot)
    end
    if floor > after then complete = 0 end
  end
end

-- Newest first over all channels, while the budget lasts.
local out = {snapshot, complete, after}
local pos = {}
for k = 1, #lists do pos[k] = 1 end
while true do
  local best, best_seq = nil, -1
  for k = 1, #lists do
    local e = lists[k][pos[k]]
    if e and seq_of(e) > best_seq then best, best_seq = k, seq_of(e) end
  end
  if not best then break end
  local f = lists[best][pos[best]][2]
  local m = nil
  for j = 1, #f, 2 do
    if f[j] == 'm' then m = f[j + 1] end
  end
  if m then
    if #m > budget then
      out[2] = 0
      break
    end
    budget = budget - #m
    table.insert(out, m)
  end
  pos[best] = pos[best] + 1
end
return out
