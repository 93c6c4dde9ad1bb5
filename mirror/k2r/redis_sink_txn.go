package k2r

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/mirror/mapping"
	"github.com/xmirror/xmirror/mirror/setting"
)

// Move is what one batch moves for one partition.
type Move struct {
	Partition checkpoint.TopicPartition
	// From is the position the batch starts from, which must be the one
	// stored (or checkpoint.NoPosition: none stored).
	From int64
	// To is the next offset after the batch.
	To int64
}

// Write is one destination stream's share of a batch: its entries and
// the positions of the partitions they came from, applied in one atomic
// step by applySteps.
type Write struct {
	Stream string
	Moves  []Move
	// Bytes is the payload size of the entries, for the running total.
	Bytes int64

	args   []string // id, name, value, ... for each entry
	starts []int    // where each entry begins in args

	// PreserveIDs: what the check is to find of each entry (IDNew,
	// IDPresent, IDBelowTop), nil until a check refused the write
	// (Expect); only IDNew entries are written.
	class []byte
	// listIDs: the check is given every ID even though class is nil.
	listIDs bool
	// state is the stream's state class was found in (IDCheckError).
	state string
	// sorted caches whether the IDs increase: 0 not known, 1 yes, 2 no.
	sorted int8
	// gen counts changes that make built XADDs stale.
	gen int
	// digests caches the check's digest of each entry ("" not yet).
	digests []string
}

// What the atomic step's check finds of an entry ID under PreserveIDs.
const (
	// IDNew is above the stream's last ID (and the IDs written before
	// it in the write): XADD adds it.
	IDNew byte = 'w'
	// IDPresent is in the stream already, with the same fields (or
	// written earlier in the same write): it is not written again.
	IDPresent byte = 'p'
	// IDTaken is below the top, and the stream holds another entry
	// (other fields) under that ID: it cannot be written either.
	IDTaken byte = 't'
	// IDBelowTop is not in the stream but at or below its last ID:
	// Redis refuses to add it (XADD takes only IDs above the last one).
	IDBelowTop byte = 'b'
)

// Reserve makes room for about entries more entries of nfields fields, so
// a batch's arguments are allocated once rather than grown by doubling.
func (w *Write) Reserve(entries, nfields int) {
	// Bounded: a batch of entries with thousands of fields grows instead.
	const maxArgs = 1 << 16
	if n := min(entries*(1+2*nfields), maxArgs); cap(w.args)-len(w.args) < n {
		w.args = append(make([]string, 0, len(w.args)+n), w.args...)
	}
	if cap(w.starts)-len(w.starts) < entries {
		w.starts = append(make([]int, 0, len(w.starts)+entries), w.starts...)
	}
}

// AddEntry starts an entry with ID id ("*" to let Redis choose); its fields
// follow with AddField. Reserve sizes a batch's worth of them at once.
func (w *Write) AddEntry(id string) {
	w.starts = append(w.starts, len(w.args))
	w.args = append(w.args, id)
}

// AddField adds a field to the entry AddEntry started.
func (w *Write) AddField(name, value string) {
	w.args = append(w.args, name, value)
}

// Entries is the number of entries added.
func (w *Write) Entries() int { return len(w.starts) }

// ID is the ID given to entry i.
func (w *Write) ID(i int) string { return w.args[w.starts[i]] }

// EntryBytes is the size of entry i's field names and values.
func (w *Write) EntryBytes(i int) int64 {
	n := 0
	for _, a := range w.entry(i)[1:] {
		n += len(a)
	}
	return int64(n)
}

// Expect sets, under PreserveIDs, what the next check is to find of each
// entry (see IDNew), as an *IDCheckError's Classes told it: only the IDNew
// entries are written, and the check refuses the write again unless it
// finds every entry as expected. Expect(nil) expects every entry new but
// has the check look at each one, so that a refusal says what it found.
//
// state is the IDCheckError's State the classes come from: the check
// takes them as they are while the stream stays in that state.
func (w *Write) Expect(classes []byte, state string) {
	if classes != nil && len(classes) != len(w.starts) {
		panic(fmt.Sprintf("k2r: %d classes for %d entries", len(classes), len(w.starts)))
	}
	w.class = append([]byte(nil), classes...)
	w.state = state
	if classes == nil {
		w.class, w.state = nil, ""
	}
	w.listIDs = true
	w.gen++
}

// Classes are what Expect last set (nil: every entry new).
func (w *Write) Classes() []byte { return w.class }

// Truncate drops the entries from n on (their records are to be mirrored
// again: the caller moves the write's positions back to the first of
// them).
func (w *Write) Truncate(n int) {
	if n >= len(w.starts) {
		return
	}
	w.args = w.args[:w.starts[n]]
	w.starts = w.starts[:n]
	w.digests = w.digests[:min(n, len(w.digests))]
	if w.class != nil {
		w.class = w.class[:n]
	}
	w.gen++
}

// toWrite is the number of entries w's transaction XADDs.
func (w *Write) toWrite(opt stepOptions) int {
	switch {
	case opt.PreserveIDs && w.classifyOnly():
		return 0
	case w.class == nil:
		return len(w.starts)
	}
	return bytes.Count(w.class, []byte{IDNew})
}

// classifyOnly (PreserveIDs) is a write whose entries are not expected
// to be all new (Expect(nil), or IDs not increasing) and not yet
// classified: its check only says what they are. Its transaction carries
// no XADD and can never apply (see appendWrite), so that nothing is built
// and sent for entries the check is about to refuse.
func (w *Write) classifyOnly() bool {
	return w.class == nil && len(w.starts) > 0 && (w.listIDs || !w.increasing())
}

// increasing reports whether the entry IDs go strictly up, so that, when
// the first is above the stream's last ID, every one is.
func (w *Write) increasing() bool {
	if w.sorted == 0 {
		w.sorted = 1
		var pm, ps uint64
		for i := range w.starts {
			ms, seq, ok := mapping.ParseID(w.ID(i))
			if !ok || i > 0 && (ms < pm || ms == pm && seq <= ps) {
				w.sorted = 2
				break
			}
			pm, ps = ms, seq
		}
	}
	return w.sorted == 1
}

// entry is the id and fields of entry i.
func (w *Write) entry(i int) []string {
	end := len(w.args)
	if i+1 < len(w.starts) {
		end = w.starts[i+1]
	}
	return w.args[w.starts[i]:end]
}

