package r2k

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/mapping"
	"github.com/xmirror/xmirror/mirror/setting"
)

// firstReadCount is the COUNT of a source's first read under a byte
// bound, before it knows how large the entries are.
const firstReadCount = 100

// entryOverhead is what an entry costs in a batch besides its field data
// (ID, reply and record structures), so that tiny entries do not make the
// read count soar; it only matters when BatchSize is very large.
const entryOverhead = 64

// readCount is the COUNT that keeps a read near batchBytes of entry data per
// stream, for entries of about avg bytes: at least 1, at most batchSize.
func readCount(batchSize, batchBytes, avg int) int {
	return max(1, min(batchSize, batchBytes/(avg+entryOverhead)))
}

// RedisSourceConfig configures a RedisSource.
type RedisSourceConfig struct {
	Client   rueidis.Client
	Streams  []string
	Group    string
	Consumer string
	// Start is where a missing group starts: "0" (the whole history), "$"
	// (only new entries) or an entry ID.
	Start string
	// FromFirst are streams whose missing group starts at their first
	// entry whatever Start says: streams that appeared during a follow
	// run (matching its patterns), all of whose entries are new.
	FromFirst map[string]bool
	BatchSize int
	// BatchBytes bounds the entry data (field names and values) one read
	// takes from a stream, about: each read asks for as many entries as
	// fit at the size of those read before, and at most BatchSize. Zero
	// bounds entries only.
	BatchBytes int
	// Follow keeps reading with blocking reads; otherwise the source stops
	// at each stream's last entry ID as of the start (io.EOF).
	Follow bool
	// AllowMissing lets a one-shot run skip streams that do not exist.
	AllowMissing bool
	// Block is how long a follow read waits for new entries before it
	// checks for cancellation and missing streams again.
	Block time.Duration
	// ClaimIdle, when set, takes over (XAUTOCLAIM) entries other consumers
	// of the group left pending for at least this long: at start and, in
	// follow mode, every ClaimIdle.
	ClaimIdle time.Duration
	// Mirror names the checkpoint Commit advances.
	Mirror string
	// DeadLetterStream, when set, receives the entries the sink set aside
	// (Kafka refused them), each before its batch is acknowledged.
	DeadLetterStream string
	// OnGap is what entries trimmed from a stream before they were
	// mirrored do: OnGapFail (the default) stops with a *GapError,
	// OnGapSkip logs and counts them (Lost) and goes on.
	OnGap string
	// Confirmed is the checkpoint's last entry ID Kafka confirmed, per
	// stream (stream:<s>). Without ClaimIdle, entries a read of new
	// entries (">") delivers at or below it, or at or below what this
	// process already read, are acknowledged without being written: the
	// group was moved back (XGROUP SETID), deleted and made again, or
	// Redis restored from an older copy. See bound.
	Confirmed map[string]string
	// ReadBack, when set, reloads the checkpoint and reads Kafka back
	// from its partition offsets (as at start). A follow run calls it when
	// it sees the group moved back or lost, or Redis restarted, before it
	// goes on; what it returns joins what is skipped.
	ReadBack func(ctx context.Context) (confirmed map[string]string, written map[string]struct{}, err error)
	// TrimSource trims the streams up to the checkpoint, never past an
	// entry a consumer group still needs (checkpoint.R2KTrimCommand): at
	// start, and after each commit in the commit's round trip.
	TrimSource bool
	Logger     *slog.Logger
}

// DefaultBlock is short enough that a stopping follow run notices at once
// but long enough that an idle mirror costs Redis nothing.
const DefaultBlock = time.Second

// RedisSource reads stream entries through a consumer group: first its own
// pending entries (those read but never acknowledged by an earlier run),
// then new ones. Commit acknowledges (XACK) and checkpoints in one pipeline.
type RedisSource struct {
	cfg     RedisSourceConfig
	log     *slog.Logger
	streams []*streamState
	byName  map[string]*streamState
	// alreadyWritten holds "stream\x00id" of entries the read-back found
	// in Kafka: whatever read delivers them, they are not written again.
	alreadyWritten map[string]struct{}
	// runID is Redis's run_id when last looked at (INFO server), at most
	// once per runIDEvery: a new one means Redis restarted, perhaps from
	// an older copy of its data.
	runID         string
	lastRunIDAt   time.Time
	lastWaitCheck time.Time
	lastClaim     time.Time
	// count is the COUNT of the next read (see BatchBytes).
	count int
	// idle says the last read of new entries filled no stream's COUNT: a
	// follow run waits for entries before it reads again.
	idle bool

	// gapLost counts entries trimmed from the head of a stream before the
	// group delivered them, passed over under OnGapSkip, until the next
	// batch carries them to the stats (see Next).
	gapLost atomic.Int64
	// gapSkipped counts every entry a gap took; gapCommitted those the
	// batches that carried them committed: what a batch carried but
	// never committed (the run failed, or stopped first) is counted by
	// the difference.
	gapSkipped, gapCommitted atomic.Int64

	// trimmed counts the entries TrimSource removed from the streams;
	// trimFailure is the last trim failure warned of ("" once a trim
	// works), so a failing trim is logged once, not at every commit.
	trimmed     atomic.Int64
	trimFailure string
}

type streamState struct {
	name  string
	ready bool // the group exists on the stream
	fresh bool // this run created the group
	// gapAt and gapCounted are the group's position at the last gap
	// accepted and what was counted of it, for a gap seen again before
	// the group moves (see skipGap).
	gapAt      string
	gapCounted int64
	// lastRead is the group's last delivered ID after the last read of
	// new entries: where a follow run waits for more (see waitForEntries).
	lastRead string
	inPEL    bool   // still re-reading this consumer's pending entries
	cursor   string // PEL read position
	snapshot string // one-shot: last generated ID at start
	done     bool   // one-shot: reached the snapshot
	// bound is the highest entry ID at or below which every entry of the
	// stream is known to be handled: confirmed by Kafka (the checkpoint's
	// stream:<s>) or read by this process (and so confirmed, in flight,
	// or the run fails). "" when unknown, and always "" under ClaimIdle
	// (see useBound).
	bound string
	// boundPEL says the pending entries being re-read are looked at
	// against bound too (after Redis restarted or the group moved back:
	// acks may have been lost with Redis's data).
	boundPEL bool
	// lastNew is the last ID the previous read of new entries delivered:
	// a read of new entries starting at or below it means the group went
	// back. warned says that was reported since.
	lastNew string
	warned  bool
	// delivered is the highest entry ID this process has read from the
	// stream. A read whose reply was lost may still have delivered
	// entries (they are pending for this consumer): re-reading the
	// pending list after this ID finds them without touching the entries
	// in flight, whose IDs are all at or below it.
	delivered string
}

// noteDelivered raises the highest entry ID read to id.
func (st *streamState) noteDelivered(id string) {
	if st.delivered == "" || mapping.CompareIDs(id, st.delivered) > 0 {
		st.delivered = id
	}
}

// handled is the ID at or below which every entry of the stream is
// handled (see useBound): the larger of bound and delivered.
func (st *streamState) handled() string {
	if st.delivered != "" && (st.bound == "" || mapping.CompareIDs(st.delivered, st.bound) > 0) {
		return st.delivered
	}
	return st.bound
}

// raiseBound raises bound to id.
func (st *streamState) raiseBound(id string) {
	if id != "" && (st.bound == "" || mapping.CompareIDs(id, st.bound) > 0) {
		st.bound = id
	}
}

