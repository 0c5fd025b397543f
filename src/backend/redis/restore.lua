-- Run by the subscription task on every (re)connect.
-- KEYS: counter, epoch. ARGV: the highest sequence number this instance has seen, a fresh
-- random token. Returns the epoch.
--
-- Without persistence a restarted Redis has lost the counter and the histories. The epoch key
-- goes with them, so a changed epoch tells the task to take the histories from the start. And
-- the counter is raised back to what this instance has seen, so that ids keep growing: a
-- browser's Last-Event-ID from before the loss is not mistaken for a newer event, and events
-- are not dropped as already seen.
redis.call('SET', KEYS[2], ARGV[2], 'NX')
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return redis.call('GET', KEYS[2])
