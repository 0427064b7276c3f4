-- The owner of a session notes its client's departure, its own end, or that its frames no longer
-- wait for its client to fetch them (it upgraded from long-polling); anyone may ask who owns it.
-- It also notes that an event it sent is in no log ('broken': the generation cannot be recovered),
-- and that frames wait for it unlogged ('behind': its client stopped reading or its log is slow,
-- as for a client on long-polling, so a claim cannot take its silence for a complete log) or that
-- it caught up ('caught_up').
-- A session closed before anyone claimed it can no longer be recovered: it is deleted at once (not
-- left for its ttl: a client that joins and leaves a namespace over and over makes a session each time),
-- or, while its previous owner may still log what the claimer reads, once that one is closed too.
-- KEYS: 1 session meta, 2 the log of the generation.
-- ARGV: 1 what: 'left' | 'closed' | 'upgraded' | 'behind' | 'caught_up' | 'broken' | 'state',
--       2 generation, 3 owner, 4 now ms
-- Returns {current generation or '', current owner or ''}.
local meta = KEYS[1]
local what, gen, owner, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local state = redis.call('HMGET', meta, 'gen', 'owner', 'prev_gen', 'prev_owner', 'prev_closed', 'closed')
if what == 'left' and state[1] == gen and state[2] == owner then
  redis.call('HSET', meta, 'disconnected_at', now)
elseif what == 'upgraded' and state[1] == gen and state[2] == owner then
  redis.call('HSET', meta, 'fetched', '0')
elseif what == 'broken' or what == 'behind' or what == 'caught_up' then
  local field = what == 'broken' and 'broken' or 'fetched'
  local value = what == 'caught_up' and '0' or '1'
  if state[1] == gen and state[2] == owner then
    redis.call('HSET', meta, field, value)
  elseif state[3] == gen and state[4] == owner then
    redis.call('HSET', meta, 'prev_' .. field, value)
  end
elseif what == 'closed' then
  if state[1] == gen and state[2] == owner then
    if not state[3] or state[5] == '1' then
      redis.call('DEL', meta, KEYS[2])
    else -- the previous owner may still log (the claimer reads it): kept until it is done too
      redis.call('HSET', meta, 'closed', '1')
      redis.call('HSETNX', meta, 'disconnected_at', now)
    end
  elseif state[3] == gen and state[4] == owner then
    if state[6] == '1' then
      redis.call('DEL', meta, KEYS[2])
    else
      redis.call('HSET', meta, 'prev_closed', '1')
    end
  end
end
return {state[1] or '', state[2] or ''}
