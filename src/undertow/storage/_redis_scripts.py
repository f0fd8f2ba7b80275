"""The Lua scripts of the Redis job store (storage/_redis_jobs.py): each job operation that
reads and writes more than one key runs as one script, so that Redis runs it whole, with no
other client in between, in one round trip.

Every script that uses the shared helpers (``_PRELUDE``) takes ``ARGV[1]`` = the prefix of a
job's hash (``undertow:job:``), ``ARGV[2]`` = the prefix of a queue's list
(``undertow:queue:``) and ``ARGV[3]`` = ``now``, the caller's clock; its own arguments follow.
The other key names come in ``KEYS`` (see each script), all of them from ``storage/_keys.py``,
but for the hash of the queues' counts by state, which every step may change: its name is
written into the prelude's text from ``storage/_keys.py``.

The counts (``"{queue} {state}"`` → stored jobs) move with each job: ``move`` is called on
every change of state, and a count that reaches zero is removed, so the hash holds exactly
the queues that a stored job names.

A job's fields are the hash's fields, as text: the fence is the ``attempts`` field, compared as
the text the caller names (``HINCRBY`` writes it as a plain integer). Numbers given to
``redis.call`` are written with 17 significant digits, so times survive the trip exactly.
"""

from __future__ import annotations

from typing import Any

from undertow.storage import _keys as keys

__all__ = ["JobScripts"]

#: the helpers every job script but ``append`` starts with
_PRELUDE = (
    f"""
local COUNTS = '{keys.JOB_COUNTS}'
local SIGNAL = '{keys.SIGNAL_PREFIX}'
local RUNNING = '{keys.JOBS_RUNNING}'
local IDLE = '{keys.IDLE_PREFIX}'
local OFFERS = '{keys.IDLE_OFFERS}'
local INBOX = '{keys.INBOX_PREFIX}'
"""
    + """
local JOB, QUEUE, NOW = ARGV[1], ARGV[2], tonumber(ARGV[3])

-- a job's count moves from one state to another on each of its queues (its 'queues'
-- field, each name once); '' for none (a new job, a purged one)
local function move(queues, from, to)
  local seen = {}
  for name in string.gmatch(queues or '', '%S+') do
    if not seen[name] then
      seen[name] = true
      if from and from ~= '' then
        local field = name .. ' ' .. from
        if redis.call('HINCRBY', COUNTS, field, -1) <= 0 then redis.call('HDEL', COUNTS, field) end
      end
      if to ~= '' then redis.call('HINCRBY', COUNTS, name .. ' ' .. to, 1) end
    end
  end
end

-- push an id onto a queue's list, and say so to the workers listening, once a script per
-- queue, unless the list is long (its workers are busy: they claim again anyway). Not only
-- onto an empty list: one may hold ids taken through another queue, or cancelled
local WOKEN = {}
local function push_one(name, id)
  local length = redis.call('RPUSH', QUEUE .. name, id)
  if length <= 1000 and not WOKEN[name] then
    WOKEN[name] = true
    redis.call('PUBLISH', SIGNAL .. name, '')
  end
end

-- push a job's id onto each of its queues (the field 'queues': names joined by spaces)
local function push(id, queues)
  for name in string.gmatch(queues, '%S+') do push_one(name, id) end
end

-- end a job in a final state (from the state it was in); purged result_ttl seconds from now
local function finish(id, state, reason, final, from)
  local key = JOB .. id
  local job = redis.call('HMGET', key, 'result_ttl', 'queues')
  local ttl = tonumber(job[1]) or 86400
  redis.call('HSET', key, 'state', state, 'finished', NOW, 'reason', reason)
  redis.call('ZADD', final, NOW + ttl, id)
  move(job[2], from, state)
end

-- push the delayed jobs that are due onto their queues; how many were looked at
local function promote(delayed, limit)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', NOW, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    redis.call('ZREM', delayed, id)
    local job = redis.call('HMGET', JOB .. id, 'state', 'queues')
    if job[1] == 'queued' then push(id, job[2]) end
  end
  return #due
end

-- the worker waits on no queue any more (it offered its free slots on them at its last claim)
local function withdraw(worker)
  local offered = redis.call('HGET', OFFERS, worker)
  if not offered then return end
  for name in string.gmatch(string.match(offered, '^%S+ %S+ ?(.*)$') or '', '%S+') do
    redis.call('ZREM', IDLE .. name, worker)
  end
  redis.call('HDEL', OFFERS, worker)
end

-- the worker waits idle on the queues named (a table), with ``free`` slots for new jobs,
-- until ``till``; each job handed to it is leased for ``lease`` seconds
local function offer(worker, free, lease, till, names)
  withdraw(worker)
  if free <= 0 then return end
  for _, name in ipairs(names) do redis.call('ZADD', IDLE .. name, till, worker) end
  redis.call('HSET', OFFERS, worker, free .. ' ' .. lease .. ' ' .. table.concat(names, ' '))
end

-- a worker waiting idle on the first of the queues (their lists' key names, in order, and
-- their names) that has one and no entry waiting ahead, booked for one job: its name, and
-- the job's lease_until as text; nil if there is none. A lapsed offer that comes up is
-- dropped (the others as they come up), and so is the offer of a worker that has not taken
-- the last job handed to it (so a worker that died swallows one job, back after its lease)
local function pick(queues, names)
  for i, queue in ipairs(queues) do
    local idle = IDLE .. names[i]
    local found = redis.call('ZRANDMEMBER', idle, 1, 'WITHSCORES')
    local worker = found[1]
    if worker and tonumber(found[2]) < NOW then
      redis.call('ZREM', idle, worker)
    elseif worker and redis.call('LLEN', INBOX .. worker) > 0 then
      withdraw(worker)  -- it has not taken the last job handed: gone, or slow
    elseif worker and redis.call('LLEN', queue) == 0 then
      local offered = redis.call('HGET', OFFERS, worker)
      if offered then
        local free, lease, rest = string.match(offered, '^(%d+) (%S+) ?(.*)$')
        if tonumber(free) <= 1 then
          withdraw(worker)
        else
          redis.call('HSET', OFFERS, worker, (tonumber(free) - 1) .. ' ' .. lease .. ' ' .. rest)
        end
        return worker, string.format('%.17g', NOW + tonumber(lease))
      end
    end
  end
  return nil
end

-- put the job into the inbox of the worker it was started for: a header, its text fields
-- (msgpack), its payload; the inbox expires with the job's lease
local function deliver(worker, lease_until, text, payload)
  local inbox = INBOX .. worker
  local header = '1 ' .. lease_until .. ' ' .. string.format('%.17g', NOW) .. ' ' .. #text
  redis.call('RPUSH', inbox, header .. '\\n' .. text .. payload)
  redis.call('PEXPIRE', inbox, math.ceil((tonumber(lease_until) - NOW) * 1000))
end
"""
)

