-- Match or append one connection's frames for one stream key (see asgi_resume/log/memory.py for
-- the same rules in Python). Copies of one emit to a principal's tabs make one entry: a
-- connection that saw entry n matches its next frame against n+1, or a later one (a frame it
-- did not get); its first frame, against the earliest entry logged since it connected (else the
-- latest in the look-back before: another process's copy, delivered here later). A frame
-- that matches nothing is appended at once. A frame whose copy is among the entries this
-- connection passed over came out of order: it goes out unstamped (-seq), not twice in the log.
-- A rejoining connection's frame (or one whose cursor is in an epoch before this one: a tab behind)
-- that matches nothing and is no newer than the epoch's first entry is from before the epoch: it
-- goes out unstamped (0).
local log, meta = KEYS[1], KEYS[2]
local A = cmsgpack.unpack(ARGV[1]) -- every argument in one (see RedisLog._append_args)
local since = tonumber(A[1])
local cursor_epoch = A[2]
local cursor_seq = tonumber(A[3])
local maxlen = A[4]
local ttl_ms = A[5]
local done_ttl_ms = A[6]
local fresh_epoch = A[7]
local reset = A[8] == '1'
local conn = A[9]
local frames = A[10] -- digest, done ('1'/'0'), received at (ms), payload; ...
local skipped = A[11] -- seqs this connection passed over
local copy_window_ms = tonumber(A[12]) -- copies of one emit arrive within this of each other
local held = A[13] == '1' -- a held connection logs, but takes nothing over from anyone
local reset_epoch = A[14] -- reset only a stream still in one of these epochs (a,b,..; '': whatever it is)
local not_after = tonumber(A[15]) -- ms: its caller gives up on it then (0: never)
local lookback = tonumber(A[16]) -- ms before `since` where a first frame's copy may lie (another process's)
local scan_ahead = tonumber(A[17]) -- how far past its cursor a connection's frame is looked for
local rejoining = A[18] == '1' -- its history broke and it logged nothing since (AppendRequest.rejoining)
local PAGE = 64 -- entries read at a time, newest first, looking for a first frame's copy
-- Returns {epoch, others_ms, continued, seq...}: a seq per frame (negative: the out-of-order copy's
-- seq); continued: the connection that appended to the epoch last, when a caller with no cursor (a
-- newcomer) appended its first frame to it, not done ('' otherwise: see AppendResult.continued); or {'late'},
-- writing nothing, when it would run after not_after (a paused Redis running what it queued).

local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
if not_after > 0 and now > not_after then return {'late'} end

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

local function entry_at(seq)
  return redis.call('XRANGE', log, seq .. '-0', seq .. '-0')[1]
end

-- the first entry after `from` (within scan_ahead) carrying `digest`: frames this connection never got
local function find_after(from, digest)
  local entries = redis.call('XRANGE', log, '(' .. from .. '-0', '+', 'COUNT', scan_ahead)
  for _, e in ipairs(entries) do
    if field(e, 'h') == digest then return seq_of(e[1]) end
  end
  return false
end