// stepOptions shape the atomic step.
type stepOptions struct {
	// Name is the mirror's name.
	Name string
	// MaxLen, when positive, trims each stream to about that many entries
	// (XADD MAXLEN ~).
	MaxLen int64
	// PreserveIDs: the entry IDs given are explicit (canonical
	// <ms>-<seq>). The check looks at them in the same atomic step: a
	// write whose entries are not all new (above the stream's last ID)
	// is refused with an *IDCheckError saying what each one is, until
	// the caller decided (Expect) and applies it again. The stream is
	// watched too, so no other client's XADD can come between the check
	// and the entries.
	PreserveIDs bool

	// afterCheck, set by tests only, runs between the first write's check
	// and the rest of its transaction, which then go in two round trips
	// on one connection (dc): what another client, or the server, does in
	// that window.
	afterCheck func(dc rueidis.DedicatedClient)
}

// IDCheckError is the Err of a PreserveIDs write whose entries the check
// did not find as the write expected (every one new, until Expect said
// otherwise): nothing of it was applied. Apply it again once Expect was
// given Classes (or nil, when the check did not classify the entries).
type IDCheckError struct {
	Stream string
	// LastID is the stream's last ID when checked ("0-0": no stream):
	// XADD refuses IDs at or below it.
	LastID string
	// Classes has, per entry, IDNew, IDPresent, IDTaken or IDBelowTop, as the
	// entries would be applied in order; nil when the write was checked
	// by its first ID only (its IDs increase): Expect(nil) lists them.
	Classes []byte
	// State is the stream's state the classes were found in, for Expect.
	State string
}

func (e *IDCheckError) Error() string {
	if e.Classes == nil {
		return fmt.Sprintf("stream %q: the first entry ID is not above the stream's last ID %s; nothing was written", e.Stream, e.LastID)
	}
	return fmt.Sprintf("stream %q: entry IDs not all above the stream's last ID %s (%d present, %d taken by other entries, %d below it); nothing was written",
		e.Stream, e.LastID, bytes.Count(e.Classes, []byte{IDPresent}), bytes.Count(e.Classes, []byte{IDTaken}), bytes.Count(e.Classes, []byte{IDBelowTop}))
}

// writeResult is what the step did to one stream.
type writeResult struct {
	// Added entries and Present ones (PreserveIDs: the check found the
	// ID in the stream, and it was not written again).
	Added, Present int64
	// Replayed is true when the checkpoint already held the batch's end
	// positions: the batch had been applied (a retry after a lost reply)
	// and nothing was written again.
	Replayed bool
	// Err is why this write was not applied; nil when it was (or had
	// been: Replayed).
	Err error
	// LastID is the ID of the last entry added ("" when none was): that
	// Redis still holds it tells a checkpoint moved back from one that
	// went back with its stream (see LostWritesError).
	LastID string
}

// ConflictError is returned when a checkpoint does not hold the position a
// batch starts from. A position ahead of it was moved by another process;
// one behind it went back, which Redis losing writes does (see
// LostWritesError) and so does a user moving it back by hand.
type ConflictError struct {
	Key       string
	Name      string
	Partition checkpoint.TopicPartition
	Stored    int64 // checkpoint.NoPosition: none stored
	Expected  int64 // checkpoint.NoPosition: none expected
	// Stream and Kept, when Kept is set: the position went back although
	// the stream still holds entry Kept, which this mirror wrote after
	// it, so Redis did not lose those writes.
	Stream, Kept string
}

// WentBack reports whether the checkpoint holds a position behind the one
// the batch starts from (or none where one was expected).
func (e *ConflictError) WentBack() bool {
	return e.Expected != checkpoint.NoPosition && (e.Stored == checkpoint.NoPosition || e.Stored < e.Expected)
}

func (e *ConflictError) Error() string { return e.RenderSettings(nil) }

// RenderSettings is the error's text with the settings it names named by
// names (see setting.Text).
func (e *ConflictError) RenderSettings(names setting.Names) string {
	pos := func(o int64) string {
		if o == checkpoint.NoPosition {
			return "no position"
		}
		return "offset " + strconv.FormatInt(o, 10)
	}
	head := fmt.Sprintf("checkpoint %q: partition %s holds %s, but this mirror continues from %s", e.Key, e.Partition, pos(e.Stored), pos(e.Expected))
	if e.WentBack() && e.Kept != "" {
		return fmt.Sprintf("%s: the position went back, yet stream %q still holds entry %s that this mirror wrote after it, so Redis did not lose these writes: another process or a user moved it back, and mirroring again from there would write records twice; set field %q back to %d (HSET), or delete the checkpoint and the stream to mirror everything again",
			head, e.Stream, e.Kept, checkpoint.K2RPositionField(e.Partition), e.Expected)
	}
	return setting.Text(names, "%s; another process is probably running under mirror name %q (stop it, or give this one another {Name})", head, e.Name)
}

// LostWritesError is a write refused because the checkpoint went back
// together with its stream: the stream no longer holds the last entry this
// mirror wrote to it, and the positions are behind those that entry was
// written with. Redis lost its latest writes (it restarted from an older
// snapshot or AOF, or a replica that had not received them was promoted);
// since entries and positions are written in one transaction, what it
// kept is consistent, and mirroring again from the positions it holds
// writes every record once.
type LostWritesError struct {
	Key, Stream string
	Partition   checkpoint.TopicPartition
	// From is the position this mirror continued from; To the one Redis
	// holds (checkpoint.NoPosition: the checkpoint is gone).
	From, To int64
	// Lost is the last entry this mirror wrote to the stream, now gone.
	Lost string
}

func (e *LostWritesError) Error() string { return e.RenderSettings(nil) }

// RenderSettings is the error's text with the settings it names named by
// names (see setting.Text).
func (e *LostWritesError) RenderSettings(names setting.Names) string {
	where := fmt.Sprintf("checkpoint %q, stream %q", e.Key, e.Stream)
	if e.Lost != "" {
		where += fmt.Sprintf(", which lost entry %s written after them", e.Lost)
	}
	if e.To == checkpoint.NoPosition {
		return setting.Text(names, "Redis lost writes: the position of %s is gone (it was offset %d; %s); mirroring it again as a partition without a checkpoint ({Start}; with {Start} latest the run stops instead, as it would skip what was lost: set the field (HSET) to the first offset the stream lacks, and run again)",
			e.Partition, e.From, where)
	}
	return fmt.Sprintf("Redis lost writes: positions of %s went back from %d to %d (%s); mirroring again from %d",
		e.Partition, e.From, e.To, where, e.To)
}

