package k2r

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/redis/rueidis"
	"github.com/redis/rueidis/mock"

	"github.com/xmirror/xmirror/checkpoint"
)

// The replies of one write's commands (see applySteps), built as rueidis
// decodes them from a server, so that readResult is tested on every case
// it tells apart without a server that would have to be brought into each.

var (
	replyOK     = mock.Result(mock.RedisString("OK"))
	replyQueued = mock.Result(mock.RedisString("QUEUED"))
	replyNil    = mock.Result(mock.RedisNil())
)

// strs is a script's reply: an array of strings.
func strs(ss ...string) rueidis.RedisMessage {
	ms := make([]rueidis.RedisMessage, len(ss))
	for i, s := range ss {
		ms[i] = mock.RedisBlobString(s)
	}
	return mock.RedisArray(ms...)
}

// scriptReply is the check script's reply.
func scriptReply(ss ...string) rueidis.RedisResult { return mock.Result(strs(ss...)) }

func redisErr(msg string) rueidis.RedisResult { return mock.Result(mock.RedisError(msg)) }

// exec is EXEC's reply of a transaction that ran: the begin script's, the
// XADDs' and the positions script's replies.
func exec(begin rueidis.RedisMessage, xadds []rueidis.RedisMessage, positions rueidis.RedisMessage) rueidis.RedisResult {
	return mock.Result(mock.RedisArray(append(append([]rueidis.RedisMessage{begin}, xadds...), positions)...))
}

// ids are XADD replies: the IDs added.
func ids(ss ...string) []rueidis.RedisMessage {
	ms := make([]rueidis.RedisMessage, len(ss))
	for i, s := range ss {
		ms[i] = mock.RedisBlobString(s)
	}
	return ms
}

// replies is a write's replies: WATCH, the check, MULTI, QUEUED for the
// begin script, nx XADDs and the positions script, then EXEC. Each of
// change replaces the reply at its index (negative: from the end).
func replies(nx int, check, execReply rueidis.RedisResult, change ...indexed) []rueidis.RedisResult {
	rs := []rueidis.RedisResult{replyOK, check, replyOK}
	for range nx + 2 {
		rs = append(rs, replyQueued)
	}
	rs = append(rs, execReply)
	for _, c := range change {
		i := c.i
		if i < 0 {
			i += len(rs)
		}
		rs[i] = c.r
	}
	return rs
}

type indexed struct {
	i int
	r rueidis.RedisResult
}