#: enqueue one job (the id, the idempotency key's name or '', not_before, the list of its
#: queues' key names, the hash's field/value pairs, the index's and the delayed set's names,
#: and, to hand it to an idle worker, {its text fields as msgpack, its payload} or nil):
#: {'stored'} (or {'handed'}), {'exists'}, or {'duplicate', HGETALL of the job the key names}
_ENQUEUE_ONE = """
local function enqueue(id, idem, not_before, queues, fields, index, delayed, handoff)
  if idem ~= '' then
    local other = redis.call('GET', idem)
    if other and redis.call('EXISTS', JOB .. other) == 1 then
      return {'duplicate', redis.call('HGETALL', JOB .. other)}
    end
  end
  local key = JOB .. id
  if redis.call('EXISTS', key) == 1 then return {'exists'} end
  local names = {}  -- (each once: the caller dropped repeated names)
  for i, queue in ipairs(queues) do names[i] = string.sub(queue, #QUEUE + 1) end
  -- the queues it is on from now: the first local_queues until local_until, then all
  local now_queues, now_names, spill = queues, names, nil
  if not_before <= NOW then
    local n, till = 0, 0
    for i = 1, #fields - 1, 2 do
      if fields[i] == 'local_queues' then n = tonumber(fields[i + 1])
      elseif fields[i] == 'local_until' then till = tonumber(fields[i + 1]) end
    end
    if n > 0 and n < #names and till > NOW then
      now_queues, now_names, spill = {unpack(queues, 1, n)}, {unpack(names, 1, n)}, till
    end
  end
  local worker, lease_until
  if handoff and not_before <= NOW then worker, lease_until = pick(now_queues, now_names) end
  if worker then  -- its first attempt starts now (the later pairs of a field win)
    for _, v in ipairs({'state', 'running', 'attempts', '1', 'worker', worker, 'lease_until',
                        lease_until, 'started', string.format('%.17g', NOW)}) do
      fields[#fields + 1] = v
    end
  end
  redis.call('HSET', key, unpack(fields))
  if idem ~= '' then redis.call('SET', idem, id) end
  redis.call('ZADD', index, NOW, id)
  local state = worker and ' running' or ' queued'
  for _, name in ipairs(names) do redis.call('HINCRBY', COUNTS, name .. state, 1) end
  if worker then
    redis.call('ZADD', RUNNING, lease_until, id)
    deliver(worker, lease_until, handoff[1], handoff[2])
    return {'handed'}
  elseif not_before > NOW then
    redis.call('ZADD', delayed, not_before, id)
  else  -- (and onto all its queues when the local wait ends, if it is still queued)
    for _, name in ipairs(now_names) do push_one(name, id) end
    if spill then redis.call('ZADD', delayed, spill, id) end
  end
  return {'stored'}
end
"""