// checkScript runs right before a batch's transaction, on the same
// connection, with the checkpoint and the guard key watched. It checks that
// the destination is a stream (or nothing yet), that the checkpoint is one
// of ours and that it holds the positions the batch starts from. On
// anything but "ok" it touches the guard key, so the EXEC that follows
// aborts and nothing of the batch is written; that includes an error in
// the check itself. Once it said "ok", a change to the checkpoint by any
// other client before the EXEC aborts it too (WATCH).
//
// KEYS: stream, checkpoint, guard. ARGV: version, kind, nmoves, then
// nmoves x (field, from, to, last) where from "" means absent and last is
// the end of the last write of the same call for that partition: a
// position from to up to last means this write was applied already, by an
// attempt whose reply was lost (and maybe writes after it too).
//
// Then nids, expect, state, lo, hi and nids (ID, digest) pairs
// (PreserveIDs; nids 0 or absent otherwise): with expect "" the IDs
// increase and only the first is given (nothing after it), which must be
// above the stream's last ID; else expect has a class per ID (IDNew,
// IDPresent, IDTaken, IDBelowTop) and each ID must be found so, in order:
// new when above the last ID and the new IDs before it; present when the
// stream (or a new entry before it) holds that ID with the same fields
// (the digest: SHA-1 of each name and value as <length>:<bytes>); taken
// when it holds another entry there; else below the top. lo and hi are
// the least and greatest ID, so that one XRANGE finds the entries there.
// state, when not "", is the stream's state the classes were found in
// (last ID, entries added, greatest deleted ID, length, from XINFO STREAM):
// a stream still in that state has had no entry added, deleted or trimmed
// since, and the classes still hold without looking again.
//
// Replies: {"ok"}, {"replayed"}, {"conflict", field, stored, expected},
// {"ids", last ID[, classes found, state]}, {"corrupt", why}, {"wrongtype",
// type} or {"error", message}.
const checkScript = startsLua + `
local stream, ck, guard = KEYS[1], KEYS[2], KEYS[3]
local function above(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if #am ~= #bm then return #am > #bm end
  if am ~= bm then return am > bm end
  if #as ~= #bs then return #as > #bs end
  return as > bs
end
local function checkids(at)
  local nids = tonumber(ARGV[at] or '0')
  if nids == 0 then return nil end
  local expect = ARGV[at+1]
  local last, state = '0-0', ''
  if redis.call('EXISTS', stream) == 1 then
    local info, f = redis.call('XINFO', 'STREAM', stream), {}
    for k = 1, #info, 2 do f[info[k]] = info[k+1] end
    last = f['last-generated-id']
    if not last then error('XINFO STREAM gave no last-generated-id') end
    if f['entries-added'] and f['max-deleted-entry-id'] then
      state = last .. ' ' .. f['entries-added'] .. ' ' .. f['max-deleted-entry-id'] .. ' ' .. f['length']
    end
  end
  if expect == '' then
    if above(ARGV[at+2], last) then return nil end
    return {'ids', last}
  end
  -- Classes found in a stream that has not changed since still hold.
  if state ~= '' and ARGV[at+2] == state then return nil end
  local lo, hi, base = ARGV[at+3], ARGV[at+4], at + 3
  -- The entries in the write's span, in one call when they are not many.
  local span, limit = {}, 2 * nids + 16
  local found = redis.call('XRANGE', stream, lo, hi, 'COUNT', limit)
  local whole = #found < limit
  for _, e in ipairs(found) do span[e[1]] = e[2] end
  local function digest(id)
    local fields = span[id]
    if not fields and not whole then
      local e = redis.call('XRANGE', stream, id, id)
      if #e > 0 then fields = e[1][2] end
    end
    if not fields then return nil end
    local parts = {}
    for _, f in ipairs(fields) do parts[#parts+1] = #f .. ':' .. f end
    return redis.sha1hex(table.concat(parts))
  end
  local top, mine, got, differ = last, {}, {}, false
  for k = 1, nids do
    local id, sum, c = ARGV[base+2*k], ARGV[base+2*k+1], 'b'
    if above(id, top) then
      c, top = 'w', id
      mine[id] = sum
    else
      local there = mine[id] or digest(id)
      if there == sum then c = 'p' elseif there then c = 't' end
    end
    got[k] = c
    if c ~= string.sub(expect, k, k) then differ = true end
  end
  if differ then return {'ids', last, table.concat(got), state} end
  return nil
end
local function check()
  local st = redis.call('TYPE', stream).ok
  if st ~= 'none' and st ~= 'stream' then return {'wrongtype', st} end
  local refused, i = starts(ck)
  if refused then return refused end
  return checkids(i) or {'ok'}
end
local done, res = pcall(check)
if not done then res = {'error', tostring(res)} end
if res[1] ~= 'ok' then
  redis.call('SET', guard, '1')
  redis.call('DEL', guard)
end
return res
`

// startsLua defines starts(ck), shared by the check and the begin
// script: whether checkpoint ck is one of ours and holds the positions a
// write starts from. ARGV: version, kind, nmoves, then nmoves x (field,
// from, to, last) (see checkScript). It returns nil and the index of
// the ARGV after the moves when it does, else the refusal: {"replayed"},
// {"conflict", field, stored, expected} or {"corrupt", why}.
const startsLua = `
local function starts(ck)
  local ct = redis.call('TYPE', ck).ok
  if ct ~= 'none' then
    if ct ~= 'hash' then return {'corrupt', 'it holds a ' .. ct .. ', not a hash'} end
    local h = redis.call('HMGET', ck, 'version', 'kind')
    if h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then
      return {'corrupt', 'version/kind are ' .. tostring(h[1]) .. '/' .. tostring(h[2])}
    end
  end
  local nmoves = tonumber(ARGV[3])
  local replayed, first = 0, nil
  local i = 4
  for m = 1, nmoves do
    local cur = redis.call('HGET', ck, ARGV[i]) or ''
    if cur ~= ARGV[i+1] then
      local at = tonumber(cur)
      if at and at >= tonumber(ARGV[i+2]) and at <= tonumber(ARGV[i+3]) then replayed = replayed + 1 end
      if not first then first = {'conflict', ARGV[i], cur, ARGV[i+1]} end
    end
    i = i + 4
  end
  if nmoves > 0 and replayed == nmoves then return {'replayed'} end
  if first then return first end
  return nil, i
end
`