func TestReadResultDecidesEveryReply(t *testing.T) {
	tp := checkpoint.TopicPartition{Topic: "t", Partition: 3}
	field := checkpoint.K2RPositionField(tp)
	key := checkpoint.K2RKey("m", "s")
	// plain is a write of two entries moving t/3 from 10 to 12.
	plain := func() *Write {
		w := &Write{Stream: "s", Moves: []Move{{Partition: tp, From: 10, To: 12}}}
		w.AddEntry("*")
		w.AddField("a", "1")
		w.AddEntry("*")
		w.AddField("b", "2")
		return w
	}
	// classified is a PreserveIDs write of four entries the check found
	// new, present, new and taken, in that order: two XADDs.
	classified := func() *Write {
		w := &Write{Stream: "s", Moves: []Move{{Partition: tp, From: 10, To: 14}}}
		for _, id := range []string{"5-0", "3-0", "6-0", "2-0"} {
			w.AddEntry(id)
			w.AddField("f", id)
		}
		w.Expect([]byte{IDNew, IDPresent, IDNew, IDTaken}, "5-0 9 0-0 4")
		return w
	}
	// unsorted is a PreserveIDs write whose IDs do not increase: its
	// transaction only has the check classify them (no XADD).
	unsorted := func() *Write {
		w := &Write{Stream: "s", Moves: []Move{{Partition: tp, From: 10, To: 12}}}
		w.AddEntry("7-0")
		w.AddField("f", "1")
		w.AddEntry("4-0")
		w.AddField("f", "2")
		return w
	}
	// increasing is a PreserveIDs write of IDs that go up: the check
	// looks at the first alone.
	increasing := func() *Write {
		w := &Write{Stream: "s", Moves: []Move{{Partition: tp, From: 10, To: 12}}}
		w.AddEntry("5-0")
		w.AddField("f", "1")
		w.AddEntry("6-0")
		w.AddField("f", "2")
		return w
	}
	connErr := &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
	okPositions := strs("ok")
	okBegin := strs("ok")

	type want struct {
		is       []error  // errors.Is each
		text     []string // substrings of the error
		conflict *ConflictError
		idCheck  *IDCheckError
		res      writeResult // Added, Present, Replayed, LastID
	}
	tests := []struct {
		name     string
		preserve bool
		early    bool
		write    func() *Write
		replies  func(nx int) []rueidis.RedisResult
		want     want
	}{
		// Applied.
		{name: "applied: entries added, the last ID kept", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("ok"), exec(okBegin, ids("1-1", "1-2"), okPositions))
			},
			want: want{res: writeResult{Added: 2, LastID: "1-2"}}},
		{name: "applied with classes: present ones counted, others not written", preserve: true, write: classified,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("ok"), exec(okBegin, ids("5-0", "6-0"), okPositions))
			},
			want: want{res: writeResult{Added: 2, Present: 1, LastID: "6-0"}}},
		{name: "applied with nothing to add", write: func() *Write { return &Write{Stream: "s", Moves: []Move{{Partition: tp, From: 10, To: 12}}} },
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("ok"), exec(okBegin, nil, okPositions))
			},
			want: want{res: writeResult{}}},
		{name: "applied although the check failed: the begin script decided", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, redisErr("LOADING Redis is loading the dataset in memory"), exec(okBegin, ids("1-1", "1-2"), okPositions))
			},
			want: want{res: writeResult{Added: 2, LastID: "1-2"}}},
		{name: "applied, an XADD failed: its positions moved without it", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("ok"), exec(okBegin, []rueidis.RedisMessage{mock.RedisBlobString("1-1"), mock.RedisError("ERR The ID specified in XADD is equal or smaller than the target stream top item")}, okPositions))
			},
			want: want{text: []string{`stream "s": entry 1 (ID *) of a batch was not written (The ID specified`, "t:3 from 10 to 12", key}, res: writeResult{Added: 1, LastID: "1-1"}}},
		{name: "applied, EXEC with a reply too few", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("ok"), exec(okBegin, ids("1-1"), okPositions))
			},
			want: want{text: []string{"EXEC returned 3 replies for 4 commands"}}},
		{name: "applied, the positions script failed", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("ok"), exec(okBegin, ids("1-1", "1-2"), mock.RedisError("ERR Error running script")))
			},
			want: want{text: []string{"moving checkpoint", "Error running script"}}},
		{name: "applied, the key became another type: nothing moved", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("ok"), exec(okBegin, []rueidis.RedisMessage{mock.RedisError("WRONGTYPE"), mock.RedisError("WRONGTYPE")}, strs("wrongtype", "string")))
			},
			want: want{is: []error{ErrWrongType}, text: []string{"became a string"}}},
		{name: "applied, positions script's reply unknown", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("ok"), exec(okBegin, ids("1-1", "1-2"), strs("what")))
			},
			want: want{text: []string{`unexpected reply ["what"]`}}},
		{name: "taken back: the begin script found a conflict", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, redisErr("BUSY"), exec(strs("conflict", field, "11", "10"), ids("1-1", "1-2"), strs("undone", "2")))
			},
			want: want{conflict: &ConflictError{Key: key, Name: "m", Partition: tp, Stored: 11, Expected: 10}}},
		{name: "taken back: the begin script found it replayed", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, redisErr("BUSY"), exec(strs("replayed"), ids("1-1", "1-2"), strs("undone", "2")))
			},
			want: want{res: writeResult{Replayed: true}}},
		{name: "taken back, early: out of order", write: plain, early: true,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, redisErr("BUSY"), exec(strs("conflict", field, "", "10"), ids("1-1", "1-2"), strs("undone", "2")))
			},
			want: want{is: []error{ErrOutOfOrder}, text: []string{"partition t/3 holds no position"}}},
		{name: "taken back although the begin script passed", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("ok"), exec(okBegin, ids("1-1", "1-2"), strs("undone", "2")))
			},
			want: want{text: []string{"taken back although its start check passed"}}},
		{name: "taken back, the begin script failed", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("ok"), exec(mock.RedisError("ERR begin"), ids("1-1", "1-2"), strs("undone", "2")))
			},
			want: want{text: []string{"taken back, but its start check answered begin"}}},
		{name: "unchecked: neither check ran and the start was wrong", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, redisErr("LOADING"), exec(mock.RedisError("LOADING"), ids("1-1", "1-2"), strs("unchecked", field, "11", "10")))
			},
			want: want{is: []error{ErrWrittenUnchecked}, conflict: &ConflictError{Key: key, Name: "m", Partition: tp, Stored: 11, Expected: 10}, text: []string{"its check could not run: LOADING", "twice"}}},

		// Aborted (EXEC nil): the check's reply says why.
		{name: "aborted, check ok: the checkpoint changed meanwhile", write: plain,
			replies: func(nx int) []rueidis.RedisResult { return replies(nx, scriptReply("ok"), replyNil) },
			want:    want{is: []error{ErrCheckpointChanged}, text: []string{"checkpoint \"" + key + "\" changed"}}},
		{name: "aborted, check ok, PreserveIDs: the checkpoint or the stream changed", preserve: true, write: classified,
			replies: func(nx int) []rueidis.RedisResult { return replies(nx, scriptReply("ok"), replyNil) },
			want:    want{is: []error{ErrCheckpointChanged}, text: []string{"or the stream changed"}}},
		{name: "aborted: replayed", write: plain,
			replies: func(nx int) []rueidis.RedisResult { return replies(nx, scriptReply("replayed"), replyNil) },
			want:    want{res: writeResult{Replayed: true}}},
		{name: "aborted: conflict, ahead", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("conflict", field, "20", "10"), replyNil)
			},
			want: want{conflict: &ConflictError{Key: key, Name: "m", Partition: tp, Stored: 20, Expected: 10}}},
		{name: "aborted: conflict, went back", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("conflict", field, "4", "10"), replyNil)
			},
			want: want{conflict: &ConflictError{Key: key, Name: "m", Partition: tp, Stored: 4, Expected: 10}}},
		{name: "aborted: conflict, position gone", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("conflict", field, "", "10"), replyNil)
			},
			want: want{conflict: &ConflictError{Key: key, Name: "m", Partition: tp, Stored: checkpoint.NoPosition, Expected: 10}}},
		{name: "aborted: conflict where none was expected", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("conflict", field, "10", ""), replyNil)
			},
			want: want{conflict: &ConflictError{Key: key, Name: "m", Partition: tp, Stored: 10, Expected: checkpoint.NoPosition}}},
		{name: "aborted: conflict, early: out of order, not a conflict yet", write: plain, early: true,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("conflict", field, "20", "10"), replyNil)
			},
			want: want{is: []error{ErrOutOfOrder}, text: []string{`write stream "s"`, "holds offset 20"}}},
		{name: "aborted: conflict on a field that names no partition", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("conflict", "nonsense", "20", "10"), replyNil)
			},
			want: want{is: []error{checkpoint.ErrCorrupt}, text: []string{`conflict on field "nonsense"`}}},
		{name: "aborted: corrupt checkpoint", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("corrupt", "it holds a string, not a hash"), replyNil)
			},
			want: want{is: []error{checkpoint.ErrCorrupt}, text: []string{"it holds a string, not a hash", "another Name"}}},
		{name: "aborted: the destination is not a stream", write: plain,
			replies: func(nx int) []rueidis.RedisResult { return replies(nx, scriptReply("wrongtype", "hash"), replyNil) },
			want:    want{is: []error{ErrWrongType}, text: []string{"holds a hash", "another Stream"}}},
		{name: "aborted: the first ID not above the last", preserve: true, write: increasing,
			replies: func(nx int) []rueidis.RedisResult { return replies(nx, scriptReply("ids", "9-0"), replyNil) },
			want:    want{idCheck: &IDCheckError{Stream: "s", LastID: "9-0"}}},
		{name: "aborted: IDs classified", preserve: true, write: unsorted,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("ids", "9-0", "pb", "9-0 3 0-0 3"), replyNil)
			},
			want: want{idCheck: &IDCheckError{Stream: "s", LastID: "9-0", Classes: []byte("pb"), State: "9-0 3 0-0 3"}}},
		{name: "aborted: IDs classified, a class short", preserve: true, write: unsorted,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("ids", "9-0", "p", ""), replyNil)
			},
			want: want{text: []string{"the check classified 1 entry IDs of 2"}}},
		{name: "aborted: the check script failed inside", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("error", "user_script:1: oops"), replyNil)
			},
			want: want{text: []string{"checking checkpoint \"" + key + "\" failed: error user_script:1: oops"}}},
		{name: "aborted: the check's reply unknown", write: plain,
			replies: func(nx int) []rueidis.RedisResult { return replies(nx, scriptReply("what"), replyNil) },
			want:    want{text: []string{"failed: what "}}},
		{name: "aborted: the check refused by the server", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, redisErr("NOSCRIPT No matching script"), replyNil)
			},
			want: want{text: []string{"checking checkpoint \"" + key + "\": NOSCRIPT"}}},
		{name: "aborted: WATCH refused", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("ok"), replyNil, indexed{0, redisErr("NOPERM this user has no permissions to run the 'watch' command")})
			},
			want: want{text: []string{"checking checkpoint", "NOPERM"}}},

		// Refused as a whole (EXECABORT).
		{name: "refused: the check's refusal comes first", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("conflict", field, "20", "10"), redisErr("EXECABORT Transaction discarded because of previous errors."), indexed{4, redisErr("OOM command not allowed")})
			},
			want: want{conflict: &ConflictError{Key: key, Name: "m", Partition: tp, Stored: 20, Expected: 10}}},
		{name: "refused: a command refused as it was queued says why", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("ok"), redisErr("EXECABORT Transaction discarded because of previous errors."), indexed{4, redisErr("OOM command not allowed when used memory > 'maxmemory'")})
			},
			want: want{text: []string{"transaction refused: OOM"}}},
		{name: "refused with nothing refused while queued", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("ok"), redisErr("EXECABORT Transaction discarded because of previous errors."))
			},
			want: want{text: []string{`write stream "s": EXECABORT`}}},
		{name: "refused after the check failed", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, redisErr("LOADING Redis is loading"), redisErr("EXECABORT Transaction discarded because of previous errors."))
			},
			want: want{text: []string{"checking checkpoint \"" + key + "\": LOADING"}}},
		{name: "refused after the check failed, a queued refusal says more", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, redisErr("LOADING Redis is loading"), redisErr("EXECABORT Transaction discarded because of previous errors."), indexed{3, redisErr("LOADING Redis is loading")})
			},
			want: want{text: []string{"transaction refused: LOADING"}}},
		{name: "refused, classify only: the check did not classify", preserve: true, write: unsorted,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, redisErr("BUSY Redis is busy running a script"), redisErr("EXECABORT Transaction discarded because of previous errors."), indexed{-2, redisErr("ERR wrong number of arguments for 'xadd' command")})
			},
			want: want{text: []string{"the check did not classify them (BUSY Redis is busy running a script, ); nothing was written"}}},

		// MULTI refused, or the connection lost.
		{name: "MULTI refused: the commands ran one by one", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				return replies(nx, scriptReply("ok"), redisErr("ERR EXEC without MULTI"), indexed{2, redisErr("NOPERM this user has no permissions to run the 'multi' command")})
			},
			want: want{is: []error{ErrWrittenUnchecked}, text: []string{"the server refused MULTI (NOPERM", key}}},
		{name: "connection lost", write: plain,
			replies: func(nx int) []rueidis.RedisResult {
				rs := make([]rueidis.RedisResult, nx+writeOverhead)
				for i := range rs {
					rs[i] = mock.ErrorResult(connErr)
				}
				return rs
			},
			want: want{is: []error{connErr}, text: []string{`write stream "s": read tcp`}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opt := stepOptions{Name: "m", PreserveIDs: tc.preserve}
			w := tc.write()
			rs := tc.replies(w.toWrite(opt))
			if len(rs) != w.toWrite(opt)+writeOverhead {
				t.Fatalf("%d replies for a write of %d commands", len(rs), w.toWrite(opt)+writeOverhead)
			}
			var res writeResult
			err := readResult(rs, opt, w, &res, tc.early)
			res.Err = nil
			if res != tc.want.res {
				t.Errorf("result %+v, want %+v", res, tc.want.res)
			}
			wantErr := len(tc.want.is) > 0 || len(tc.want.text) > 0 || tc.want.conflict != nil || tc.want.idCheck != nil
			if !wantErr {
				if err != nil {
					t.Fatalf("err %v, want none", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, target := range tc.want.is {
				if !errors.Is(err, target) {
					t.Errorf("err %v, want it to be %v", err, target)
				}
			}
			for _, s := range tc.want.text {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("err %q, want it to say %q", err, s)
				}
			}
			if want := tc.want.conflict; want != nil {
				var got *ConflictError
				if !errors.As(err, &got) || *got != *want {
					t.Errorf("err %v (%#v), want %#v", err, got, want)
				}
			} else if IsConflict(err) {
				t.Errorf("err %v is a conflict", err)
			}
			if want := tc.want.idCheck; want != nil {
				var got *IDCheckError
				if !errors.As(err, &got) || got.Stream != want.Stream || got.LastID != want.LastID || string(got.Classes) != string(want.Classes) || (got.Classes == nil) != (want.Classes == nil) || got.State != want.State {
					t.Errorf("err %v (%#v), want %#v", err, got, want)
				}
			}
		})
	}
}

