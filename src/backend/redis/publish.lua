-- Publish one event to one or more channels: take the next sequence number, store the event in
-- each channel's history, publish it on each; all at once, so an event is stored and sent
-- everywhere, or nowhere. One number for all: a subscriber of several of the channels gets
-- the copies one after the other, and its broker takes them as one event.
--
-- KEYS: counter, clock, repeat key, then for each channel its history stream, its pub/sub
--       channel and its id index (hash).
-- ARGV: the encoded event without its `id:` line and final blank line, the publisher's id,
--       `g` (given) or `a` (assign), history length, the highest sequence number this instance
--       has seen (see restore.lua), history expiry (ms), repeat window (ms), clock step (ms),
--       and the command that publishes (`PUBLISH` when absent; `SPUBLISH` on a cluster, whose
--       keys and sharded channel all carry the channel's hash tag).
-- The message is `{seq}\n{g|a}{id}\n{head}` (wire.rs reads it and adds the `id:` line), stored
-- and published as one. Returns `{id, seq, repeat}`; `repeat` is 1 when nothing was published.

-- The counter value at the first clock sample at or after `cutoff` (ms), else `default`: no
-- event published before `cutoff` has a higher sequence number.
local function floor_at(clock, cutoff, default)
  local first = redis.call('XRANGE', clock, string.format('%d', cutoff), '+', 'COUNT', 1)
  if #first == 0 then return default end
  return tonumber(first[1][2][2])
end

local head, given = ARGV[1], ARGV[3] == 'g'
local digest
if given then
  -- The same id and the same bytes on this channel within the window: a retry of a publish
  -- whose answer was lost. Answer as the first time, and publish nothing.
  digest = redis.sha1hex(head)
  local first = redis.call('GET', KEYS[3])
  if first then
    local seq, was = string.match(first, '^(%d+) (%x+)$')
    if was == digest then return {ARGV[2], tonumber(seq), 1} end
  end
end

if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[5]) then
  redis.call('SET', KEYS[1], ARGV[5])
end
local seq = redis.call('INCR', KEYS[1])
local sid = string.format('%d', seq)
local id = ARGV[2]
if not given then id = sid end
local msg = sid .. '\n' .. ARGV[3] .. id .. '\n' .. head
local n = tonumber(ARGV[4])
if n > 0 then
  local ttl, step = tonumber(ARGV[6]), tonumber(ARGV[8])
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  for c = 4, #KEYS, 3 do
    local history, ids = KEYS[c], KEYS[c + 2]
    -- A new stream (or one that expired): events of this channel up to the floor may have
    -- been published and are gone, so replay.lua reports a gap for a resume from before it.
    local floor = nil
    if redis.call('EXISTS', history) == 0 then floor = floor_at(KEYS[2], ms - ttl, seq - 1) end
    redis.call('XADD', history, sid .. '-0', 'm', msg, 'i', id)
    if floor and floor > 0 then
      redis.call('XSETID', history, sid .. '-0', 'MAXDELETEDID', string.format('%d-0', floor))
    end
    if given then redis.call('HSET', ids, id, sid) end
    -- Trimming with MAXLEN does not move the stream's `max-deleted-entry-id` (Redis 7.0),
    -- which replay.lua reads to tell a gap: so trim by hand and record the last entry dropped.
    -- The index forgets the ids of the events dropped, unless a later event took the id.
    local len = redis.call('XLEN', history)
    if len > n then
      local dropped = redis.call('XRANGE', history, '-', '+', 'COUNT', len - n)
      redis.call('XTRIM', history, 'MAXLEN', n)
      redis.call('XSETID', history, sid .. '-0', 'MAXDELETEDID', dropped[#dropped][1])
      for _, e in ipairs(dropped) do
        local f = e[2]
        for j = 1, #f, 2 do
          if f[j] == 'i' and redis.call('HGET', ids, f[j + 1]) == string.match(e[1], '^(%d+)') then
            redis.call('HDEL', ids, f[j + 1])
          end
        end
      end
    end
    redis.call('PEXPIRE', history, ttl)
    redis.call('PEXPIRE', ids, ttl)
  end
  -- After the floors, which read the samples from before this event.
  -- The clock: a sample of the counter at most every `step`, kept for the expiry.
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if #last == 0 or ms - tonumber(string.match(last[1][1], '^(%d+)')) >= step then
    redis.call('XADD', KEYS[2], 'MINID', string.format('%d', ms - ttl), '*', 's', sid)
  end
  redis.call('PEXPIRE', KEYS[2], ttl)
end
if given then redis.call('SET', KEYS[3], sid .. ' ' .. digest, 'PX', ARGV[7]) end
local command = ARGV[9] or 'PUBLISH'
for c = 5, #KEYS, 3 do redis.call(command, KEYS[c], msg) end
return {id, seq, 0}
