-- Match or append a connection's frames for one stream (see asgi_resume/log/__init__.py).
-- KEYS: 1 log (stream), 2 meta (hash: epoch, seq, done, leader, lease), 3 who (hashed principals)
-- ARGV: 1 principal, 2 since ms, 3 cursor epoch, 4 cursor seq, 5 maxlen, 6 ttl ms, 7 done ttl ms,
--       8 fresh epoch, 9 reset, 10 connection id, 11 lease ms,
--       12 the frames, one msgpack array of: digest, done ('1' or '0'), received at (ms), payload
-- Returns {epoch, seq...}: a seq for each frame handled. Fewer seqs than frames means the rest
-- waits: no entry matches it yet and another connection (the leader) is appending this stream.
local log, meta, who = KEYS[1], KEYS[2], KEYS[3]
local since = tonumber(ARGV[2])
local conn = ARGV[10]
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)

local state = redis.call('HMGET', meta, 'epoch', 'seq', 'done', 'leader', 'lease', 'orphaned')
local epoch, last, done = state[1], tonumber(state[2]), state[3] == '1'
local leader, lease = state[4], tonumber(state[5] or '0')
local continuous = epoch and ARGV[3] == epoch -- this connection has followed this history
-- An orphaned stream (its leader left mid-stream) picked up by a newcomer may have lost frames.
if not epoch or ARGV[9] == '1' or (state[6] and not continuous) then
  epoch, last, done, leader, lease = ARGV[8], 0, false, false, 0
  redis.call('DEL', log, who, meta)
elseif state[6] then
  redis.call('HDEL', meta, 'orphaned')
end
local was_done = done
local leading = not leader or leader == conn or lease <= now
local cursor = false
if ARGV[3] == epoch then cursor = tonumber(ARGV[4]) end

local function seq_of(id)
  return tonumber(string.match(id, '^(%d+)'))
end

local function field(entry, name)
  local f = entry[2]
  for i = 1, #f, 2 do
    if f[i] == name then return f[i + 1] end
  end
  return false
end

-- the first entry after `from` (within 64) carrying `digest`: frames this connection never got
local function find_after(from, digest)
  local entries = redis.call('XRANGE', log, '(' .. from .. '-0', '+', 'COUNT', 64)
  for _, e in ipairs(entries) do
    if field(e, 'h') == digest then return seq_of(e[1]) end
  end
  return false
end

-- the earliest entry received since the connection started that carries `digest`
local function find_since(digest)
  local found = false
  local high = '+'
  while true do
    local entries = redis.call('XREVRANGE', log, high, '-', 'COUNT', 64)
    if #entries == 0 then return found end
    for _, e in ipairs(entries) do
      if tonumber(field(e, 't')) < since then return found end
      if field(e, 'h') == digest then found = seq_of(e[1]) end
    end
    high = '(' .. entries[#entries][1]
  end
end

local out = {epoch}
local appended = false
local frames = cmsgpack.unpack(ARGV[12])
for i = 1, #frames, 4 do
  local digest, fdone = frames[i], frames[i + 1]
  local seq = false
  if not cursor then
    seq = find_since(digest)
  elseif cursor < last then
    local next_entry = redis.call('XRANGE', log, (cursor + 1) .. '-0', (cursor + 1) .. '-0')[1]
    if next_entry and field(next_entry, 'h') == digest then
      seq = cursor + 1
    else
      seq = find_after(cursor + 1, digest)
    end
  end
  if not seq then
    if not leading then break end
    last = last + 1
    seq = last
    redis.call('XADD', log, 'MAXLEN', '~', ARGV[5], seq .. '-0',
      'h', digest, 't', frames[i + 2], 'd', fdone, 'f', frames[i + 3])
    appended = true
  end
  cursor = seq
  if fdone == '1' then done = true end
  out[#out + 1] = seq
end

redis.call('HSET', meta, 'epoch', epoch, 'seq', last, 'done', done and '1' or '0')
if appended then
  redis.call('HSET', meta, 'leader', conn, 'lease', now + tonumber(ARGV[11]))
end
if ARGV[1] ~= '' then redis.call('SADD', who, ARGV[1]) end
for _, key in ipairs({log, meta, who}) do
  if done and not was_done then
    redis.call('PEXPIRE', key, ARGV[7])
  elseif done then
    redis.call('PEXPIRE', key, ARGV[7], 'NX') -- keys made after done still expire
  else
    redis.call('PEXPIRE', key, ARGV[6])
  end
end
return out