// useBound says whether entries at or below a stream's bound are taken as
// handled. Why that holds, and why not under ClaimIdle:
//
// Without ClaimIdle the group has no consumer but this mirror's (a group
// read by another is refused at start). Redis delivers a stream's entries
// to a group in ID order, the engine commits batches in the order they
// were read, and a commit names, per stream, the last ID of its batches.
// So when the checkpoint says stream:<s> = X, every entry up to X was
// delivered to this mirror and committed (written to Kafka, or set aside
// as trimmed or refused, as OnGap and OnError say), and an entry
// this process read is confirmed, in flight, or the run stops. A read of
// new entries (">") that delivers an ID at or below that bound can only
// mean the group went back (XGROUP SETID, XGROUP DESTROY and a new
// group, Redis restored from an older copy): the entry is acknowledged,
// not written again.
//
// With ClaimIdle the group may be shared: entries below this mirror's
// position may have been delivered to another consumer and never reached
// Kafka (the ones ClaimIdle exists to take over). A group moved back
// would deliver them again through ">", and an ID rule would drop them;
// and entries claimed from others are committed after newer ones, so
// stream:<s> is not a bound of what this mirror confirmed. Claimed
// entries are never skipped by ID: under ClaimIdle only the read-back's
// lineage (what Kafka holds) counts.
func (s *RedisSource) useBound() bool { return s.cfg.ClaimIdle <= 0 }

