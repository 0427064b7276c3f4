-- What a claimed session's previous generation has after an offset, for the claimer to replay.
-- KEYS: 1 session meta, 2 the log of generation `gen`.
-- ARGV: 1 after n, 2 force (stop waiting), 3 gen, 4 slack ms (how long after the claim the previous
--       owner must have taken a batch it logged: a frame emitted before the claim may be on its way),
--       5 limit (entries, 0: all), 6 max bytes (of the entries' payloads, at least one entry; 0: no
--       bound), 7 until (0: a read; else a following page of a read whose last was this: none of
--       the read's checks but that the generation is the one claimed and the entries are kept)
-- Returns {'wait'} while the previous owner may still be logging frames it got before the claim,
-- {'incomplete'} when it fetched its frames (long-polling) and logged none it fetched after the
-- claim (forced: its silence proves nothing), {'lost'} when frames after the offset are no longer
-- kept, else {'ok', trusted, last, n, t, payload, ...} (last: the generation's last number at the
-- read, where its pages end; trusted: the previous owner whose silence it took
-- for complete, forced; '' when that owner logged or closed after the claim).
local meta, log = KEYS[1], KEYS[2]
local after = tonumber(ARGV[1])
local force = ARGV[2] == '1'
local gen = ARGV[3] -- the generation the claimer's offset is of: the one before the claim
local slack = tonumber(ARGV[4])
local limit = tonumber(ARGV[5] or '0')
local max_bytes = tonumber(ARGV[6] or '0')
local until_n = tonumber(ARGV[7] or '0')

local function seq_of(id) -- an entry id 'n-0' -> n
  return tonumber(string.match(id, '^(%d+)'))
end

local prev_gen = redis.call('HGET', meta, 'prev_gen')
if prev_gen ~= gen then return {'lost'} end -- no claim of it, or another since
local trusted = '' -- the owner whose silence a forced read takes for complete
local last = until_n
if until_n == 0 then
  local state = redis.call('HMGET', meta, 'cutoff', 'prev_flushed', 'prev_closed', 'n:' .. prev_gen, 'prev_fetched',
    'prev_broken', 'prev_owner')
  if state[6] == '1' then return {'incomplete'} end -- the previous owner sent an event it could not log
  local cutoff, flushed = tonumber(state[1] or '0'), tonumber(state[2] or '0')
  -- well after the claim: a frame emitted before it may still be on its way to the previous owner
  if flushed <= cutoff + slack then
    if state[5] == '1' then return {force and 'incomplete' or 'wait'} end
    if not force and state[3] ~= '1' then return {'wait'} end
    if state[3] ~= '1' then trusted = state[7] or '' end
  end
  last = tonumber(state[4] or '0')
end
if after > last then return {'lost'} end
local first = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
if after < last and (not first or seq_of(first[1]) > after + 1) then return {'lost'} end
local out = {'ok', trusted, last}
if after == last then return out end
local range = {'XRANGE', log, '(' .. after .. '-0', last .. '-0'}
if limit > 0 then
  range[#range + 1] = 'COUNT'
  range[#range + 1] = limit
end
local size = 0
for _, e in ipairs(redis.call(unpack(range))) do
  local f = e[2]
  local t, payload
  for i = 1, #f, 2 do
    if f[i] == 't' then t = f[i + 1] elseif f[i] == 'f' then payload = f[i + 1] end
  end
  size = size + #payload
  if max_bytes > 0 and #out > 3 and size > max_bytes then break end
  out[#out + 1] = seq_of(e[1])
  out[#out + 1] = t
  out[#out + 1] = payload
end
return out