// beginScript is the first command inside a write's transaction: the
// compare-and-set again, where nothing can come between it and the
// XADDs. The check before MULTI makes EXEC abort when the positions are
// not the write's start, but only if it ran: a server that refused it for
// a moment (-LOADING as a restarted Redis finishes loading its AOF,
// -BUSY) and accepted the commands after it runs the transaction without
// any check. Then this script finds the positions wrong and records the
// stream's state before the XADDs (last ID and entries added, or "none"
// when there is no stream) in the mark key, and the
// positions script at the end of the same EXEC takes the XADDs back (see
// positionsScript): the transaction applies nothing, and no reader,
// replica or AOF ever sees the entries. A write whose positions are right
// writes no mark: the common case costs a few reads.
//
// KEYS: stream, checkpoint, mark. ARGV: as startsLua's. Replies: as
// the check's, but never "ids" or "wrongtype".
const beginScript = startsLua + `
local stream, ck, mark = KEYS[1], KEYS[2], KEYS[3]
local done, res = pcall(starts, ck)
if done and not res then return {'ok'} end
if not done then res = {'error', tostring(res)} end
local state = 'none'
local st = redis.call('TYPE', stream).ok
if st == 'stream' then
  local info, f = redis.call('XINFO', 'STREAM', stream), {}
  for k = 1, #info, 2 do f[info[k]] = info[k+1] end
  -- Redis before 7.0 keeps no entries-added counter.
  state = f['last-generated-id'] .. ' ' .. (f['entries-added'] or '-')
elseif st ~= 'none' then
  -- The XADDs fail on it: nothing to take back.
  state = 'kept'
end
redis.call('SET', mark, state)
return res
`

// positionsScript moves a write's positions, queued in its transaction
// right after the XADDs. The stream is not WATCHed (except under
// PreserveIDs, where the check's view of the IDs must hold until EXEC), so
// its key can change type between the check and EXEC (another client's DEL
// and SET), and EXEC
// does not roll back: the XADDs would fail and the positions still move,
// checkpointing the batch without its entries. Nothing runs between the
// XADDs and this script inside EXEC, so it sees the key as they saw it and
// writes the positions only if it is a stream (or nothing: a write whose
// records all were skipped adds no entry). WATCHing the stream instead
// would abort the transaction on any other writer's XADD to it, which a
// stream shared with an application, or fed with PreserveIDs beside
// one, sees all the time: each would be a false conflict and a retry of
// the whole batch. The script costs one command in place of the four it
// replaces. It is sent as EVAL, not EVALSHA: inside a transaction a
// NOSCRIPT (a script cache flushed, a failover) would fail at EXEC, after
// the XADDs.
//
// It first takes the XADDs back when the begin script found the write's
// start wrong (a mark is there): the entries after the recorded last ID
// are deleted and the stream's last ID and entries-added counter set back
// (XSETID), or the stream, which did not exist, is deleted. What MAXLEN
// trimmed to make room for them stays trimmed, and the stream's greatest
// deleted ID stays theirs (XSETID cannot lower it). Without a mark it verifies the start once
// more (the begin script may have been unable to run) and moves nothing
// if it is wrong.
//
// KEYS: stream, checkpoint, mark. ARGV: entries, bytes, nmoves, nmoves x
// (field, from, to), then the checkpoint's other field/value pairs.
// Replies: {"ok"}, {"wrongtype", type}, {"undone", entries taken back} or
// {"unchecked", field, stored, expected}.
const positionsScript = `
local stream, ck, mark = KEYS[1], KEYS[2], KEYS[3]
local state = redis.call('GET', mark)
if state then
  redis.call('DEL', mark)
  local n = 0
  if state == 'none' then
    if redis.call('TYPE', stream).ok == 'stream' then
      n = redis.call('XLEN', stream)
      redis.call('DEL', stream)
    end
  elseif state ~= 'kept' then
    local last, added = string.match(state, '^(%S+) (%S+)$')
    local ids = {}
    for _, e in ipairs(redis.call('XRANGE', stream, '(' .. last, '+')) do
      ids[#ids+1] = e[1]
      if #ids == 1000 then
        redis.call('XDEL', stream, unpack(ids))
        n, ids = n + #ids, {}
      end
    end
    if #ids > 0 then redis.call('XDEL', stream, unpack(ids)) end
    n = n + #ids
    if added == '-' then
      redis.call('XSETID', stream, last)
    else
      redis.call('XSETID', stream, last, 'ENTRIESADDED', added)
    end
  end
  return {'undone', tostring(n)}
end
local t = redis.call('TYPE', stream).ok
if t ~= 'stream' and t ~= 'none' then return {'wrongtype', t} end
local nmoves, moves = tonumber(ARGV[3]), {}
for m = 0, nmoves - 1 do
  local field, from = ARGV[4+3*m], ARGV[5+3*m]
  local cur = redis.call('HGET', ck, field) or ''
  if cur ~= from then return {'unchecked', field, cur, from} end
  moves[#moves+1], moves[#moves+2] = field, ARGV[6+3*m]
end
if nmoves > 0 then redis.call('HSET', ck, unpack(moves)) end
redis.call('HSET', ck, unpack(ARGV, 4+3*nmoves))
redis.call('HINCRBY', ck, 'entries', ARGV[1])
redis.call('HINCRBY', ck, 'bytes', ARGV[2])
-- Only a write that creates the checkpoint (every partition NoPosition,
-- without InitK2RPartitions) lacks the list; the next InitK2RPartitions
-- lists the partitions it wrote.
redis.call('HSETNX', ck, 'partitions', '')
return {'ok'}
`

