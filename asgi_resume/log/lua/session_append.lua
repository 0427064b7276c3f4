-- Append a connection's events to its recovery session log (connection state recovery).
-- KEYS: 1 session meta (hash), 2 the log of generation `gen` (stream)
-- ARGV: 1 generation, 2 owner (connection id), 3 principal, 4 namespace, 5 ttl ms, 6 maxlen,
--       7 flushed ms (every frame this connection got before it is in this call or an earlier one),
--       8 fetched ('1': its frames reach the log only when its client fetches them, long-polling),
--       9 starts ('1': the connection's first call in this generation, at its CONNECT reply),
--       then per frame: received at (ms), payload
-- Returns {'ok', n...}: the frames' numbers in that generation, or {'taken', n...} when another
-- connection claimed the session (the frames are still logged: the claimer may not have read yet);
-- {'gone'}: not this connection's any more; {'lost'}: not in the log, and this call does not start it.
local meta, log = KEYS[1], KEYS[2]
local gen, owner, principal, namespace = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl_ms, maxlen, flushed_ms, fetched = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local starts = ARGV[9] == '1'
local FIRST_FRAME = 10 -- then per frame: received at (ms), payload

local state = redis.call('HMGET', meta, 'gen', 'owner', 'cutoff', 'prev_gen', 'prev_owner')
local status = 'ok'
if not state[1] then
  -- only a call that starts a generation makes it: one lost since (Redis emptied, its TTL passed
  -- with no event) is never made again under that generation, its numbering starting over under
  -- offsets its client holds (the connection starts a new one); nor is one whose log outlived its
  -- meta (dropped under a call that landed late)
  if not starts then return {'lost'} end
  if redis.call('EXISTS', log) == 1 then return {'gone'} end
  redis.call('HSET', meta, 'gen', gen, 'owner', owner, 'principal', principal, 'ns', namespace, 'n', 0)
elseif state[1] ~= gen or state[2] ~= owner then
  if state[4] ~= gen or state[5] ~= owner then return {'gone'} end
  status = 'taken'
end
local counter = 'n:' .. gen
local out = {status}
for i = FIRST_FRAME, #ARGV, 2 do
  local n = redis.call('HINCRBY', meta, counter, 1)
  redis.call('XADD', log, 'MAXLEN', '~', maxlen, n .. '-0', 't', ARGV[i], 'f', ARGV[i + 1])
  out[#out + 1] = n
end
if status == 'ok' then
  redis.call('HSET', meta, 'flushed', flushed_ms, 'last_at', flushed_ms, 'fetched', fetched)
else
  redis.call('HSET', meta, 'prev_flushed', flushed_ms)
end
redis.call('PEXPIRE', meta, ttl_ms)
redis.call('PEXPIRE', log, ttl_ms)
return out
