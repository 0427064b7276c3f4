-- A connection leaves a stream: give up its lead at once, and when the stream was still in
-- flight, mark it orphaned: whatever is emitted until someone logs it again is lost.
-- KEYS: 1 meta. ARGV: 1 connection id, 2 orphaned (1/0)
if redis.call('HGET', KEYS[1], 'leader') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'lease', 0)
  if ARGV[2] == '1' then redis.call('HSET', KEYS[1], 'orphaned', 1) end
end
return 0
