-- Publish one event: take the next sequence number, store the event in the channel's history,
-- publish it; all at once, so an event is stored and sent, or neither.
--
-- KEYS: counter, history stream, pub/sub channel.
-- ARGV: the encoded event without its `id:` line and final blank line, the publisher's id,
--       `g` (given) or `a` (assign), history length, the highest sequence number this instance
--       has seen (see restore.lua).
-- The message is `{seq}\n{g|a}{id}\n{head}` (wire.rs reads it and adds the `id:` line), stored
-- and published as one. Returns `{id, seq}`.
--
-- Trimming with MAXLEN does not move the stream's `max-deleted-entry-id` (Redis 7.0), which
-- replay.lua reads to tell a gap: so trim by hand and record the last entry dropped.
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[5]) then
  redis.call('SET', KEYS[1], ARGV[5])
end
local seq = redis.call('INCR', KEYS[1])
local sid = string.format('%d', seq)
local id = ARGV[2]
if ARGV[3] == 'a' then id = sid end
local msg = sid .. '\n' .. ARGV[3] .. id .. '\n' .. ARGV[1]
local n = tonumber(ARGV[4])
if n > 0 then
  redis.call('XADD', KEYS[2], sid .. '-0', 'm', msg, 'i', id)
  local len = redis.call('XLEN', KEYS[2])
  if len > n then
    local dropped = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', len - n)
    redis.call('XTRIM', KEYS[2], 'MAXLEN', n)
    redis.call('XSETID', KEYS[2], sid .. '-0', 'MAXDELETEDID', dropped[#dropped][1])
  end
end
redis.call('PUBLISH', KEYS[3], msg)
return {id, seq}