// applySteps applies the steps' writes: for each stream, its entries and the
// new positions of their partitions, in one transaction, if and only if the
// checkpoint holds the positions the write starts from. Every write's
// commands go in one pipeline, one round trip in all:
//
//	WATCH checkpoint guard [stream]
//	EVAL check        (touches the guard unless the positions match and,
//	                  PreserveIDs, each entry ID is as the write expects)
//	MULTI
//	EVAL begin        (the compare-and-set again, inside the transaction)
//	XADD ...          (one per entry to write: native, not from a script)
//	EVAL positions    (the positions, version, kind, updated_ms, totals,
//	                   only if the stream is still a stream; the XADDs
//	                   taken back if the begin script found the start wrong)
//	EXEC              (aborted if the guard or the checkpoint changed)
//
// The entries are added by Redis's own XADD rather than from a script:
// the atomic step then costs Redis about as much per entry as plain
// pipelined XADDs. A connection shared with other commands is fine: the
// commands of one DoMulti are written contiguously, so nothing else runs
// between MULTI and EXEC on it, and EXEC or a dropped connection clears
// the watches. The check keeps a wrong write from costing Redis its XADDs;
// the begin and positions scripts make the transaction itself
// conditional, so that a write applies nothing when its start is wrong
// even if the check could not run (a server refusing the script for a
// moment, see beginScript), and the positions move only with the XADDs
// (see positionsScript).
//
// PreserveIDs: the check also reads the stream's last ID and looks each
// entry ID up (XRANGE id id) where the write is not known to be all new,
// inside Redis, in the same atomic step; a write that is not as it expects
// fails with an *IDCheckError that says what each entry is. The stream is
// watched, so another client's XADD between the check and EXEC aborts the
// write (ErrCheckpointChanged) rather than have an entry refused while its
// position moves.
//
// It returns a result per write, in the order of the steps and their
// writes; err is the first failure (a *ConflictError, an *IDCheckError,
// a checkpoint.ErrCorrupt, a Redis or connection error), and each
// result's Err its own. Writes other than the failed ones may have been
// applied, those after a failure too: calling applySteps again with the
// same steps is safe, applied ones come back Replayed.
//
// order chains the call to the calls in flight with it (see callOrder);
// callOrder{} chains nothing.
func (s *RedisSink) applySteps(ctx context.Context, order callOrder, steps ...*step) ([]writeResult, error) {
	c := s.c
	// Where each partition ends after the last write of the call: a
	// write retried after its whole call was applied finds it there.
	last := map[string]string{}
	nwrites := 0
	for _, st := range steps {
		for _, w := range st.writes {
			for _, m := range w.Moves {
				last[w.Stream+"\x00"+checkpoint.K2RPositionField(m.Partition)] = strconv.FormatInt(m.To, 10)
			}
		}
		nwrites += len(st.writes)
	}
	var cmds rueidis.Commands
	if order.After != "" {
		cmds = append(cmds, c.B().Blpop().Key(order.After).Timeout(orderWait).Build())
	}
	var afterCheck func(rueidis.DedicatedClient)
	split := len(cmds) + 2 // after the first write's WATCH and check
	for _, st := range steps {
		if st.xadds == nil || st.stale() {
			st.build(c)
		}
		for i, w := range st.writes {
			cmds = st.appendWrite(c, cmds, w, st.xadds[i], last)
		}
		// rueidis recycles commands once sent: a retry builds them anew.
		st.xadds = nil
		if afterCheck == nil {
			afterCheck = st.opt.afterCheck
		}
	}
	if order.Token != "" {
		cmds = appendOrderToken(c, cmds, order.Token)
	}
	var replies []rueidis.RedisResult
	if afterCheck == nil || len(cmds) <= split {
		replies = c.DoMulti(ctx, cmds...)
	} else {
		c.Dedicated(func(dc rueidis.DedicatedClient) error {
			replies = dc.DoMulti(ctx, cmds[:split]...)
			afterCheck(dc)
			replies = append(replies, dc.DoMulti(ctx, cmds[split:]...)...)
			return nil
		})
	}
	results := make([]writeResult, 0, nwrites)
	var first error
	if order.Token != "" {
		// The writes stand, but the call after this one waits for a
		// token that never comes: failing the call makes the caller
		// release it and apply the writes again (as replays).
		if err := orderTokenErr(replies[len(replies)-orderTokenReplies:]); err != nil {
			first = fmt.Errorf("push order token %q: %w", order.Token, err)
		}
	}
	at := 0
	// A call whose wait did not end with its predecessor's token may
	// have run first: a write it found starting elsewhere is not a
	// conflict yet.
	early := false
	if order.After != "" {
		early = replies[0].Error() != nil
		at = 1
	}
	for _, st := range steps {
		for _, w := range st.writes {
			size := w.toWrite(st.opt) + writeOverhead
			var res writeResult
			res.Err = readResult(replies[at:at+size], st.opt, w, &res, early)
			if res.Err != nil && first == nil {
				first = res.Err
			}
			results = append(results, res)
			at += size
		}
	}
	return results, first
}

// callOrder chains applySteps calls that are in flight together, on
// different connections, so that Redis still runs them in the order they
// were made: a call waits (BLPOP) for the token of the call before it,
// then pushes its own once its commands ran. Redis then goes from one
// call's transactions straight to the next one's, already in its input
// buffer, instead of waiting a round trip for the client.
//
// The order is only about speed: every write is checked against the
// positions it starts from wherever it runs, so a call that ran early
// (its wait timed out) writes nothing it should not, and its refused
// writes fail with ErrOutOfOrder, to be applied again.
type callOrder struct {
	// After is the token of the call to wait for; "" waits for none.
	After string
	// Token is pushed once this call's commands ran; "" pushes none.
	Token string
}

const (
	// orderWait is how long a call waits for the call before it. That
	// one runs in milliseconds, and a failed one has its token pushed
	// for it (releaseOrder): this only bounds a call whose
	// predecessor's token could not be pushed at all.
	orderWait = 5
	// orderTokenTTL lets a token that no call waits for vanish.
	orderTokenTTL = 10 * time.Second
)

// ErrOutOfOrder is wrapped by the error of a write refused because its call
// ran before the call it was to follow had run: nothing of it was applied,
// and applying it again is right.
var ErrOutOfOrder = errors.New("batch reached Redis before the batch it follows")