#: KEYS: job, index, delayed, queues...
#: ARGV[4..]: id, idempotency key's name or '', not_before, the text fields' pairs as one
#: msgpack array, then the other (binary) field/value pairs, the payload's first. The job
#: is handed to an idle worker if it has no other binary field. What ``enqueue`` answers
_ENQUEUE = """
local fields = cmsgpack.unpack(ARGV[7])
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
local handoff = nil
if #ARGV == 9 then handoff = {ARGV[7], ARGV[9]} end
return enqueue(ARGV[4], ARGV[5], tonumber(ARGV[6]), {unpack(KEYS, 4)}, fields,
               KEYS[2], KEYS[3], handoff)
"""

#: KEYS: index, delayed. ARGV[4..], for each job in turn: id, idempotency key's name or '',
#: not_before, the number of its queues, their names, the number of the hash's fields and
#: values, the pairs. What ``enqueue`` answers for each, in order, up to the first 'exists'
_ENQUEUE_MANY = """
local replies, i = {}, 4
while i <= #ARGV do
  local id, idem, not_before, queues = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), {}
  local n = tonumber(ARGV[i + 3])
  for j = 1, n do queues[j] = QUEUE .. ARGV[i + 3 + j] end
  i = i + 4 + n
  n = tonumber(ARGV[i])
  local reply = enqueue(id, idem, not_before, queues, {unpack(ARGV, i + 1, i + n)},
                        KEYS[1], KEYS[2])
  i = i + 1 + n
  replies[#replies + 1] = reply
  if reply[1] == 'exists' then break end
end
return replies
"""

#: KEYS: running, delayed, queues... ARGV[4..]: lease_until, count, worker, then the
#: offer: slots (0: none), until when, the lease of a job handed. The HGETALL of each job
#: claimed. The slots left free after the claim are offered on the queues (see ``hand``)
_CLAIM = """
local lease_until, count, worker = ARGV[4], tonumber(ARGV[5]), ARGV[6]
promote(KEYS[2], 1000)
local taken = {}
for i = 3, #KEYS do
  while #taken < count do
    local id = redis.call('LPOP', KEYS[i])
    if not id then break end
    local key = JOB .. id
    local job = redis.call('HMGET', key, 'state', 'not_before', 'queues')
    if job[1] == 'queued' then  -- anything else (taken elsewhere, ended, purged) is dropped
      local not_before = tonumber(job[2]) or 0
      if not_before > NOW then  -- not due: it waits in the delayed set, not on the list
        redis.call('ZADD', KEYS[2], 'NX', not_before, id)
      else
        redis.call('HINCRBY', key, 'attempts', 1)
        redis.call('HSET', key, 'state', 'running', 'worker', worker,
                   'lease_until', lease_until, 'started', NOW)
        redis.call('ZADD', KEYS[1], lease_until, id)
        move(job[3], 'queued', 'running')
        taken[#taken + 1] = redis.call('HGETALL', key)
      end
    end
  end
end
local names = {}
for i = 3, #KEYS do names[#names + 1] = string.sub(KEYS[i], #QUEUE + 1) end
offer(worker, tonumber(ARGV[7]) - #taken, ARGV[9], ARGV[8], names)
return taken
"""

#: ARGV[4]: the worker, which waits on no queue any more
_WITHDRAW = """
withdraw(ARGV[4])
"""

#: the fence: 1 if the job is RUNNING under attempt ARGV[5] (ARGV[4] is its id), else 0
_FENCE = """
local id, attempt = ARGV[4], ARGV[5]
local job = redis.call('HMGET', JOB .. id, 'state', 'attempts', 'cancel_requested',
                       'max_attempts', 'queues')
if job[1] ~= 'running' or job[2] ~= attempt then return false end
"""

