-- A reconnecting client presents its session id (pid) and last offset: claim the session.
-- KEYS: 1 session meta. ARGV: 1 principal, 2 the offset's generation, 3 claimer (connection id),
--       4 new generation, 5 now ms, 6 recovery window ms, 7 ttl ms, 8 namespace, 9 what the names of
--       the session's generation logs start with (the meta's hash tag: one slot)
-- Returns {'ok'} or {reason}.
local meta = KEYS[1]
local principal, offset_gen, claimer, new_gen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, window_ms, ttl_ms, namespace = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[8]
local generations = ARGV[9]

local state = redis.call('HMGET', meta, 'principal', 'gen', 'owner', 'disconnected_at', 'last_at', 'fetched', 'broken',
  'ns', 'closed')
if not state[1] then return {'unknown'} end
-- a pid is useless to anyone else, and in another namespace
if state[1] ~= principal or state[8] ~= namespace then return {'refused'} end
if state[2] ~= offset_gen then return {'stale'} end
local left = tonumber(state[4] or state[5] or '0')
if now - left > window_ms then return {'expired'} end
-- closed before anyone claimed it: what the app sent since went to nobody, and is in no log
if state[9] == '1' then return {'expired'} end
if state[7] == '1' then return {'incomplete'} end -- an event it sent is in no log
-- the generation before the previous one is nobody's to read any more: its log goes (a client
-- that recovers over and over keeps two generations, not one per claim)
local old_gen = redis.call('HGET', meta, 'prev_gen')
if old_gen and old_gen ~= '' then
  redis.call('DEL', generations .. old_gen)
  redis.call('HDEL', meta, 'n:' .. old_gen)
end
redis.call('HSET', meta, 'prev_gen', state[2], 'prev_owner', state[3], 'prev_closed', '0',
  'prev_flushed', redis.call('HGET', meta, 'flushed') or '0', 'prev_fetched', state[6] or '0',
  'gen', new_gen, 'owner', claimer, 'cutoff', now, 'closed', '0', 'flushed', now, 'last_at', now, 'fetched', '0',
  'prev_broken', '0')
redis.call('HDEL', meta, 'disconnected_at')
redis.call('PEXPIRE', meta, ttl_ms)
return {'ok'}