// releaseOrder pushes tokens of calls that failed, so that the calls
// waiting for them go on now rather than when their wait times out.
func (s *RedisSink) releaseOrder(ctx context.Context, tokens ...string) error {
	c := s.c
	var cmds rueidis.Commands
	for _, t := range tokens {
		cmds = appendOrderToken(c, cmds, t)
	}
	if len(cmds) == 0 {
		return nil
	}
	if err := orderTokenErr(c.DoMulti(ctx, cmds...)); err != nil {
		return fmt.Errorf("push order token: %w", err)
	}
	return nil
}

// appendOrderToken pushes token with its expiry in one transaction, so no
// token outlives orderTokenTTL. Its replies: see orderTokenErr.
func appendOrderToken(c rueidis.Client, cmds rueidis.Commands, token string) rueidis.Commands {
	return append(cmds,
		c.B().Multi().Build(),
		c.B().Lpush().Key(token).Element("1").Build(),
		c.B().Pexpire().Key(token).Milliseconds(orderTokenTTL.Milliseconds()).Build(),
		c.B().Exec().Build())
}

// orderTokenReplies is the number of replies appendOrderToken's commands
// get.
const orderTokenReplies = 4

// orderTokenErr is why the push of appendOrderToken did not happen, if so.
func orderTokenErr(replies []rueidis.RedisResult) error {
	for _, r := range replies {
		if err := r.Error(); err != nil {
			return err
		}
	}
	applied, _ := replies[len(replies)-1].ToArray()
	for _, m := range applied {
		if err := m.Error(); err != nil {
			return err
		}
	}
	return nil
}

// checkOrderAccess tells whether the server lets calls be chained with
// callOrder (an ACL may refuse MULTI, LPUSH, PEXPIRE or BLPOP on xmirror's
// keys). Its token is gone at once, or expires with orderTokenTTL.
func checkOrderAccess(ctx context.Context, c rueidis.Client, name string) error {
	token := checkpoint.K2ROrderKey(name, "access-check", 0)
	cmds := appendOrderToken(c, nil, token)
	cmds = append(cmds, c.B().Blpop().Key(token).Timeout(1).Build())
	replies := c.DoMulti(ctx, cmds...)
	err := orderTokenErr(replies[:orderTokenReplies])
	if err == nil {
		err = replies[orderTokenReplies].Error()
	}
	if err != nil {
		return fmt.Errorf("chaining writes with BLPOP, LPUSH and PEXPIRE on %q: %w", token, err)
	}
	return nil
}

// writeOverhead is the number of commands of a write besides its XADDs.
const writeOverhead = 6

// step is a batch's writes with their XADDs built, ready for applySteps.
// Building them costs the client about as much as Redis spends applying
// them: building the next step while Redis applies the one before keeps
// both busy.
type step struct {
	opt    stepOptions
	writes []*Write
	now    time.Time
	xadds  []rueidis.Commands // per write; nil once sent
	gens   []int              // each write's gen when its xadds were built
}

// newStep builds the XADDs of writes; now is the checkpoint's
// updated_ms.
func (s *RedisSink) newStep(writes []*Write, now time.Time) *step {
	st := &step{opt: s.opt, writes: writes, now: now}
	st.build(s.c)
	return st
}

// Writes are the step's writes, in the order applySteps reports them.
func (st *step) Writes() []*Write { return st.writes }

func (st *step) build(c rueidis.Client) {
	var prefix []string
	if st.opt.MaxLen > 0 {
		prefix = []string{"MAXLEN", "~", strconv.FormatInt(st.opt.MaxLen, 10)}
	}
	st.xadds = make([]rueidis.Commands, len(st.writes))
	st.gens = make([]int, len(st.writes))
	for i, w := range st.writes {
		n := w.toWrite(st.opt)
		xadds := make(rueidis.Commands, 0, n)
		for j := range w.starts {
			if len(xadds) < n && (w.class == nil || w.class[j] == IDNew) {
				xadds = append(xadds, c.B().Arbitrary("XADD").Keys(w.Stream).Args(prefix...).Args(w.entry(j)...).Build())
			}
		}
		st.xadds[i] = xadds
		st.gens[i] = w.gen
	}
}

// stale reports whether a write changed (Expect, Truncate) since its
// XADDs were built.
func (st *step) stale() bool {
	for i, w := range st.writes {
		if st.gens[i] != w.gen {
			return true
		}
	}
	return false
}

// appendWrite appends w's transaction (see applySteps) around its xadds.
func (st *step) appendWrite(c rueidis.Client, cmds rueidis.Commands, w *Write, xadds rueidis.Commands, last map[string]string) rueidis.Commands {
	opt := st.opt
	version := strconv.Itoa(checkpoint.K2RVersion)
	key, guard := checkpoint.K2RKey(opt.Name, w.Stream), checkpoint.K2RGuardKey(opt.Name, w.Stream)
	starts := []string{version, checkpoint.KindKafkaToRedis, strconv.Itoa(len(w.Moves))}
	moves := []string{strconv.Itoa(len(xadds)), strconv.FormatInt(w.Bytes, 10), strconv.Itoa(len(w.Moves))}
	for _, m := range w.Moves {
		from := ""
		if m.From != checkpoint.NoPosition {
			from = strconv.FormatInt(m.From, 10)
		}
		field, to := checkpoint.K2RPositionField(m.Partition), strconv.FormatInt(m.To, 10)
		starts = append(starts, field, from, to, last[w.Stream+"\x00"+field])
		moves = append(moves, field, from, to)
	}
	check := c.B().Eval().Script(checkScript).Numkeys(3).Key(w.Stream, key, guard).Arg(starts...)
	// The guard is the begin script's mark too: it exists only inside
	// the EXEC of a write taken back, and another call's transaction
	// watching it then aborts, to be checked again.
	begin := c.B().Eval().Script(beginScript).Numkeys(3).Key(w.Stream, key, guard).Arg(starts...)
	positions := c.B().Eval().Script(positionsScript).Numkeys(3).Key(w.Stream, key, guard).
		Arg(moves...).
		Arg(checkpoint.K2RHeader(st.now)...)
	watch := []string{key, guard}
	if opt.PreserveIDs {
		// The check found each ID new, present or below the top: no
		// other client's XADD may change that before EXEC.
		watch = append(watch, w.Stream)
		check = check.Arg(idArgs(w)...)
	}
	cmds = append(cmds,
		c.B().Watch().Key(watch...).Build(),
		check.Build(),
		c.B().Multi().Build(),
		begin.Build())
	cmds = append(cmds, xadds...)
	move := positions.Build()
	if opt.PreserveIDs && w.classifyOnly() {
		// Never applied, even if the check could not run: an XADD
		// without arguments is refused as it is queued, and EXEC
		// then discards the whole transaction (EXECABORT).
		move = c.B().Arbitrary("XADD").Keys(w.Stream).Build()
	}
	return append(cmds, move, c.B().Exec().Build())
}