#: KEYS: running. ARGV[6]: lease_until. 1 if renewed, else nil
_RENEW = """
if job[3] == '1' then return false end
redis.call('HSET', JOB .. id, 'lease_until', ARGV[6])
redis.call('ZADD', KEYS[1], ARGV[6], id)
return 1
"""

#: KEYS: running, final. ARGV[6]: the result. 1 if done, else nil
_COMPLETE = """
redis.call('ZREM', KEYS[1], id)
redis.call('HSET', JOB .. id, 'result', ARGV[6])
finish(id, 'done', '', KEYS[2], 'running')
return 1
"""

#: KEYS: running, final. ARGV[4..]: (id, attempt, result) of each job in turn.
#: For each, in order: 1 if done, 0 for a stale attempt (nothing changes)
_COMPLETE_MANY = """
local done = {}
for i = 4, #ARGV, 3 do
  local id, key = ARGV[i], JOB .. ARGV[i]
  local job = redis.call('HMGET', key, 'state', 'attempts')
  if job[1] == 'running' and job[2] == ARGV[i + 1] then
    redis.call('ZREM', KEYS[1], id)
    redis.call('HSET', key, 'result', ARGV[i + 2])
    finish(id, 'done', '', KEYS[2], 'running')
    done[#done + 1] = 1
  else
    done[#done + 1] = 0
  end
end
return done
"""

#: KEYS: running, delayed, final. ARGV[6..]: the error, the retry delay or ''.
#: The new state, or nil for a stale attempt
_FAIL = """
redis.call('ZREM', KEYS[1], id)
redis.call('HSET', JOB .. id, 'error', ARGV[6])
local attempts, most = tonumber(job[2]), tonumber(job[4])
if job[3] == '1' then
  finish(id, 'cancelled', 'cancelled while it ran', KEYS[3], 'running')
  return 'cancelled'
elseif ARGV[7] == '' then
  finish(id, 'failed', 'failed on attempt ' .. attempts .. ', no retry asked', KEYS[3],
         'running')
  return 'failed'
elseif attempts >= most then
  finish(id, 'dead', 'failed on attempt ' .. attempts .. ' of ' .. most .. ': no attempts left',
         KEYS[3], 'running')
  return 'dead'
end
local not_before = NOW + tonumber(ARGV[7])
redis.call('HSET', JOB .. id, 'state', 'queued', 'not_before', not_before, 'worker', '',
           'lease_until', 0, 'reason', 'failed on attempt ' .. attempts .. ', retried')
move(job[5], 'running', 'queued')
if not_before > NOW then redis.call('ZADD', KEYS[2], not_before, id) else push(id, job[5]) end
return 'queued'
"""

#: KEYS: running, delayed, final, index. ARGV[4..]: limit, idempotency prefix, output suffix.
#: {jobs changed, 1 if a limit was reached (call again)}
_SWEEP = """
local limit, changed = tonumber(ARGV[4]), 0
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3], 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  local key = JOB .. id
  local job = redis.call('HMGET', key, 'state', 'attempts', 'max_attempts', 'queues',
                         'cancel_requested')
  if job[1] == 'running' then
    changed = changed + 1
    local attempts, most = tonumber(job[2]), tonumber(job[3])
    local why = 'lease expired on attempt ' .. attempts .. ' (its worker stopped renewing)'
    if job[5] == '1' then
      finish(id, 'cancelled', why .. ' after its cancellation', KEYS[3], 'running')
    elseif attempts < most then
      redis.call('HSET', key, 'state', 'queued', 'worker', '', 'lease_until', 0, 'reason', why)
      push(id, job[4])
      move(job[4], 'running', 'queued')
    else
      finish(id, 'dead', why .. ', no attempts left', KEYS[3], 'running')
    end
  end
end
local promoted = promote(KEYS[2], limit)
local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[3], 'LIMIT', 0, limit)
for _, id in ipairs(old) do
  local key = JOB .. id
  local job = redis.call('HMGET', key, 'idempotency_key', 'queues', 'state')
  local idem = job[1]
  move(job[2], job[3], '')
  if idem and redis.call('GET', ARGV[5] .. idem) == id then redis.call('DEL', ARGV[5] .. idem) end
  redis.call('DEL', key, key .. ARGV[6])
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
  changed = changed + 1
end
local more = (#expired == limit or promoted == limit or #old == limit) and 1 or 0
return {changed, more}
"""

