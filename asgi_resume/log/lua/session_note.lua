-- The owner of a session notes its client's departure, its own end, or that its frames no longer
-- wait for its client to fetch them (it upgraded from long-polling); anyone may ask who owns it.
-- KEYS: 1 session meta. ARGV: 1 'left' | 'closed' | 'upgraded' | 'state', 2 generation, 3 owner, 4 now ms
-- Returns {current generation or '', current owner or ''}.
local meta = KEYS[1]
local state = redis.call('HMGET', meta, 'gen', 'owner', 'prev_gen', 'prev_owner')
if ARGV[1] == 'left' and state[1] == ARGV[2] and state[2] == ARGV[3] then
  redis.call('HSET', meta, 'disconnected_at', ARGV[4])
elseif ARGV[1] == 'upgraded' and state[1] == ARGV[2] and state[2] == ARGV[3] then
  redis.call('HSET', meta, 'fetched', '0')
elseif ARGV[1] == 'closed' then
  if state[1] == ARGV[2] and state[2] == ARGV[3] then
    redis.call('HSET', meta, 'closed', '1')
    redis.call('HSETNX', meta, 'disconnected_at', ARGV[4])
  elseif state[3] == ARGV[2] and state[4] == ARGV[3] then
    redis.call('HSET', meta, 'prev_closed', '1')
  end
end
return {state[1] or '', state[2] or ''}
