-- A connection left a stream key while it was in flight: whatever is emitted until a connection
-- that followed it logs it again is lost, so a newcomer that picks it up starts a new epoch.
local meta = KEYS[1]
if redis.call('HGET', meta, 'done') == '0' then redis.call('HSET', meta, 'orphaned', 1) end
return 0
