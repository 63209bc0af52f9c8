#!lua name=roomd
-- roomd's room operations, one atomic Function each (Redis >= 7.0, Valkey).
--
-- Every key of a room shares one hash tag, so a Function can touch them all on Redis Cluster:
--   meta  HASH  epoch, seq (last seq), earliest (first retained seq)
--   log   HASH  seq -> log record (the same bytes as the embedded store's entries)
--   state HASH  key -> state record (ver + encoded value)
--   mids  ZSET  score seq, member = mid record (ts + dedup key): the room's recent mids
--
-- Nodes order a room optimistically: a write names the seq it follows (`base`) and is applied
-- only if the room's last seq is still that; otherwise the node reads what it missed and
-- forms the write again. Nothing can fail after the first write of a Function (a Function does
-- not roll back), so every check comes first.

-- Integers as Redis strings: Lua numbers print as 1e+15 past 14 digits.
local function int(n)
  return string.format('%d', n)
end

-- ARGV: epoch, base, fresh_epoch, dedup_max, trim_before, n_entries,
--       then n_entries × (log record, mid record or ''), for seqs base + 1, base + 2, ...
--       n_state, then n_state × (key, state record or '' for delete),
--       n_red, then n_red × (target, stub frame).
-- Replies {'ok', seq, earliest} | {'behind', seq} | {'epoch', epoch, seq}
--         | {'fenced', epoch, seq}.
local function apply(keys, args)
  local meta, log, state, mids = keys[1], keys[2], keys[3], keys[4]
  local epoch, base, fresh = args[1], tonumber(args[2]), args[3]
  local cur = redis.call('HMGET', meta, 'epoch', 'seq', 'earliest')
  if not cur[1] then
    if base ~= 0 then
      -- The room's data is gone while a node still holds its seqs: never reuse them.
      redis.call('HSET', meta, 'epoch', fresh, 'seq', int(base), 'earliest', int(base + 1))
      return {'fenced', fresh, int(base)}
    end
    redis.call('HSET', meta, 'epoch', epoch, 'seq', '0', 'earliest', '1')
    cur = {epoch, '0', '1'}
  end
  if cur[1] ~= epoch then
    return {'epoch', cur[1], cur[2]}
  end
  local head = tonumber(cur[2])
  if head < base then
    -- Redis lost writes a node saw acknowledged: a new epoch, and seqs go on after the fence.
    redis.call('HSET', meta, 'epoch', fresh, 'seq', int(base))
    return {'fenced', fresh, int(base)}
  end
  if head > base then
    return {'behind', cur[2]}
  end
  if base == 0 then
    -- The first write keeps the room (a room only ever read expires: see load).
    redis.call('PERSIST', meta)
  end
  local dedup_max, trim_before = tonumber(args[4]), tonumber(args[5])
  local i = 6
  local n = tonumber(args[i]); i = i + 1
  for k = 1, n do
    local seq = int(base + k)
    redis.call('HSET', log, seq, args[i])
    if args[i + 1] ~= '' then
      redis.call('ZADD', mids, seq, args[i + 1])
    end
    i = i + 2
  end
  local ns = tonumber(args[i]); i = i + 1
  for _ = 1, ns do
    if args[i + 1] == '' then
      redis.call('HDEL', state, args[i])
    else
      redis.call('HSET', state, args[i], args[i + 1])
    end
    i = i + 2
  end
  local nr = tonumber(args[i]); i = i + 1
  for _ = 1, nr do
    -- The target keeps its time and mid (the record's first 9 + mid length bytes); its
    -- frame becomes the stub.
    local old = redis.call('HGET', log, args[i])
    if old then
      local head_len = 9 + string.byte(old, 9)
      redis.call('HSET', log, args[i], string.sub(old, 1, head_len) .. args[i + 1])
    end
    i = i + 2
  end
  head = base + n
  local earliest = tonumber(cur[3])
  -- Retention: at most 1,000 entries per call, so a Function's run time stays bounded; the
  -- rest goes with the next writes.
  local stop = math.min(trim_before, head + 1, earliest + 1000)
  if stop > earliest then
    for s = earliest, stop - 1 do
      redis.call('HDEL', log, int(s))
    end
    earliest = stop
    redis.call('ZREMRANGEBYSCORE', mids, '-inf', '(' .. int(earliest))
  end
  if n > 0 then
    local over = redis.call('ZCARD', mids) - dedup_max
    if over > 0 then
      redis.call('ZREMRANGEBYRANK', mids, 0, over - 1)
    end
  end
  redis.call('HSET', meta, 'seq', int(head), 'earliest', int(earliest))
  return {'ok', int(head), int(earliest)}
end

-- ARGV: epoch for a new room, recent (entries to return), dedup_max.
-- Replies {epoch, seq, earliest, {key, record, ...}, {seq, record, ...}, {mid record, seq, ...}}
-- as of one moment: the state and the entries agree with seq.
local function load(keys, args)
  local meta, log, state, mids = keys[1], keys[2], keys[3], keys[4]
  local cur = redis.call('HMGET', meta, 'epoch', 'seq', 'earliest')
  if not cur[1] then
    -- Every node that loads the room agrees on its epoch from now on. A room nobody writes
    -- to (a client subscribing to made-up names) leaves nothing behind: its meta expires a
    -- day later unless a write keeps it.
    redis.call('HSET', meta, 'epoch', args[1], 'seq', '0', 'earliest', '1')
    redis.call('PEXPIRE', meta, 86400000)
    cur = {args[1], '0', '1'}
  end
  local head, earliest = tonumber(cur[2]), tonumber(cur[3])
  local recent = {}
  local from = math.max(earliest, head - tonumber(args[2]) + 1)
  if from <= head then
    local fields = {}
    for s = from, head do
      fields[#fields + 1] = int(s)
    end
    local vals = redis.call('HMGET', log, unpack(fields))
    for k, v in ipairs(vals) do
      if v then
        recent[#recent + 1] = fields[k]
        recent[#recent + 1] = v
      end
    end
  end
  local dedup = {}
  local max = tonumber(args[3])
  if max > 0 then
    dedup = redis.call('ZRANGE', mids, 0, max - 1, 'REV', 'WITHSCORES')
  end
  return {cur[1], cur[2], cur[3], redis.call('HGETALL', state), recent, dedup}
end

-- A read of the log between lo and hi (inclusive, clamped to what the room holds), at most
-- count entries, from the low end (dir 'f') or the high end (dir 'b').
-- ARGV: lo, hi, count, dir, fence, fresh. Replies {epoch, first seq, more (1|0), record, ...}:
-- more says entries remain in the paging direction; an absent room has epoch 0.
-- The loss fence: a node reading on from its last seq passes it as `fence`; if the room's last
-- seq is below it, Redis lost writes the node saw stored, and the room moves to epoch `fresh`
-- with its seqs going on after the fence (nothing is read then).
local function range(keys, args)
  local meta, log = keys[1], keys[2]
  local cur = redis.call('HMGET', meta, 'seq', 'earliest', 'epoch')
  if not cur[1] then
    return {'0', '0', '0'}
  end
  local fence = tonumber(args[5] or '0')
  if tonumber(cur[1]) < fence then
    redis.call('HSET', meta, 'epoch', args[6], 'seq', int(fence))
    return {args[6], '0', '0'}
  end
  local lo = math.max(tonumber(args[1]), tonumber(cur[2]))
  local hi = math.min(tonumber(args[2]), tonumber(cur[1]))
  local count = tonumber(args[3])
  if lo > hi or count < 1 then
    return {cur[3], '0', '0'}
  end
  local first, last, more
  if args[4] == 'b' then
    first, last = math.max(lo, hi - count + 1), hi
    more = first > lo
  else
    first, last = lo, math.min(hi, lo + count - 1)
    more = last < hi
  end
  local fields = {}
  for s = first, last do
    fields[#fields + 1] = int(s)
  end
  local out = {cur[3], int(first), more and '1' or '0'}
  local vals = redis.call('HMGET', log, unpack(fields))
  for _, v in ipairs(vals) do
    out[#out + 1] = v or ''
  end
  return out
end

redis.register_function('roomd_apply', apply)
redis.register_function('roomd_load', load)
redis.register_function('roomd_range', range)