#: KEYS: delayed, final. ARGV[4]: id. The state after, or nil for an unknown job
_CANCEL = """
local id = ARGV[4]
local state = redis.call('HGET', JOB .. id, 'state')
if not state then return false end
if state == 'queued' then
  redis.call('ZREM', KEYS[1], id)
  finish(id, 'cancelled', 'cancelled before it ran', KEYS[2], 'queued')
  return 'cancelled'
elseif state == 'running' then
  redis.call('HSET', JOB .. id, 'cancel_requested', '1')
end
return state
"""

#: KEYS: final. ARGV[4]: id. A failed, dead or cancelled job QUEUED again at once, with one
#: attempt more if it had none left: 'queued'; any other state as it is; nil for an unknown job
_RETRY = """
local id = ARGV[4]
local key = JOB .. id
local job = redis.call('HMGET', key, 'state', 'attempts', 'max_attempts', 'queues')
local state = job[1]
if not state then return false end
if state ~= 'failed' and state ~= 'dead' and state ~= 'cancelled' then return state end
local attempts = tonumber(job[2])
local most = math.max(tonumber(job[3]), attempts + 1)
redis.call('ZREM', KEYS[1], id)
redis.call('HDEL', key, 'result', 'error')
redis.call('HSET', key, 'state', 'queued', 'max_attempts', most, 'not_before', NOW,
           'started', 0, 'finished', 0, 'worker', '', 'lease_until', 0, 'cancel_requested', '0',
           'reason', 'retried by hand (it was ' .. state .. ')')
push(id, job[4])
move(job[4], state, 'queued')
return 'queued'
"""

#: KEYS: counts. ARGV[1]: the queue prefix. {HGETALL of the counts, {name, length}...}
_QUEUES = """
local counts = redis.call('HGETALL', KEYS[1])
local seen, lengths = {}, {}
for i = 1, #counts, 2 do
  local name = string.match(counts[i], '^(%S+) ')
  if name and not seen[name] then
    seen[name] = true
    lengths[#lengths + 1] = name
    lengths[#lengths + 1] = redis.call('LLEN', ARGV[1] .. name)
  end
end
return {counts, lengths}
"""

#: forget the workers whose time ran out (KEYS: the workers' set, their records; ARGV[1]: now),
#: and what they offered
_FORGET = f"""
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
for _, name in ipairs(gone) do
  redis.call('HDEL', KEYS[2], name)
  redis.call('HDEL', '{keys.IDLE_OFFERS}', name)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
"""

#: ARGV[2..]: name, live until, the record. Forgets the dead, then records this one
_BEAT = """
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
"""

#: the records of the live workers
_WORKERS = """
return redis.call('HVALS', KEYS[2])
"""

#: KEYS: job, output. ARGV[1]: text, ARGV[2]: the attempt ('' for any). Added only while
#: the job exists (and, given an attempt, runs under it); 1 if added, else 0
_APPEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[2] ~= '' then
  local job = redis.call('HMGET', KEYS[1], 'state', 'attempts')
  if job[1] ~= 'running' or job[2] ~= ARGV[2] then return 0 end
end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
"""


class JobScripts:
    """The scripts, registered with one client (each runs by EVALSHA, loaded on first use)."""

    def __init__(self, client: Any) -> None:
        self.enqueue = client.register_script(_PRELUDE + _ENQUEUE_ONE + _ENQUEUE)
        self.enqueue_many = client.register_script(_PRELUDE + _ENQUEUE_ONE + _ENQUEUE_MANY)
        self.complete_many = client.register_script(_PRELUDE + _COMPLETE_MANY)
        self.claim = client.register_script(_PRELUDE + _CLAIM)
        self.withdraw = client.register_script(_PRELUDE + _WITHDRAW)
        self.renew = client.register_script(_PRELUDE + _FENCE + _RENEW)
        self.complete = client.register_script(_PRELUDE + _FENCE + _COMPLETE)
        self.fail = client.register_script(_PRELUDE + _FENCE + _FAIL)
        self.sweep = client.register_script(_PRELUDE + _SWEEP)
        self.cancel = client.register_script(_PRELUDE + _CANCEL)
        self.retry = client.register_script(_PRELUDE + _RETRY)
        self.queues = client.register_script(_QUEUES)
        self.beat = client.register_script(_FORGET + _BEAT)
        self.workers = client.register_script(_FORGET + _WORKERS)
        self.append = client.register_script(_APPEND)