func TestOrderTokenErr(t *testing.T) {
	perm := "NOPERM this user has no permissions to access one of the keys used as arguments"
	tests := []struct {
		name    string
		replies []rueidis.RedisResult
		want    string // "" none; else what the error says
		nil     bool   // the error is Redis's nil (EXEC aborted)
	}{
		{"pushed", []rueidis.RedisResult{replyOK, replyQueued, replyQueued, mock.Result(mock.RedisArray(mock.RedisInt64(1), mock.RedisInt64(1)))}, "", false},
		{"MULTI refused", []rueidis.RedisResult{redisErr(perm), replyQueued, replyQueued, mock.Result(mock.RedisArray())}, "NOPERM", false},
		{"LPUSH refused while queued", []rueidis.RedisResult{replyOK, redisErr(perm), replyQueued, redisErr("EXECABORT Transaction discarded because of previous errors.")}, "NOPERM", false},
		{"EXEC refused", []rueidis.RedisResult{replyOK, replyQueued, replyQueued, redisErr("EXECABORT Transaction discarded because of previous errors.")}, "EXECABORT", false},
		{"EXEC aborted", []rueidis.RedisResult{replyOK, replyQueued, replyQueued, replyNil}, "", true},
		{"PEXPIRE failed inside EXEC", []rueidis.RedisResult{replyOK, replyQueued, replyQueued, mock.Result(mock.RedisArray(mock.RedisInt64(1), mock.RedisError("WRONGTYPE Operation against a key holding the wrong kind of value")))}, "WRONGTYPE", false},
		{"LPUSH failed inside EXEC", []rueidis.RedisResult{replyOK, replyQueued, replyQueued, mock.Result(mock.RedisArray(mock.RedisError("WRONGTYPE Operation against a key holding the wrong kind of value"), mock.RedisInt64(1)))}, "WRONGTYPE", false},
	}
	for _, tc := range tests {
		if len(tc.replies) != orderTokenReplies {
			t.Fatalf("%s: %d replies, want %d", tc.name, len(tc.replies), orderTokenReplies)
		}
		err := orderTokenErr(tc.replies)
		switch {
		case tc.nil:
			if !rueidis.IsRedisNil(err) {
				t.Errorf("%s: err %v, want Redis nil", tc.name, err)
			}
		case tc.want == "" && err != nil:
			t.Errorf("%s: err %v, want none", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: err %v, want one saying %q", tc.name, err, tc.want)
		}
	}
}