// idArgs are the check's arguments for w's entry IDs (see
// checkScript): the first alone while w expects every entry new and its
// IDs increase, else every ID with what it is expected to be.
func idArgs(w *Write) []string {
	switch {
	case len(w.starts) == 0:
		return []string{"0"}
	case w.class == nil && !w.listIDs && w.increasing():
		return []string{"1", "", w.ID(0)}
	}
	expect, state := w.class, w.state
	if expect == nil {
		// classifyOnly: no class matches '?', so the check says what
		// each entry is.
		expect, state = bytes.Repeat([]byte{'?'}, len(w.starts)), ""
	}
	lo, hi := w.ID(0), w.ID(0)
	for i := range w.starts {
		if id := w.ID(i); mapping.IDLess(id, lo) {
			lo = id
		} else if mapping.IDLess(hi, id) {
			hi = id
		}
	}
	args := make([]string, 0, 5+2*len(w.starts))
	args = append(args, strconv.Itoa(len(w.starts)), string(expect), state, lo, hi)
	for i := range w.starts {
		args = append(args, w.ID(i), w.digest(i))
	}
	return args
}

// digest is the check's digest of entry i's fields (see checkScript),
// computed once.
func (w *Write) digest(i int) string {
	if len(w.digests) < len(w.starts) {
		w.digests = append(w.digests, make([]string, len(w.starts)-len(w.digests))...)
	}
	if w.digests[i] == "" {
		w.digests[i] = w.computeDigest(i)
	}
	return w.digests[i]
}

