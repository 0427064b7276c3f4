-- Read one stream key for a resume (the key is the requester's own view: no other check).
local log, meta = KEYS[1], KEYS[2]
local after = tonumber(ARGV[1])
local client_epoch = ARGV[2] -- '' = any
local limit = tonumber(ARGV[3]) -- entries at most (0: all)
local conn = ARGV[4] -- the resuming connection: it takes the stream over
local max_bytes = tonumber(ARGV[5]) -- payload bytes a page reaches at most, one entry past (0: any)

local function seq_of(id) -- an entry id 'seq-0' -> seq
  return tonumber(string.match(id, '^(%d+)'))
end
-- Returns {'not_found'} or {'ok', epoch, last, oldest, done, gap, seq, payload, seq, payload...}

local state = redis.call('HMGET', meta, 'epoch', 'seq', 'done', 'by', 'at', 'orphaned', 'broke')
if not state[1] then
  return {'not_found'}
end
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
-- (a note, not the read: a Redis that refuses writes, out of memory or a replica, still serves it)
if state[4] and state[4] ~= conn then redis.pcall('HSET', meta, 'by2', state[4], 'at2', state[5]) end
redis.pcall('HSET', meta, 'by', conn, 'at', now)

local epoch, last = state[1], tonumber(state[2])
local gap = 0
if (client_epoch ~= '' and client_epoch ~= epoch) or after > last then
  after, gap = 0, 1 -- the client's history is not this log's
end
local first = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
local oldest = last + 1
if first then oldest = seq_of(first[1]) end
if after + 1 < oldest and after < last then gap = 1 end
-- left in flight and logged by nobody since: its tail may be missing
if state[6] == '1' and state[3] ~= '1' then gap = 1 end
-- "from the start" (no epoch named) of an epoch that replaced a broken one: the start is not here
if state[7] and client_epoch == '' and after == 0 then gap = 1 end

local out = {'ok', epoch, last, oldest, state[3], gap}
if max_bytes == 0 then
  local entries
  if limit > 0 then
    entries = redis.call('XRANGE', log, '(' .. after .. '-0', '+', 'COUNT', limit)
  else
    entries = redis.call('XRANGE', log, '(' .. after .. '-0', '+')
  end
  for _, e in ipairs(entries) do
    out[#out + 1] = seq_of(e[1])
    local f = e[2]
    for i = 1, #f, 2 do
      if f[i] == 'f' then out[#out + 1] = f[i + 1] end
    end
  end
  return out
end
-- a page stops once its payloads reach max_bytes (a page of large entries is a few of them): read
-- in chunks of 1, 2, 4... entries, so that a page of large entries never copies many more
local size, count, chunk, from = 0, 0, 1, '(' .. after .. '-0'
while limit == 0 or count < limit do
  local want = chunk
  if limit > 0 and limit - count < want then want = limit - count end
  local entries = redis.call('XRANGE', log, from, '+', 'COUNT', want)
  for _, e in ipairs(entries) do
    out[#out + 1] = seq_of(e[1])
    local f = e[2]
    for i = 1, #f, 2 do
      if f[i] == 'f' then
        out[#out + 1] = f[i + 1]
        size = size + #f[i + 1]
      end
    end
    count = count + 1
    from = '(' .. e[1]
    if size >= max_bytes then return out end
  end
  if #entries < want then return out end
  chunk = chunk * 2
end
return out