// NewRedisSource checks each stream, creates the consumer group where it is
// missing and, for a one-shot run, takes the snapshot it stops at.
func NewRedisSource(ctx context.Context, cfg RedisSourceConfig) (*RedisSource, error) {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1000
	}
	if cfg.Block <= 0 {
		cfg.Block = DefaultBlock
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &RedisSource{cfg: cfg, log: log, byName: map[string]*streamState{}, count: cfg.BatchSize}
	// Reads and commits are transactions: an ACL that refuses them stops
	// the run now, before anything is read or produced.
	if err := checkTransactions(ctx, cfg.Client, "redis-to-kafka"); err != nil {
		return nil, mirror.ClassifyRedis(err)
	}
	if cfg.BatchBytes > 0 {
		// Nothing is known of the entries' size yet: a first read of a
		// full batch of large entries could hold far more than
		// BatchBytes.
		s.count = min(cfg.BatchSize, firstReadCount)
	}
	for _, name := range cfg.Streams {
		st := &streamState{name: name, inPEL: true, cursor: "0"}
		if s.useBound() {
			st.bound = cfg.Confirmed[name]
		}
		s.streams = append(s.streams, st)
		s.byName[name] = st
	}
	var atStart, fromFirst []*streamState
	for _, st := range s.streams {
		if cfg.FromFirst[st.name] {
			fromFirst = append(fromFirst, st)
		} else {
			atStart = append(atStart, st)
		}
	}
	for _, group := range []struct {
		streams []*streamState
		start   string
	}{{atStart, cfg.Start}, {fromFirst, "0"}} {
		if len(group.streams) == 0 {
			continue
		}
		if err := s.prepare(ctx, group.streams, group.start); err != nil {
			return nil, err
		}
	}
	for _, st := range s.streams {
		if st.ready {
			continue
		}
		switch {
		case cfg.Follow:
			log.Info("stream does not exist yet; waiting for it", "stream", st.name)
		case cfg.AllowMissing:
			log.Info("stream does not exist; skipping it, as missing streams are allowed", "stream", st.name)
			st.done = true
		default:
			return nil, setting.Errorf("stream %q does not exist in Redis; check the name, or pass {AllowMissing} to skip missing streams", st.name)
		}
	}
	if err := s.checkDeadLetterStream(ctx); err != nil {
		return nil, err
	}
	if err := s.checkSetID(ctx); err != nil {
		return nil, err
	}
	// Before anything is read: a gap stops a run at start, as
	// kafka-to-redis's does, and leaves the group where it was.
	if err := s.checkGaps(ctx); err != nil {
		return nil, err
	}
	if err := s.claim(ctx); err != nil {
		return nil, err
	}
	if err := s.trimAtStart(ctx); err != nil {
		return nil, err
	}
	if cfg.Follow {
		// The Redis this run started with: a follow run that sees
		// another (restarted) reads Kafka back again (checkRunID).
		c := cfg.Client
		if _, err := s.checkRunID(ctx, c.Do(ctx, c.B().Info().Section("server").Build())); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// checkDeadLetterStream refuses a dead-letter key that holds something
// other than a stream at start, rather than at the first refused entry.
func (s *RedisSource) checkDeadLetterStream(ctx context.Context) error {
	if s.cfg.DeadLetterStream == "" {
		return nil
	}
	c := s.cfg.Client
	typ, err := c.Do(ctx, c.B().Type().Key(s.cfg.DeadLetterStream).Build()).ToString()
	if err != nil {
		return mirror.ClassifyRedis(fmt.Errorf("check dead-letter stream %q (TYPE): %w", s.cfg.DeadLetterStream, err))
	}
	if typ != "stream" && typ != "none" {
		return setting.Errorf("dead-letter key %q is a %s, not a stream; check {DeadLetterStream}", s.cfg.DeadLetterStream, typ)
	}
	return nil
}

// claim takes over the entries other consumers of the group left pending
// for ClaimIdle or longer; they join this consumer's pending entries and
// are read first. Entries deleted from the stream meanwhile are dropped
// from the pending list by Redis itself.
func (s *RedisSource) claim(ctx context.Context) error {
	if s.cfg.ClaimIdle <= 0 {
		return nil
	}
	s.lastClaim = time.Now()
	c := s.cfg.Client
	for _, st := range s.streams {
		if !st.ready || st.done {
			continue
		}
		cursor := "0-0"
		var n int64
		for {
			cmd := c.B().Xautoclaim().Key(st.name).Group(s.cfg.Group).Consumer(s.cfg.Consumer).MinIdleTime(strconv.FormatInt(s.cfg.ClaimIdle.Milliseconds(), 10)).Start(cursor).Count(int64(s.cfg.BatchSize)).Justid().Build()
			reply, err := c.Do(ctx, cmd).ToArray()
			if err != nil {
				return mirror.ClassifyRedis(fmt.Errorf("take over idle pending entries of stream %q (XAUTOCLAIM): %w", st.name, err))
			}
			if len(reply) < 2 {
				return fmt.Errorf("stream %q: unexpected XAUTOCLAIM reply", st.name)
			}
			cursor, _ = reply[0].ToString()
			ids, _ := reply[1].ToArray()
			n += int64(len(ids))
			if cursor == "0-0" || cursor == "" {
				break
			}
		}
		if n > 0 {
			s.log.Info("took over idle pending entries of other consumers", "stream", st.name, "count", n, "idle", s.cfg.ClaimIdle)
			st.inPEL, st.cursor = true, "0"
		}
	}
	return nil
}

// claimOthers takes over, while the mirror runs, the entries other
// consumers left pending for ClaimIdle or longer, and returns them as a
// batch. Unlike the claim at start it leaves this consumer's own pending
// entries alone: those may be in flight right now.
func (s *RedisSource) claimOthers(ctx context.Context) (*EntryBatch, error) {
	s.lastClaim = time.Now()
	c := s.cfg.Client
	idle := s.cfg.ClaimIdle.Milliseconds()
	b := &EntryBatch{}
	for _, st := range s.streams {
		if !st.ready || st.done {
			continue
		}
		pending, err := c.Do(ctx, c.B().Xpending().Key(st.name).Group(s.cfg.Group).Idle(idle).Start("-").End("+").Count(int64(s.cfg.BatchSize)).Build()).ToArray()
		if err != nil {
			return nil, mirror.ClassifyRedis(fmt.Errorf("list idle pending entries of stream %q (XPENDING): %w", st.name, err))
		}
		var ids []string
		for _, p := range pending {
			fields, _ := p.ToArray()
			if len(fields) < 2 {
				continue
			}
			if consumer, _ := fields[1].ToString(); consumer != s.cfg.Consumer {
				id, _ := fields[0].ToString()
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			continue
		}
		claimed, err := c.Do(ctx, c.B().Xclaim().Key(st.name).Group(s.cfg.Group).Consumer(s.cfg.Consumer).MinIdleTime(strconv.FormatInt(idle, 10)).Id(ids...).Build()).ToArray()
		if err != nil {
			return nil, mirror.ClassifyRedis(fmt.Errorf("take over idle pending entries of stream %q (XCLAIM): %w", st.name, err))
		}
		trimmed, firstTrimmed := 0, ""
		for _, raw := range claimed {
			if raw.IsNil() {
				continue
			}
			e, err := parseEntry(st.name, raw)
			if err != nil {
				return nil, err
			}
			// Claimed entries are in flight like the others: a re-read
			// of the pending list after a failed read must not see them.
			st.noteDelivered(e.ID)
			s.markWritten(&e, "") // never by ID: see useBound
			switch {
			case e.skip == skipWritten:
			case e.Fields == nil:
				e.skip = skipTrimmed
				if trimmed == 0 {
					firstTrimmed = e.ID
				}
				trimmed++
			default:
				b.written++
				b.size += entrySize(e)
			}
			b.Entries = append(b.Entries, e)
		}
		if err := s.trimmedPending(st.name, firstTrimmed, trimmed); err != nil {
			return nil, err
		}
		s.log.Info("took over idle pending entries of other consumers", "stream", st.name, "count", len(claimed), "idle", s.cfg.ClaimIdle)
	}
	if len(b.Entries) == 0 {
		return nil, nil
	}
	return b, nil
}

// prepare creates the group on each stream and, in one-shot mode, records
// the snapshot. Streams that do not exist stay not ready.
//
// start is where a new group starts: Start for the streams there at the
// start of the run; "0" for a stream that appears later, every entry of
// which is newer than the run. An entry ID above a stream's last one is
// refused where the group is new: the group would skip every entry added
// until the clock passed it. An existing group keeps its position.
//
// A group another consumer has read is refused too, unless ClaimIdle says
// this mirror takes over what the others left: consumers of one group
// split the stream between them, each seeing only its share.
func (s *RedisSource) prepare(ctx context.Context, streams []*streamState, start string) error {
	c := s.cfg.Client
	if start != "0" && start != "$" {
		if err := s.checkStart(ctx, streams, start); err != nil {
			return err
		}
	}
	cmds := make(rueidis.Commands, 0, len(streams))
	for _, st := range streams {
		cmds = append(cmds, c.B().XgroupCreate().Key(st.name).Group(s.cfg.Group).Id(start).Build())
	}
	var existing []*streamState
	for i, r := range c.DoMulti(ctx, cmds...) {
		st := streams[i]
		err := r.Error()
		switch {
		case err == nil:
			st.ready, st.fresh = true, true
			s.log.Debug("consumer group created", "stream", st.name, "group", s.cfg.Group, "at", start)
		case mirror.IsRedisErrPrefix(err, "BUSYGROUP"):
			st.ready, st.fresh = true, false
			existing = append(existing, st)
			s.log.Debug("consumer group exists; reading on from its position", "stream", st.name, "group", s.cfg.Group)
		case mirror.IsRedisErrPrefix(err, "WRONGTYPE"):
			return setting.Errorf("key %q is not a stream (WRONGTYPE); check {Streams}", st.name)
		case mirror.IsRedisErrContaining(err, "requires the key to exist"):
			st.ready = false
		case mirror.IsRedisErrContaining(err, "Invalid stream ID"):
			return setting.Errorf("{Start} %q is not an entry ID (use earliest, latest or <ms>-<seq>)", s.cfg.Start)
		default:
			return mirror.ClassifyRedis(fmt.Errorf("create consumer group %q on stream %q: %w", s.cfg.Group, st.name, err))
		}
	}
	if err := s.checkShared(ctx, existing); err != nil {
		return err
	}
	if s.cfg.Follow {
		return nil
	}
	cmds = cmds[:0]
	var asked []*streamState
	for _, st := range streams {
		if st.ready {
			cmds = append(cmds, c.B().XinfoStream().Key(st.name).Build())
			asked = append(asked, st)
		}
	}
	for i, r := range c.DoMulti(ctx, cmds...) {
		st := asked[i]
		info, err := r.AsMap()
		if err != nil {
			return mirror.ClassifyRedis(fmt.Errorf("read the last entry ID of stream %q (XINFO STREAM): %w", st.name, err))
		}
		last, ok := info["last-generated-id"]
		if !ok {
			return fmt.Errorf("stream %q: XINFO STREAM has no last-generated-id", st.name)
		}
		if st.snapshot, err = last.ToString(); err != nil {
			return fmt.Errorf("stream %q: last-generated-id: %w", st.name, err)
		}
		if st.snapshot == "0-0" {
			st.inPEL = false
			st.done = true
		}
	}
	return nil
}

// checkStart refuses an entry ID above the last one of a stream that
// exists and has no group yet.
func (s *RedisSource) checkStart(ctx context.Context, streams []*streamState, start string) error {
	c := s.cfg.Client
	cmds := make(rueidis.Commands, 0, 2*len(streams))
	for _, st := range streams {
		cmds = append(cmds, c.B().XinfoStream().Key(st.name).Build(), c.B().XinfoGroups().Key(st.name).Build())
	}
	replies := c.DoMulti(ctx, cmds...)
	for i, st := range streams {
		info, err := replies[2*i].AsMap()
		if err != nil {
			if mirror.IsRedisErrContaining(err, "no such key") || mirror.IsRedisErrPrefix(err, "WRONGTYPE") {
				continue // not there yet, or reported by XGROUP CREATE
			}
			return mirror.ClassifyRedis(fmt.Errorf("read the last entry ID of stream %q (XINFO STREAM): %w", st.name, err))
		}
		groups, err := replies[2*i+1].ToArray()
		if err != nil {
			return mirror.ClassifyRedis(fmt.Errorf("stream %q: XINFO GROUPS: %w", st.name, err))
		}
		if hasGroup(groups, s.cfg.Group) {
			continue
		}
		lastMsg, ok := info["last-generated-id"]
		if !ok {
			return fmt.Errorf("stream %q: XINFO STREAM has no last-generated-id", st.name)
		}
		last, err := lastMsg.ToString()
		if err != nil {
			return fmt.Errorf("stream %q: last-generated-id: %w", st.name, err)
		}
		if mapping.CompareIDs(start, last) > 0 {
			return setting.Errorf("{Start} %s is above the last entry ID of stream %q (%s): the new consumer group %q would skip every entry added until the clock passes it; use an ID at or below %s, or {Start} latest for only new entries", start, st.name, last, s.cfg.Group, last)
		}
	}
	return nil
}

// hasGroup says whether an XINFO GROUPS reply lists group.
func hasGroup(groups []rueidis.RedisMessage, group string) bool {
	for _, g := range groups {
		info, _ := g.AsMap()
		nameMsg := info["name"]
		if name, _ := nameMsg.ToString(); name == group {
			return true
		}
	}
	return false
}

// checkShared refuses existing groups that other consumers have read,
// unless ClaimIdle takes their entries over; even then a consumer that is
// a mirror running now (its lease is held) is refused, as both would go on
// splitting the stream.
func (s *RedisSource) checkShared(ctx context.Context, streams []*streamState) error {
	if len(streams) == 0 {
		return nil
	}
	c := s.cfg.Client
	cmds := make(rueidis.Commands, 0, len(streams))
	for _, st := range streams {
		cmds = append(cmds, c.B().XinfoConsumers().Key(st.name).Group(s.cfg.Group).Build())
	}
	for i, r := range c.DoMulti(ctx, cmds...) {
		st := streams[i]
		consumers, err := r.ToArray()
		if err != nil {
			return mirror.ClassifyRedis(fmt.Errorf("list the consumers of group %q on stream %q (XINFO CONSUMERS): %w", s.cfg.Group, st.name, err))
		}
		var others []string
		var pending int64
		for _, cons := range consumers {
			info, _ := cons.AsMap()
			nameMsg, pendingMsg := info["name"], info["pending"]
			name, _ := nameMsg.ToString()
			if name == s.cfg.Consumer {
				continue
			}
			n, _ := pendingMsg.AsInt64()
			pending += n
			others = append(others, name)
		}
		if len(others) == 0 {
			continue
		}
		if s.cfg.ClaimIdle <= 0 {
			return setting.Errorf("stream %q: consumer group %q is also read by %q (XINFO CONSUMERS), holding %d pending entries; mirrors sharing a group split the stream between them. Give this mirror a group of its own ({Group}), or, to take over from consumers that no longer run, pass {ClaimIdle}", st.name, s.cfg.Group, others, pending)
		}
		leases := make(rueidis.Commands, 0, len(others))
		for _, o := range others {
			leases = append(leases, c.B().Exists().Key(checkpoint.LeaseKey(checkpoint.KindRedisToKafka, o)).Build())
		}
		for j, lr := range c.DoMulti(ctx, leases...) {
			n, err := lr.AsInt64()
			if err != nil {
				return mirror.ClassifyRedis(fmt.Errorf("look for the lease of mirror %q: %w", others[j], err))
			}
			if n > 0 {
				return setting.Errorf("stream %q: consumer group %q is also read by mirror %q, which is running now (lease %s); mirrors sharing a group split the stream between them: give this mirror a group of its own ({Group})", st.name, s.cfg.Group, others[j], checkpoint.LeaseKey(checkpoint.KindRedisToKafka, others[j]))
			}
		}
		s.log.Debug("consumer group was read by other consumers; taking over their idle entries", "claim_idle", s.cfg.ClaimIdle, "stream", st.name, "group", s.cfg.Group, "others", others, "pending", pending)
	}
	return nil
}

// ConsumerInGroup says whether consumer has read through group on any of
// the streams: how a mirror whose checkpoint is gone finds the group it
// used before groups were recorded in checkpoints.
func ConsumerInGroup(ctx context.Context, c rueidis.Client, streams []string, group, consumer string) (bool, error) {
	cmds := make(rueidis.Commands, 0, len(streams))
	for _, st := range streams {
		cmds = append(cmds, c.B().XinfoConsumers().Key(st).Group(group).Build())
	}
	for i, r := range c.DoMulti(ctx, cmds...) {
		consumers, err := r.ToArray()
		if err != nil {
			if mirror.IsRedisErrPrefix(err, "NOGROUP") || mirror.IsRedisErrContaining(err, "no such key") || mirror.IsRedisErrPrefix(err, "WRONGTYPE") {
				continue
			}
			return false, mirror.ClassifyRedis(fmt.Errorf("list the consumers of group %q on stream %q (XINFO CONSUMERS): %w", group, streams[i], err))
		}
		for _, cons := range consumers {
			info, _ := cons.AsMap()
			nameMsg := info["name"]
			if name, _ := nameMsg.ToString(); name == consumer {
				return true, nil
			}
		}
	}
	return false, nil
}

// Pending is how many entries this mirror's consumer read in an earlier run
// but never acknowledged: the ones that may already be in Kafka.
func (s *RedisSource) Pending(ctx context.Context) (int64, error) {
	c := s.cfg.Client
	var total int64
	for _, st := range s.streams {
		if !st.ready {
			continue
		}
		// The summary form lists the count per consumer; only ours
		// matters.
		summary, err := c.Do(ctx, c.B().Xpending().Key(st.name).Group(s.cfg.Group).Build()).ToArray()
		if err != nil {
			return 0, mirror.ClassifyRedis(fmt.Errorf("read pending entries of stream %q: %w", st.name, err))
		}
		if len(summary) < 4 {
			continue
		}
		consumers, _ := summary[3].ToArray()
		for _, cons := range consumers {
			pair, _ := cons.ToArray()
			if len(pair) != 2 {
				continue
			}
			if name, _ := pair[0].ToString(); name == s.cfg.Consumer {
				v, _ := pair[1].ToString()
				n, _ := strconv.ParseInt(v, 10, 64)
				total += n
			}
		}
	}
	return total, nil
}

// Remaining counts, for a one-shot run's progress, the entries it has to
// go through: this consumer's pending entries and, per stream, those the
// group was not delivered yet (XINFO GROUPS lag, Redis 7 and later). It is
// -1 when Redis cannot say (an older Redis, or a lag it cannot count after
// entries were deleted in the middle of a stream).
func (s *RedisSource) Remaining(ctx context.Context) (int64, error) {
	c := s.cfg.Client
	total, err := s.Pending(ctx)
	if err != nil {
		return -1, err
	}
	for _, st := range s.streams {
		if !st.ready || st.done {
			continue
		}
		groups, err := c.Do(ctx, c.B().XinfoGroups().Key(st.name).Build()).ToArray()
		if err != nil {
			return -1, mirror.ClassifyRedis(fmt.Errorf("read the consumer groups of stream %q: %w", st.name, err))
		}
		found := false
		for _, g := range groups {
			info, err := g.AsMap()
			if err != nil {
				return -1, fmt.Errorf("read the consumer groups of stream %q: %w", st.name, err)
			}
			nameMsg := info["name"]
			if name, _ := nameMsg.ToString(); name != s.cfg.Group {
				continue
			}
			lag, ok := info["lag"]
			if !ok {
				return -1, nil
			}
			n, err := lag.AsInt64()
			if err != nil {
				return -1, nil // nil: Redis cannot count it
			}
			total += n
			found = true
		}
		if !found {
			return -1, nil
		}
	}
	return total, nil
}

// SkipWritten tells the source which entries are already in Kafka, as
// "stream\x00id" keys: whatever read delivers them (pending entries, new
// entries of a group that went back), they are acknowledged without being
// written again.
func (s *RedisSource) SkipWritten(keys map[string]struct{}) { s.alreadyWritten = keys }

// OnReadBack sets the read-back a follow run does when Redis may have
// forgotten what was mirrored (see RedisSourceConfig.ReadBack).
func (s *RedisSource) OnReadBack(fn func(ctx context.Context) (confirmed map[string]string, written map[string]struct{}, err error)) {
	s.cfg.ReadBack = fn
}

// idListMax is how many IDs a warning names before it counts the rest.
const idListMax = 20

// idList names ids for a log line: all of them, or the first idListMax
// and how many more.
func idList(ids []string) string {
	if len(ids) <= idListMax {
		return strings.Join(ids, ",")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(ids[:idListMax], ","), len(ids)-idListMax)
}

// Next returns the next batch: pending entries first, then new ones.
func (s *RedisSource) Next(ctx context.Context) (*EntryBatch, error) {
	b, err := s.next(ctx)
	if err == nil {
		b.deadLetter = s.cfg.DeadLetterStream != ""
		b.lost += s.gapLost.Swap(0)
		return b, nil
	}
	if errors.Is(err, io.EOF) && s.gapLost.Load() > 0 {
		// The last entries went past are counted before the end.
		return &EntryBatch{lost: s.gapLost.Swap(0)}, nil
	}
	return nil, err
}

func (s *RedisSource) next(ctx context.Context) (*EntryBatch, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if s.cfg.Follow {
			if err := s.waitForStreams(ctx); err != nil {
				return nil, err
			}
			if s.cfg.ClaimIdle > 0 && time.Since(s.lastClaim) >= s.cfg.ClaimIdle {
				if b, err := s.claimOthers(ctx); err != nil || b != nil {
					return b, err
				}
			}
		}
		if b, err := s.readPending(ctx); err != nil || b != nil {
			return b, err
		}
		var active []*streamState
		for _, st := range s.streams {
			if st.ready && !st.done && !st.inPEL {
				active = append(active, st)
			}
		}
		if len(active) == 0 {
			if !s.cfg.Follow {
				return nil, io.EOF
			}
			// Every stream is missing: wait before looking again.
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(s.cfg.Block):
			}
			continue
		}
		b, err := s.readNew(ctx, active)
		if err != nil || b != nil {
			return b, err
		}
	}
}

// readPending re-reads this consumer's own pending entries, stream by
// stream, from a cursor, until each stream's list is exhausted.
func (s *RedisSource) readPending(ctx context.Context) (*EntryBatch, error) {
	var names, ids []string
	for _, st := range s.streams {
		if st.ready && st.inPEL && !st.done {
			names = append(names, st.name)
			ids = append(ids, st.cursor)
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	c := s.cfg.Client
	cmd := c.B().Xreadgroup().Group(s.cfg.Group, s.cfg.Consumer).Count(int64(s.count)).Streams().Key(names...).Id(ids...).Build()
	b, counts, err := s.read(ctx, cmd, true)
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		st := s.byName[name]
		if counts[name] == 0 {
			st.inPEL, st.boundPEL = false, false
		}
	}
	if b == nil || len(b.Entries) == 0 {
		return nil, nil
	}
	for _, e := range b.lastOfEachStream() {
		st := s.byName[e.Stream]
		st.cursor = e.ID
		st.noteDelivered(e.ID)
	}
	return b, nil
}

// readNew reads entries never delivered to the group, in the same atomic
// step as the check for entries trimmed before it could (checkedRead): a
// read delivers the entries after the group's position that the stream
// still holds, silently passing over those trimmed. A follow run whose
// last read filled no stream's COUNT waits for entries first.
func (s *RedisSource) readNew(ctx context.Context, active []*streamState) (*EntryBatch, error) {
	c := s.cfg.Client
	if s.cfg.Follow && s.idle {
		if err := s.waitForEntries(ctx, active); err != nil {
			return nil, err
		}
	}
	var extra rueidis.Commands
	askRunID := s.cfg.Follow && time.Since(s.lastRunIDAt) >= runIDEvery
	if askRunID {
		extra = append(extra, c.B().Info().Section("server").Build())
	}
	count := s.count
	reply, after, err := s.checkedRead(ctx, active, true, extra...)
	var b *EntryBatch
	var counts map[string]int
	if err == nil {
		b, counts, err = s.parseRead(reply, false)
	}
	if err == nil && askRunID && len(after) == len(extra) {
		var restarted bool
		restarted, err = s.checkRunID(ctx, after[len(after)-1])
		if err == nil && restarted && b != nil {
			// The read-back may have found entries of this very read.
			s.remark(b, s.handledByStream(false))
		}
	}
	if err == nil && b != nil {
		err = s.checkMovedBack(ctx, b)
	}
	if err != nil {
		s.idle = false
		if ctx.Err() == nil {
			// Redis may have delivered entries before the reply was
			// lost (a crash, a broken connection): look for them in the
			// pending list before reading new ones.
			// Those at or below what is handled are skipped as they
			// would have been in the reply (see useBound).
			for _, st := range active {
				st.inPEL, st.cursor, st.boundPEL = true, st.delivered, true
				if st.cursor == "" {
					st.cursor = "0"
				}
			}
		}
		return nil, err
	}
	s.idle = true
	for _, st := range active {
		if counts[st.name] >= count {
			s.idle = false
		}
	}
	if !s.cfg.Follow {
		for _, st := range active {
			if counts[st.name] == 0 {
				// Nothing more to read for this consumer (or another
				// consumer of the group took the rest).
				st.done = true
			}
		}
	}
	if b != nil {
		for _, e := range b.lastOfEachStream() {
			st := s.byName[e.Stream]
			st.noteDelivered(e.ID)
			st.lastNew = e.ID
			st.lastRead = e.ID
			if !s.cfg.Follow && mapping.CompareIDs(e.ID, st.snapshot) >= 0 {
				st.done = true
			}
		}
	}
	if b == nil || len(b.Entries) == 0 {
		return nil, nil
	}
	return b, nil
}

// waitForEntries waits, up to Block, for entries after the group's
// position on any of the streams, with a plain XREAD: it delivers nothing
// to the group, so what it sees is read, and checked, by the next
// checkedRead. A wait that ends with nothing still goes on to that read,
// which also looks at the group and the stream (deleted, moved).
func (s *RedisSource) waitForEntries(ctx context.Context, active []*streamState) error {
	names := make([]string, len(active))
	ids := make([]string, len(active))
	for i, st := range active {
		if st.lastRead == "" {
			return nil // not read yet: nothing to wait from
		}
		names[i], ids[i] = st.name, st.lastRead
	}
	c := s.cfg.Client
	err := c.Do(ctx, c.B().Xread().Count(1).Block(s.cfg.Block.Milliseconds()).Streams().Key(names...).Id(ids...).Build()).Error()
	switch {
	case err == nil || rueidis.IsRedisNil(err):
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case mirror.IsRedisErrPrefix(err, "WRONGTYPE"):
		return fmt.Errorf("a key being read is no longer a stream: %w", err)
	}
	return mirror.ClassifyRedis(fmt.Errorf("wait for new entries (XREAD): %w", err))
}

// read runs one XREADGROUP and turns its reply into a batch (parseRead).
func (s *RedisSource) read(ctx context.Context, cmd rueidis.Completed, pending bool) (*EntryBatch, map[string]int, error) {
	msg, err := s.cfg.Client.Do(ctx, cmd).ToMessage()
	if err != nil {
		return nil, nil, s.readError(ctx, err)
	}
	return s.parseRead(msg, pending)
}

// readError is what a failed read means: nothing to read (nil), the group
// lost, a key no longer a stream, or a failure of Redis.
func (s *RedisSource) readError(ctx context.Context, err error) error {
	if rueidis.IsRedisNil(err) {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// A blocked read on a stream that was deleted is UNBLOCKED; the next
	// read finds no group (NOGROUP).
	if mirror.IsRedisErrPrefix(err, "NOGROUP") || mirror.IsRedisErrPrefix(err, "UNBLOCKED") {
		return s.groupLost(ctx, err)
	}
	if mirror.IsRedisErrPrefix(err, "WRONGTYPE") {
		return fmt.Errorf("a key being read is no longer a stream: %w", err)
	}
	return mirror.ClassifyRedis(fmt.Errorf("read streams (XREADGROUP): %w", err))
}

// parseRead turns an XREADGROUP reply into a batch; counts has the number
// of entries per stream. A nil reply is no batch.
func (s *RedisSource) parseRead(msg rueidis.RedisMessage, pending bool) (*EntryBatch, map[string]int, error) {
	if msg.IsNil() {
		return nil, nil, nil
	}
	counts := map[string]int{}
	b := &EntryBatch{}
	// largest is the largest average entry size of a stream in this read:
	// COUNT applies to each stream, so the stream of the largest entries
	// sets it.
	largest := -1
	add := func(stream string, entries rueidis.RedisMessage) error {
		list, err := entries.ToArray()
		if err != nil {
			return fmt.Errorf("stream %q: unexpected XREADGROUP reply: %w", stream, err)
		}
		counts[stream] += len(list)
		b.Entries = slices.Grow(b.Entries, len(list))
		size, written := 0, 0
		trimmed, firstTrimmed := 0, ""
		// Entries at or below handled are in Kafka already (see
		// useBound): delivered again by a read of new entries, or
		// pending again after Redis lost acks.
		handled, boundPEL := "", false
		if st := s.byName[stream]; st != nil && s.useBound() && (!pending || st.boundPEL) {
			handled, boundPEL = st.handled(), st.boundPEL
		}
		if handled != "" {
			b.floors = append(b.floors, floor{stream, handled})
		}
		for _, raw := range list {
			e, err := parseEntry(stream, raw)
			if err != nil {
				return err
			}
			if handled != "" && mapping.CompareIDs(e.ID, handled) > 0 {
				handled = "" // the reply is in ID order: none after it either
			}
			s.markWritten(&e, handled)
			if e.skip == skipWritten && pending && boundPEL {
				e.skip = skipAgain
			}
			if pending && e.Fields == nil && e.skip == skipNone {
				e.skip = skipTrimmed
				if trimmed == 0 {
					firstTrimmed = e.ID
				}
				trimmed++
			}
			if e.skip == skipNone {
				n := entrySize(e)
				b.written++
				b.size += n
				written++
				size += n
			}
			b.Entries = append(b.Entries, e)
		}
		if err := s.trimmedPending(stream, firstTrimmed, trimmed); err != nil {
			return err
		}
		if written > 0 {
			largest = max(largest, size/written)
		}
		return nil
	}
	if msg.IsMap() {
		m, err := msg.ToMap()
		if err != nil {
			return nil, nil, err
		}
		// Keep the order the streams were given in.
		for _, st := range s.streams {
			if entries, ok := m[st.name]; ok {
				if err := add(st.name, entries); err != nil {
					return nil, nil, err
				}
			}
		}
	} else {
		arr, err := msg.ToArray()
		if err != nil {
			return nil, nil, fmt.Errorf("unexpected XREADGROUP reply: %w", err)
		}
		for _, pair := range arr {
			kv, err := pair.ToArray()
			if err != nil || len(kv) != 2 {
				return nil, nil, fmt.Errorf("unexpected XREADGROUP reply: %v", err)
			}
			name, _ := kv[0].ToString()
			if err := add(name, kv[1]); err != nil {
				return nil, nil, err
			}
		}
	}
	if s.cfg.BatchBytes > 0 && largest >= 0 {
		s.count = readCount(s.cfg.BatchSize, s.cfg.BatchBytes, largest)
	}
	return b, counts, nil
}

// handledByStream is each stream's handled ID where entries at or below
// it are skipped (see useBound); pending says for a read of pending
// entries.
func (s *RedisSource) handledByStream(pending bool) map[string]string {
	m := map[string]string{}
	if !s.useBound() {
		return m
	}
	for _, st := range s.streams {
		if !pending || st.boundPEL {
			m[st.name] = st.handled()
		}
	}
	return m
}

// checkRunID compares Redis's run_id, from an INFO server reply, with the
// one seen before: a new one means Redis restarted, perhaps from an older
// copy of its data that lost acknowledgements, checkpoints and the group's
// position, and the mirror resyncs before going on.
func (s *RedisSource) checkRunID(ctx context.Context, r rueidis.RedisResult) (restarted bool, err error) {
	s.lastRunIDAt = time.Now()
	info, err := r.ToString()
	if err != nil {
		return false, nil // a Redis that does not say is looked at again later
	}
	id := parseRunID(info)
	if id == "" {
		return false, nil
	}
	prev := s.runID
	s.runID = id
	if prev == "" || prev == id {
		return false, nil
	}
	var ready []*streamState
	for _, st := range s.streams {
		if st.ready {
			ready = append(ready, st)
		}
	}
	return true, s.resync(ctx, "Redis restarted (its run_id changed) and may have lost what it knew of this mirror", ready)
}

// checkMovedBack looks at a read of new entries (not yet noted as
// delivered) for streams whose group went back: entries delivered again
// that this process or the checkpoint already had. Under useBound they
// were marked by read; a follow run then resyncs (reads Kafka back from
// the checkpoint again), which may mark more of the batch.
func (s *RedisSource) checkMovedBack(ctx context.Context, b *EntryBatch) error {
	var back []*streamState
	skipped := map[string]int{}
	for i, e := range b.Entries {
		st := s.byName[e.Stream]
		if st == nil {
			continue
		}
		if e.skip == skipWritten {
			skipped[e.Stream]++
		}
		first := i == 0 || b.Entries[i-1].Stream != e.Stream
		if first && st.lastNew != "" && mapping.CompareIDs(e.ID, st.lastNew) <= 0 {
			back = append(back, st)
		}
	}
	if len(back) > 0 && s.cfg.Follow {
		for _, st := range back {
			st.warned = false
		}
		if err := s.resync(ctx, "the consumer group went back (XGROUP SETID, or Redis restored from an older copy) and delivers entries again", back); err != nil {
			return err
		}
		s.remark(b, s.handledByStream(false))
		clear(skipped)
		for _, e := range b.Entries {
			if e.skip == skipWritten {
				skipped[e.Stream]++
			}
		}
	}
	for _, st := range s.streams {
		if n := skipped[st.name]; n > 0 && !st.warned {
			st.warned = true
			s.log.Warn("the consumer group delivered entries again that are already in Kafka (group moved back, deleted and made again, or Redis restored from an older copy); acknowledging them without sending them again",
				"stream", st.name, "group", s.cfg.Group, "mirrored_up_to", st.handled(), "already_in_kafka", n)
		}
	}
	return nil
}

// markWritten marks an entry the read-back found in Kafka, or one at or
// below handled (when not ""), as written already: trimmed or not, it is
// acknowledged without a record.
func (s *RedisSource) markWritten(e *Entry, handled string) {
	if e.skip != skipNone {
		return
	}
	if handled != "" && mapping.CompareIDs(e.ID, handled) <= 0 {
		e.skip = skipWritten
		return
	}
	if len(s.alreadyWritten) > 0 {
		if _, ok := s.alreadyWritten[e.Stream+"\x00"+e.ID]; ok {
			e.skip = skipWritten
		}
	}
}

// remark applies markWritten again to a batch's entries still to be
// written, after a read-back found more in Kafka, with handled per stream.
func (s *RedisSource) remark(b *EntryBatch, handled map[string]string) {
	for i := range b.Entries {
		e := &b.Entries[i]
		if e.skip != skipNone {
			continue
		}
		s.markWritten(e, handled[e.Stream])
		if e.skip != skipNone {
			b.written--
			b.size -= entrySize(*e)
		}
	}
}

// runIDEvery is how often a follow run asks Redis for its run_id, in the
// round trip of a read: a restart (from a snapshot, an AOF, or a replica
// promoted) may have lost acknowledgements and checkpoints.
const runIDEvery = time.Second

// parseRunID finds run_id in an INFO server reply.
func parseRunID(info string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(line, "run_id:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// resync is what a follow run does when Redis may have forgotten what was
// mirrored (it restarted, the group moved back or was lost): it reloads
// the checkpoint and reads Kafka back from its partition offsets, as a run
// does at start, so that what Kafka holds is skipped whatever read
// delivers it; and, for the streams given, it re-reads this consumer's
// pending entries (acks may have been lost) against the streams' bounds.
func (s *RedisSource) resync(ctx context.Context, why string, streams []*streamState) error {
	var names []string
	for _, st := range streams {
		names = append(names, st.name)
	}
	if s.cfg.ReadBack == nil {
		s.log.Warn(why+"; entries at or below what this mirror already mirrored are acknowledged, not sent again", "streams", names, "group", s.cfg.Group)
		return nil
	}
	confirmed, written, err := s.cfg.ReadBack(ctx)
	if err != nil {
		return fmt.Errorf("%s; reading back what is already in Kafka: %w", why, err)
	}
	if s.alreadyWritten == nil {
		s.alreadyWritten = map[string]struct{}{}
	}
	for k := range written {
		s.alreadyWritten[k] = struct{}{}
	}
	if s.useBound() {
		for _, st := range s.streams {
			st.raiseBound(confirmed[st.name])
		}
		for _, st := range streams {
			if st.ready && !st.done {
				st.inPEL, st.cursor, st.boundPEL = true, "0", true
			}
		}
	}
	s.log.Warn(why+"; read the checkpoint and Kafka back again: entries already in Kafka are acknowledged, not sent again", "streams", names, "group", s.cfg.Group, "already_in_kafka", len(written))
	return nil
}

// groupLost handles a stream that lost the consumer group: it was deleted,
// and perhaps created again. A follow run keeps going: the group is made
// again on a new stream (from its first entry, all of it being new) and a
// missing stream is waited for. A one-shot run stops, naming the streams.
func (s *RedisSource) groupLost(ctx context.Context, cause error) error {
	c := s.cfg.Client
	cmds := make(rueidis.Commands, 0, len(s.streams))
	for _, st := range s.streams {
		cmds = append(cmds, c.B().XinfoGroups().Key(st.name).Build())
	}
	var lost []*streamState
	gone := map[*streamState]bool{}
	for i, r := range c.DoMulti(ctx, cmds...) {
		groups, err := r.ToArray()
		if err != nil && !mirror.IsRedisErrContaining(err, "no such key") {
			return mirror.ClassifyRedis(fmt.Errorf("stream %q: XINFO GROUPS: %w", s.streams[i].name, err))
		}
		gone[s.streams[i]] = err != nil
		found := false
		for _, g := range groups {
			info, _ := g.AsMap()
			nameMsg := info["name"]
			if name, _ := nameMsg.ToString(); name == s.cfg.Group {
				found = true
			}
		}
		if !found {
			lost = append(lost, s.streams[i])
		}
	}
	var names []string
	for _, st := range lost {
		names = append(names, st.name)
	}
	if s.cfg.Follow && len(lost) == 0 {
		// Every stream has the group: a stream key was replaced under
		// a blocked read (RESTORE, RENAME over it), with a group that
		// may stand anywhere.
		var ready []*streamState
		for _, st := range s.streams {
			if st.ready {
				ready = append(ready, st)
			}
		}
		if err := s.resync(ctx, "a stream key was replaced while being read (RESTORE?), its consumer group perhaps behind", ready); err != nil {
			return err
		}
		return mirror.Transient(fmt.Errorf("a stream key was replaced while being read: %w", cause))
	}
	if !s.cfg.Follow || len(lost) == 0 {
		return fmt.Errorf("streams %q lost consumer group %q while being read (deleted?); run again to start over on them: %w", names, s.cfg.Group, cause)
	}
	var kept []*streamState
	for _, st := range lost {
		if gone[st] {
			// The stream itself was deleted: whatever is added to
			// it from now on is new, whatever its IDs.
			st.bound = ""
		} else {
			// The group was deleted (XGROUP DESTROY), the stream
			// kept: what this process read stays handled.
			st.raiseBound(st.delivered)
			kept = append(kept, st)
		}
		st.ready, st.inPEL, st.cursor, st.delivered, st.lastNew, st.warned = false, false, "0", "", "", false
		st.gapAt, st.gapCounted, st.lastRead = "", 0, ""
	}
	if err := s.prepare(ctx, lost, "0"); err != nil {
		return err
	}
	if len(kept) > 0 {
		// Made again from the stream's first entry: those already in
		// Kafka are found and acknowledged, not sent again.
		if err := s.resync(ctx, "streams lost the consumer group (XGROUP DESTROY?); made it again from their first entry", kept); err != nil {
			return err
		}
	}
	if len(kept) < len(lost) {
		s.log.Warn("streams lost the consumer group: they were deleted; mirroring them again from their first entry once they exist", "streams", names, "group", s.cfg.Group)
	}
	// Retried by the engine: the next read starts afresh, without taking
	// this empty result for the end of any stream's pending entries.
	return mirror.Transient(fmt.Errorf("streams %q lost consumer group %q; mirroring them again from their first entry once they exist", names, s.cfg.Group))
}

// parseEntry reads [id, [field, value, ...]] keeping order and duplicates;
// a pending entry whose body was trimmed comes back as [id, nil].
func parseEntry(stream string, raw rueidis.RedisMessage) (Entry, error) {
	parts, err := raw.ToArray()
	if err != nil || len(parts) != 2 {
		return Entry{}, fmt.Errorf("stream %q: unexpected entry in XREADGROUP reply", stream)
	}
	id, err := parts[0].ToString()
	if err != nil {
		return Entry{}, fmt.Errorf("stream %q: entry without an ID: %w", stream, err)
	}
	e := Entry{Stream: stream, ID: id}
	if parts[1].IsNil() {
		return e, nil
	}
	kv, err := parts[1].ToArray()
	if err != nil {
		return Entry{}, fmt.Errorf("stream %q entry %s: unexpected fields: %w", stream, id, err)
	}
	e.Fields = make([]mapping.Field, len(kv)/2)
	for i := range e.Fields {
		e.Fields[i].Name, _ = kv[2*i].ToString()
		e.Fields[i].Value, _ = kv[2*i+1].ToString()
	}
	return e, nil
}

// waitForStreams looks, at most once per Block, whether streams that did
// not exist (or lost the group) have appeared, and prepares them.
func (s *RedisSource) waitForStreams(ctx context.Context) error {
	var waiting []*streamState
	for _, st := range s.streams {
		if !st.ready {
			waiting = append(waiting, st)
		}
	}
	if len(waiting) == 0 || time.Since(s.lastWaitCheck) < s.cfg.Block {
		return nil
	}
	s.lastWaitCheck = time.Now()
	if err := s.prepare(ctx, waiting, "0"); err != nil {
		return err
	}
	for _, st := range waiting {
		if st.ready {
			s.log.Info("stream appeared; mirroring it", "stream", st.name)
		}
	}
	return nil
}

// Commit acknowledges the batch's entries and advances the checkpoint, in
// one pipeline.
func (s *RedisSource) Commit(ctx context.Context, b *EntryBatch) error {
	return s.CommitMany(ctx, []*EntryBatch{b})
}

// CommitMany commits consecutive batches in one round trip: one XACK per
// stream and one checkpoint update for all of them. In follow mode batches
// are small and many; committing each on its own would make the commits,
// not Redis or Kafka, what the mirror waits for.
func (s *RedisSource) CommitMany(ctx context.Context, batches []*EntryBatch) (err error) {
	var lost int64
	for _, b := range batches {
		lost += b.lost
	}
	defer func() {
		if err == nil {
			s.gapCommitted.Add(lost)
		}
	}()
	c := s.cfg.Client
	u := checkpoint.R2KUpdate{
		Streams:    map[string]string{},
		Partitions: map[checkpoint.TopicPartition]int64{},
	}
	ids := map[string][]string{}
	var order []string
	// trimmedIDs are the IDs of pending entries whose bodies were trimmed,
	// per stream, for the one warning that names them.
	var trimmedIDs map[string][]string
	// Dead letters go first, in a round trip of their own: an entry is
	// acknowledged only once its copy is in the dead-letter stream (at
	// least once: a retried commit may write it again).
	if err := s.writeDeadLetters(ctx, batches); err != nil {
		return err
	}
	// A batch holds each stream's entries together, and a stream's records
	// mostly go to one partition: the maps are touched when the stream or
	// the partition changes, not for every entry.
	var (
		stream    string
		streamIDs []string
		tp        checkpoint.TopicPartition
		next      int64 = -1
	)
	endStream := func() {
		if len(streamIDs) > 0 {
			ids[stream] = streamIDs
			u.Streams[stream] = streamIDs[len(streamIDs)-1]
		}
	}
	endPartition := func() {
		if next > u.Partitions[tp] {
			u.Partitions[tp] = next
		}
	}
	for _, b := range batches {
		u.Entries += int64(b.written)
		u.Bytes += int64(b.size)
		for i, e := range b.Entries {
			if e.Stream != stream || streamIDs == nil {
				endStream()
				stream = e.Stream
				streamIDs = ids[stream]
				if streamIDs == nil {
					order = append(order, stream)
					streamIDs = make([]string, 0, len(b.Entries)-i)
				}
			}
			streamIDs = append(streamIDs, e.ID)
			switch e.skip {
			case skipTrimmed:
				if trimmedIDs == nil {
					trimmedIDs = map[string][]string{}
				}
				trimmedIDs[e.Stream] = append(trimmedIDs[e.Stream], e.ID)
			case skipNone:
				if at, offset, ok := b.landed(i); ok {
					if at != tp {
						endPartition()
						tp, next = at, -1
					}
					next = max(next, offset+1)
				}
			}
		}
	}
	endStream()
	endPartition()
	if len(order) == 0 {
		return nil
	}
	for _, b := range batches {
		for _, f := range b.floors {
			if last, ok := u.Streams[f.stream]; ok && mapping.CompareIDs(f.id, last) > 0 {
				u.Streams[f.stream] = f.id
			}
		}
	}
	// The acks and the checkpoint in one atomic step: a checkpoint moved
	// past records whose entries stay pending would make the read-back
	// after a crash start after them and send them again.
	acks := make([]streamAck, len(order))
	for i, stream := range order {
		acks[i] = streamAck{Stream: stream, IDs: ids[stream]}
	}
	// The trim goes in the same round trip, after EXEC: it runs once the
	// commit is applied, and trims only up to what the checkpoint holds
	// then (whatever became of the commit).
	var trim []rueidis.Completed
	if s.cfg.TrimSource {
		trim = append(trim, checkpoint.R2KTrimCommand(c, s.cfg.Mirror, order))
	}
	after, err := ackAndCheckpointThen(ctx, c, s.cfg.Mirror, s.cfg.Group, acks, u, time.Now(), trim...)
	if len(after) == 1 {
		s.noteTrim(after[0], order)
	}
	if err != nil {
		if errors.Is(err, checkpoint.ErrCommitRefused) {
			return err
		}
		return mirror.ClassifyRedis(err)
	}
	for _, stream := range order {
		if ids := trimmedIDs[stream]; len(ids) > 0 {
			s.log.Warn("acknowledged pending entries whose bodies were trimmed from the stream before they could be mirrored; they are lost to the mirror", "on_gap", mirror.OnGapSkip,
				"stream", stream, "count", len(ids), "ids", idList(ids))
		}
	}
	return nil
}

// trimAtStart trims the streams up to what earlier runs confirmed, before
// anything is read (TrimSource): a one-shot run with nothing new to mirror
// still trims what a consumer group has caught up with since. It is also
// where an ACL that refuses the trim (XTRIM, or a command of its script)
// stops the run, rather than at every commit.
func (s *RedisSource) trimAtStart(ctx context.Context) error {
	if !s.cfg.TrimSource {
		return nil
	}
	var streams []string
	for _, st := range s.streams {
		if st.ready {
			streams = append(streams, st.name)
		}
	}
	if len(streams) == 0 {
		return nil
	}
	c := s.cfg.Client
	trims, err := checkpoint.R2KTrimReply(s.cfg.Mirror, streams, c.Do(ctx, checkpoint.R2KTrimCommand(c, s.cfg.Mirror, streams)))
	if err != nil {
		if refusedByACL(err) {
			return setting.Errorf("%w: {TrimSource} needs XTRIM on the streams (and XINFO GROUPS, XPENDING, TYPE, HGET and HINCRBY, in a script: EVAL); grant it (ACL SETUSER <user> +xtrim, on the stream keys), or drop {TrimSource}", err)
		}
		return mirror.ClassifyRedis(err)
	}
	for _, t := range trims {
		if t.Trimmed > 0 {
			s.trimmed.Add(t.Trimmed)
			s.log.Debug("trimmed the stream up to what is mirrored and every consumer group has read", "stream", t.Stream, "trimmed", t.Trimmed, "first_kept", t.MinID)
		}
	}
	return nil
}

// refusedByACL says whether err wraps an ACL refusal: NOPERM, or, from a
// command a script called, Redis 7.0's "The user executing the script
// can't run this command or subcommand" (or "can't access" a key).
func refusedByACL(err error) bool {
	var re *rueidis.RedisError
	return errors.As(err, &re) && (isNoPerm(re) || strings.Contains(re.Error(), "The user executing the script can't"))
}

// noteTrim reads the reply of a commit's trim of streams: it counts what
// was trimmed, or warns, once until a trim works again, that the trim
// failed. A failed trim leaves the mirror's guarantees alone (at worst
// the streams grow), so the mirror goes on.
func (s *RedisSource) noteTrim(r rueidis.RedisResult, streams []string) {
	trims, err := checkpoint.R2KTrimReply(s.cfg.Mirror, streams, r)
	if err != nil {
		// A lost connection fails the commit too, which says so and is
		// retried; the server's refusal is the trim's own.
		if msg := err.Error(); msg != s.trimFailure && errors.As(err, new(*rueidis.RedisError)) {
			s.trimFailure = msg
			hint := "the streams are not trimmed until it works again"
			if refusedByACL(err) {
				hint += "; grant the user XTRIM on the streams (ACL SETUSER <user> +xtrim)"
			}
			s.log.Warn("cannot trim the source streams; mirroring goes on, "+hint, "streams", streams, "err", err)
		}
		return
	}
	s.trimFailure = ""
	for _, t := range trims {
		s.trimmed.Add(t.Trimmed)
	}
}

// writeDeadLetters XADDs, in one pipeline, the entries of batches the sink
// set aside to the dead-letter stream: the fields reason, stream, id,
// topic and timestamp_ms, then field.<name> per field of the entry, in
// order.
func (s *RedisSource) writeDeadLetters(ctx context.Context, batches []*EntryBatch) error {
	if s.cfg.DeadLetterStream == "" {
		return nil
	}
	c := s.cfg.Client
	var cmds rueidis.Commands
	for _, b := range batches {
		if b.deadWritten {
			continue
		}
		for _, r := range b.refused {
			e := &b.Entries[r.index]
			fv := c.B().Xadd().Key(s.cfg.DeadLetterStream).Id("*").FieldValue().
				FieldValue("reason", r.reason).
				FieldValue("stream", e.Stream).
				FieldValue("id", e.ID).
				FieldValue("topic", r.topic).
				FieldValue("timestamp_ms", strconv.FormatInt(r.ts, 10))
			for _, f := range e.Fields {
				fv = fv.FieldValue("field."+f.Name, f.Value)
			}
			cmds = append(cmds, fv.Build())
		}
	}
	if len(cmds) > 0 {
		for _, r := range c.DoMulti(ctx, cmds...) {
			if err := r.Error(); err != nil {
				return mirror.ClassifyRedis(fmt.Errorf("write dead-letter stream %q: %w", s.cfg.DeadLetterStream, err))
			}
		}
	}
	for _, b := range batches {
		b.deadWritten = true
	}
	return nil
}
