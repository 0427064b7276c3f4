-- Read a stream for a resume, if the requester received it live.
-- KEYS: 1 log, 2 meta, 3 who. ARGV: 1 principal, 2 after seq, 3 client epoch ('' = any), 4 limit
-- Returns {'not_found'} or {'ok', epoch, last, oldest, done, gap, seq, payload, seq, payload...}
local log, meta, who = KEYS[1], KEYS[2], KEYS[3]
local state = redis.call('HMGET', meta, 'epoch', 'seq', 'done')
if not state[1] or ARGV[1] == '' or redis.call('SISMEMBER', who, ARGV[1]) == 0 then
  return {'not_found'}
end
local epoch, last = state[1], tonumber(state[2])
local after = tonumber(ARGV[2])
local gap = 0
if (ARGV[3] ~= '' and ARGV[3] ~= epoch) or after > last then
  after, gap = 0, 1 -- the client's history is not this log's
end
local first = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
local oldest = last + 1
if first then oldest = tonumber(string.match(first[1], '^(%d+)')) end
if after + 1 < oldest and after < last then gap = 1 end

local out = {'ok', epoch, last, oldest, state[3], gap}
local entries = redis.call('XRANGE', log, '(' .. after .. '-0', '+', 'COUNT', ARGV[4])
for _, e in ipairs(entries) do
  out[#out + 1] = tonumber(string.match(e[1], '^(%d+)'))
  local f = e[2]
  for i = 1, #f, 2 do
    if f[i] == 'f' then out[#out + 1] = f[i + 1] end
  end
end
return out