-- the earliest entry received since the connection started that carries `digest`; else the
-- latest one in the `lookback` ms before (logged by another process, which delivered it here later)
local function find_since(digest)
  local found, before = false, false
  local high = '+'
  while true do
    local entries = redis.call('XREVRANGE', log, high, '-', 'COUNT', PAGE)
    if #entries == 0 then return found or before end
    for _, e in ipairs(entries) do
      local t = tonumber(field(e, 't'))
      if field(e, 'h') == digest then
        if t >= since then
          found = seq_of(e[1])
        elseif t >= since - lookback and not before then
          before = seq_of(e[1])
        end
      end
      if t < since - lookback then return found or before end
    end
    high = '(' .. entries[#entries][1]
  end
end

local state = redis.call('HMGET', meta, 'epoch', 'seq', 'done', 'orphaned', 'by', 'at', 'by2', 'at2', 'w')
local epoch, last, done = state[1], tonumber(state[2]), state[3] == '1'
local continuous = epoch and cursor_epoch == epoch -- this connection has followed this history
-- An orphaned stream (a connection left it mid-stream) picked up by a newcomer may have lost frames.
local broken = reset and (reset_epoch == '' or (epoch and string.find(',' .. reset_epoch .. ',', ',' .. epoch .. ',',
  1, true) ~= nil))
local after_break = false -- this epoch replaces one whose history broke: the stream began before it
if not epoch or broken or (state[4] and not continuous) then
  -- the stream began before this epoch if one is replaced, or if the caller knew an epoch of it
  -- that is gone (keys lost with a Redis that restarted empty, or expired), or if its entries
  -- outlived its meta (evicted alone under maxmemory)
  after_break = (epoch or cursor_epoch ~= '' or reset
    or redis.call('EXISTS', log) == 1) and true or false
  epoch, last, done = fresh_epoch, 0, false
  state[5], state[6], state[7], state[8], state[9] = false, false, false, false, false
  redis.call('DEL', log, meta)
else
  if state[4] then redis.call('HDEL', meta, 'orphaned') end
  -- a caller that followed an epoch of this stream that is gone (lost, expired) while another
  -- made this one first: the stream began before it here too
  if cursor_epoch ~= '' and cursor_epoch ~= epoch then after_break = true end
end
local was_done = done
local cursor = false
if cursor_epoch == epoch then cursor = cursor_seq end
local passed = {}
if cursor then
  for _, s in ipairs(skipped) do passed[tonumber(s)] = true end
end

-- a newcomer whose first frame nobody logged yet, appended to an epoch another connection logged
-- last ('w': only appends set it; 'by' is also whoever replayed the key): the caller learns which
-- (it goes on across what was emitted since, if that one's process died)
local after = false
if cursor_epoch == '' and not after_break and not done and not held and state[9] and state[9] ~= conn then
  after = state[9]
end
local out = {epoch, 0, ''}
for i = 1, #frames, 4 do
  local digest, fdone = frames[i], frames[i + 1]
  local seq = false
  if not cursor then
    seq = find_since(digest)
  elseif cursor < last then
    local next_entry = entry_at(cursor + 1)
    if next_entry and field(next_entry, 'h') == digest then
      seq = cursor + 1
    else
      seq = find_after(cursor + 1, digest)
    end
  end
  local out_of_order = false
  if not seq and cursor then
    for s, _ in pairs(passed) do
      local e = entry_at(s)
      local near = e and math.abs(tonumber(field(e, 't')) - tonumber(frames[i + 2])) <= copy_window_ms
      if near and field(e, 'h') == digest and (not out_of_order or s < out_of_order) then out_of_order = s end
    end
  end
  local before_epoch = false
  if not seq and not cursor and (rejoining or cursor_epoch ~= '') then -- (a cursor in an epoch before this one)
    local first = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
    before_epoch = first and tonumber(frames[i + 2]) <= tonumber(field(first, 't')) or false
  end
  if out_of_order then
    passed[out_of_order] = nil
    out[#out + 1] = -out_of_order
  elseif before_epoch then
    out[#out + 1] = 0
  else
    if not seq then
      if i == 1 and after then out[3] = after end
      last = last + 1
      seq = last
      redis.call('XADD', log, 'MAXLEN', '~', maxlen, seq .. '-0',
        'h', digest, 't', frames[i + 2], 'd', fdone, 'f', frames[i + 3])
    end
    if cursor then -- what it steps over now is passed over for its next frames too
      for s = math.max(cursor + 1, seq - scan_ahead), seq - 1 do passed[s] = true end
    end
    cursor = seq
    if fdone == '1' then done = true end
    out[#out + 1] = seq
  end
end

-- who touched this key: the last live connection, and the last other one before it; when: when
-- the app sent its last frame (what a hold compares with when it began), not when Redis ran this
local by, at, by2, at2 = state[5], state[6], state[7], state[8]
local used = #frames > 0 and frames[#frames - 1] or now
redis.call('HSET', meta, 'epoch', epoch, 'seq', last, 'done', done and '1' or '0')
if after_break then redis.call('HSET', meta, 'broke', 1) end
if held then
  if by and by ~= conn then out[2] = tonumber(at) elseif by2 then out[2] = tonumber(at2) end
else
  if by and by ~= conn then by2, at2 = by, at end
  redis.call('HSET', meta, 'by', conn, 'at', used, 'w', conn)
  if by2 then
    redis.call('HSET', meta, 'by2', by2, 'at2', at2)
    out[2] = tonumber(at2)
  end
end
for _, key in ipairs({log, meta}) do
  if done and not was_done then
    redis.call('PEXPIRE', key, done_ttl_ms)
  elseif done then
    redis.call('PEXPIRE', key, done_ttl_ms, 'NX') -- keys made after done still expire
  else
    redis.call('PEXPIRE', key, ttl_ms)
  end
end
return out