func (w *Write) computeDigest(i int) string {
	h := sha1.New()
	var n [20]byte
	for _, a := range w.entry(i)[1:] {
		h.Write(strconv.AppendInt(n[:0], int64(len(a)), 10))
		h.Write([]byte{':'})
		h.Write([]byte(a))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// checkStepAccess makes sure the server lets this mirror run its atomic
// step on stream: the check script, WATCH and the keys it names (an ACL
// may refuse any of them). Run once per stream before mirroring, it
// changes nothing.
func checkStepAccess(ctx context.Context, c rueidis.Client, name, stream string) error {
	key, guard := checkpoint.K2RKey(name, stream), checkpoint.K2RGuardKey(name, stream)
	// An empty transaction too: were MULTI refused, the commands queued
	// after it would run one by one, outside any transaction.
	replies := c.DoMulti(ctx,
		c.B().Watch().Key(key, guard).Build(),
		c.B().Eval().Script(checkScript).Numkeys(3).Key(stream, key, guard).Arg(strconv.Itoa(checkpoint.K2RVersion), checkpoint.KindKafkaToRedis, "0").Build(),
		c.B().Multi().Build(),
		c.B().Exec().Build())
	for _, r := range replies {
		if err := r.Error(); err != nil && !rueidis.IsRedisNil(err) {
			return fmt.Errorf("stream %q: the server refuses the commands of the atomic write (WATCH, EVAL, MULTI, EXEC, on keys %q and %q): %w; grant this user those commands and keys (an ACL key pattern such as xmirror:*)", stream, key, guard, err)
		}
	}
	return nil
}

// readResult reads the replies to one write's commands (see applySteps).
// early: its call may have run before the call it follows.
func readResult(replies []rueidis.RedisResult, opt stepOptions, w *Write, res *writeResult, early bool) error {
	key, stream := checkpoint.K2RKey(opt.Name, w.Stream), w.Stream
	// checkErr: the check could not run (or WATCH failed); else status.
	var (
		status   string
		check    []rueidis.RedisMessage
		checkErr = replies[0].Error()
	)
	if checkErr == nil {
		check, checkErr = replies[1].ToArray()
	}
	str := func(i int) string {
		if i >= len(check) {
			return ""
		}
		s, _ := check[i].ToString()
		return s
	}
	if checkErr == nil {
		status = str(0)
	}
	refused := func() error {
		switch status {
		case "replayed":
			res.Replayed = true
			return nil
		case "conflict":
			tp, err := checkpoint.ParseK2RPositionField(str(1))
			if err != nil {
				return fmt.Errorf("checkpoint %q: conflict on field %q: %w", key, str(1), checkpoint.ErrCorrupt)
			}
			conflict := &ConflictError{Key: key, Name: opt.Name, Partition: tp, Stored: checkpoint.ParseK2RPosition(str(2)), Expected: checkpoint.ParseK2RPosition(str(3))}
			if early {
				return setting.Errorf("write stream %q: %w (%v)", stream, ErrOutOfOrder, conflict)
			}
			return conflict
		case "corrupt":
			return setting.Errorf("checkpoint %q: %s: %w; delete it or choose another {Name}", key, str(1), checkpoint.ErrCorrupt)
		case "wrongtype":
			return setting.Errorf("stream %q: WRONGTYPE the key holds a %s, not a stream: %w; choose another {Stream} or delete the key", stream, str(1), ErrWrongType)
		case "ids":
			e := &IDCheckError{Stream: stream, LastID: str(1)}
			if len(check) > 2 {
				e.Classes, e.State = []byte(str(2)), str(3)
				if len(e.Classes) != len(w.starts) {
					return fmt.Errorf("write stream %q: the check classified %d entry IDs of %d", stream, len(e.Classes), len(w.starts))
				}
			}
			return e
		}
		return fmt.Errorf("write stream %q: checking checkpoint %q failed: %s %s", stream, key, status, str(1))
	}

	if err := replies[2].Error(); err != nil {
		// MULTI refused: what was to be queued ran command by command
		// (the XADDs and the positions too, if they were allowed).
		if errors.As(err, new(*rueidis.RedisError)) {
			return fmt.Errorf("stream %q: %w: the server refused MULTI (%w), so its commands ran one by one: its entries may have been written without checkpoint %q moving, or twice; grant this user MULTI and EXEC, check the stream's last entries against the checkpoint, and run again", stream, ErrWrittenUnchecked, err, key)
		}
		return fmt.Errorf("write stream %q: %w", stream, err)
	}
	applied, execErr := replies[len(replies)-1].ToArray()
	switch {
	case rueidis.IsRedisNil(execErr):
		// Aborted: nothing of the write was applied.
		if checkErr != nil {
			return fmt.Errorf("write stream %q: checking checkpoint %q: %w", stream, key, checkErr)
		}
		if status != "ok" {
			return refused()
		}
		// The checkpoint changed between the check and EXEC: another
		// process, a user, or (early) the call this one follows.
		// Checking again tells which. (PreserveIDs: or the stream did.)
		what := fmt.Sprintf("checkpoint %q", key)
		if opt.PreserveIDs {
			what += " or the stream"
		}
		return fmt.Errorf("write stream %q: %s changed while the batch was being written: %w", stream, what, ErrCheckpointChanged)
	case execErr != nil:
		// Refused as a whole: nothing was written.
		if checkErr == nil && status != "ok" {
			return refused()
		}
		if opt.PreserveIDs && w.classifyOnly() {
			return fmt.Errorf("write stream %q: checking the entry IDs: the check did not classify them (%v, %s); nothing was written", stream, checkErr, status)
		}
		// EXECABORT says only that a command was refused while queued;
		// that refusal says why (LOADING after a restart, OOM, NOPERM),
		// which tells whether to try again.
		for _, r := range replies[2 : len(replies)-1] {
			if err := r.Error(); err != nil {
				return fmt.Errorf("write stream %q: transaction refused: %w", stream, err)
			}
		}
		if checkErr != nil {
			return fmt.Errorf("write stream %q: checking checkpoint %q: %w", stream, key, checkErr)
		}
		return fmt.Errorf("write stream %q: %w", stream, execErr)
	}

	// Applied. Whatever the check said, the begin script's compare-and-set
	// inside the transaction decided what it did.
	nx := w.toWrite(opt)
	if len(applied) != nx+2 {
		return fmt.Errorf("write stream %q: EXEC returned %d replies for %d commands", stream, len(applied), nx+2)
	}
	// The positions script first: it says whether the positions moved.
	pos, err := applied[len(applied)-1].AsStrSlice()
	switch {
	case err != nil:
		return fmt.Errorf("write stream %q: moving checkpoint %q: %w", stream, key, err)
	case len(pos) == 2 && pos[0] == "wrongtype":
		return setting.Errorf("stream %q: WRONGTYPE the key became a %s while the batch was being written: %w; nothing of the batch was written and checkpoint %q did not move: choose another {Stream} or delete the key, and run again",
			stream, pos[1], ErrWrongType, key)
	case len(pos) == 2 && pos[0] == "undone":
		// The begin script found the start wrong and the XADDs were
		// taken back: nothing was applied, as if the check had
		// refused it, which its reply says.
		check, err = applied[0].ToArray()
		if err != nil {
			return fmt.Errorf("write stream %q: the transaction was taken back, but its start check answered %w", stream, err)
		}
		status = str(0)
		if status == "ok" {
			return fmt.Errorf("write stream %q: the transaction was taken back although its start check passed", stream)
		}
		return refused()
	case len(pos) == 4 && pos[0] == "unchecked":
		// The begin script could not run and the start is wrong:
		// the entries were added, nothing records them.
		tp, _ := checkpoint.ParseK2RPositionField(pos[1])
		return fmt.Errorf("stream %q: %w (its check could not run: %v): %w; its entries may be in the stream twice",
			stream, ErrWrittenUnchecked, applied[0].Error(), &ConflictError{Key: key, Name: opt.Name, Partition: tp, Stored: checkpoint.ParseK2RPosition(pos[2]), Expected: checkpoint.ParseK2RPosition(pos[3])})
	case len(pos) != 1 || pos[0] != "ok":
		return fmt.Errorf("write stream %q: moving checkpoint %q: unexpected reply %q", stream, key, pos)
	}
	last := -1 // index in applied of the last entry added
	defer func() {
		if last >= 0 {
			res.LastID, _ = applied[last].ToString()
		}
	}()
	x := 0
	for i := range w.starts {
		if w.class != nil && w.class[i] != IDNew {
			if w.class[i] == IDPresent {
				res.Present++
			}
			continue
		}
		err := applied[1+x].Error()
		x++
		if err == nil {
			res.Added++
			last = x
			continue
		}
		// XADD fails only on what was checked before (the key's type,
		// the ID's form and, PreserveIDs, its place above the last ID),
		// unless the check could not run: the entry is reported, never
		// passed over.
		var moved []string
		for _, m := range w.Moves {
			moved = append(moved, fmt.Sprintf("%s from %d to %d", checkpoint.K2RPositionField(m.Partition), m.From, m.To))
		}
		return fmt.Errorf("stream %q: entry %d (ID %s) of a batch was not written (%v) but the batch's positions were checkpointed (%s in %q); to mirror the batch again, set those fields back to their start (HSET) and run again, which writes the rest of the batch a second time",
			stream, i, w.ID(i), err, strings.Join(moved, ", "), key)
	}
	return nil
}

// ErrWrittenUnchecked is wrapped by the error of a write whose entries were
// added although the checkpoint did not hold its start (neither its check
// nor the one inside its transaction could run), or may have been (MULTI
// was refused: the commands ran one by one). Applying it again cannot take
// them back; the run must stop and say so.
var ErrWrittenUnchecked = errors.New("a batch was written outside its compare-and-set")

// ErrCheckpointChanged is wrapped by an applySteps error when a checkpoint
// changed between the check of a write and its transaction; nothing of the
// write was applied, and applying it again checks again.
var ErrCheckpointChanged = errors.New("checkpoint changed during the write")

// ErrWrongType is wrapped by an applySteps error when a destination key is
// not a stream: nothing of the write was applied, and applying it again
// changes nothing until the key is deleted or another stream chosen.
var ErrWrongType = errors.New("destination key is not a stream")

// IsConflict reports whether err is (or wraps) a *ConflictError.
func IsConflict(err error) bool {
	var c *ConflictError
	return errors.As(err, &c)
}
