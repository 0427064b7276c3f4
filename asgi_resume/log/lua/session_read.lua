-- What a claimed session's previous generation holds after an offset, for the claimer to replay.
-- KEYS: 1 session meta, 2 the previous generation's log. ARGV: 1 after n, 2 force (stop waiting)
-- Returns {'wait'} while the previous owner may still be logging frames it got before the claim,
-- {'incomplete'} when it fetched its frames (long-polling) and logged none it fetched after the
-- claim (forced: its silence proves nothing), {'lost'} when frames after the offset are no longer
-- held, else {'ok', n, t, payload, ...}.
local meta, log = KEYS[1], KEYS[2]
local prev_gen = redis.call('HGET', meta, 'prev_gen') or ''
local state = redis.call('HMGET', meta, 'cutoff', 'prev_flushed', 'prev_closed', 'n:' .. prev_gen, 'prev_fetched')
local cutoff, flushed = tonumber(state[1] or '0'), tonumber(state[2] or '0')
-- strictly after the claim: a batch taken in the claim's own millisecond may have missed a frame
if flushed <= cutoff then
  if state[5] == '1' then return {ARGV[2] == '1' and 'incomplete' or 'wait'} end
  if ARGV[2] ~= '1' and state[3] ~= '1' then return {'wait'} end
end
local after = tonumber(ARGV[1])
local last = tonumber(state[4] or '0')
if after > last then return {'lost'} end
local first = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
if after < last and (not first or tonumber(string.match(first[1], '^(%d+)')) > after + 1) then return {'lost'} end
local out = {'ok'}
for _, e in ipairs(redis.call('XRANGE', log, '(' .. after .. '-0', '+')) do
  out[#out + 1] = tonumber(string.match(e[1], '^(%d+)'))
  local f = e[2]
  for i = 1, #f, 2 do
    if f[i] == 't' then out[#out + 1] = f[i + 1] end
  end
  for i = 1, #f, 2 do
    if f[i] == 'f' then out[#out + 1] = f[i + 1] end
  end
end
return out
