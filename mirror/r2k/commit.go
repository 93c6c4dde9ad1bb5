package r2k

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/xmirror/xmirror/checkpoint"
)

// streamAck is one stream's share of a commit: the entries to acknowledge.
type streamAck struct {
	Stream string
	IDs    []string
}

// checkTransactions makes sure, changing nothing, that the server runs
// MULTI/EXEC for this client (an empty transaction): redis-to-kafka
// acknowledges entries and moves its checkpoint in one, and reads in one,
// and an ACL that refuses them would otherwise show only once entries
// are in Kafka. what names the run, for the error.
func checkTransactions(ctx context.Context, c rueidis.Client, what string) error {
	replies := c.DoMulti(ctx, c.B().Multi().Build(), c.B().Exec().Build())
	if err := transactionRefused(replies[0], what); err != nil {
		return err
	}
	if err := replies[1].Error(); err != nil {
		if isNoPerm(err) {
			return transactionRefusedErr(what, err)
		}
		return fmt.Errorf("%s: run a transaction (MULTI/EXEC): %w", what, err)
	}
	return nil
}

// transactionRefused is the error of a MULTI reply other than OK.
func transactionRefused(r rueidis.RedisResult, what string) error {
	reply, err := r.ToString()
	switch {
	case isNoPerm(err):
		return transactionRefusedErr(what, err)
	case err != nil:
		return fmt.Errorf("%s: start a transaction (MULTI): %w", what, err)
	case reply != "OK":
		return fmt.Errorf("%s: start a transaction (MULTI): unexpected reply %q", what, reply)
	}
	return nil
}

func transactionRefusedErr(what string, err error) error {
	return fmt.Errorf("%s: the server refuses MULTI/EXEC for this user (%w): grant them (ACL SETUSER <user> +multi +exec), as redis-to-kafka reads, acknowledges entries and moves its checkpoint in transactions", what, err)
}

// isNoPerm reports an ACL refusal: NOPERM, or an EXEC discarded for one
// ("EXECABORT Transaction discarded because of: NOPERM ...").
func isNoPerm(err error) bool {
	re, ok := rueidis.IsRedisErr(err)
	return ok && (strings.HasPrefix(re.Error(), "NOPERM") || strings.HasPrefix(re.Error(), "EXECABORT") && strings.Contains(re.Error(), "NOPERM"))
}

// ackAndCheckpoint acknowledges acks through group and applies u to mirror name's
// checkpoint in one MULTI/EXEC, one round trip: the XACKs, then the
// checkpoint's update (checkpoint.R2KCommitCommand), which moves the
// checkpoint only if the XACKs could not have failed. A command refused
// while queued (LOADING, NOPERM, OOM) makes EXEC discard the whole
// transaction. So the checkpoint never moves without its acks; the acks
// without the checkpoint is the only partial outcome, and a safe one. The
// engine commits batches in order, so the stored positions only move
// forward. Calling it again after any failure is safe: XACK and the
// positions are idempotent (the running totals of a commit whose reply
// was lost count twice). A refusal wraps checkpoint.ErrCommitRefused;
// other errors wrap the server's reply or the connection's failure.
func ackAndCheckpoint(ctx context.Context, c rueidis.Client, name, group string, acks []streamAck, u checkpoint.R2KUpdate, now time.Time) error {
	_, err := ackAndCheckpointThen(ctx, c, name, group, acks, u, now)
	return err
}

// ackAndCheckpointThen is ackAndCheckpoint with commands sent after the
// transaction in the same round trip (so the server runs them once EXEC
// ran, whatever it did); their replies are returned whatever the commit's
// outcome (a round trip that failed fails them too).
func ackAndCheckpointThen(ctx context.Context, c rueidis.Client, name, group string, acks []streamAck, u checkpoint.R2KUpdate, now time.Time, then ...rueidis.Completed) ([]rueidis.RedisResult, error) {
	key := checkpoint.R2KKey(name)
	streams := make([]string, len(acks))
	for i, a := range acks {
		streams[i] = a.Stream
	}
	cmds := make(rueidis.Commands, 0, len(acks)+3+len(then))
	cmds = append(cmds, c.B().Multi().Build())
	for _, a := range acks {
		cmds = append(cmds, c.B().Xack().Key(a.Stream).Group(group).Id(a.IDs...).Build())
	}
	cmds = append(cmds,
		checkpoint.R2KCommitCommand(c, name, group, streams, u, now),
		c.B().Exec().Build())
	cmds = append(cmds, then...)
	all := c.DoMulti(ctx, cmds...)
	replies, after := all[:len(all)-len(then)], all[len(all)-len(then):]
	err := commitReplies(replies, key, acks, name)
	return after, err
}

// commitReplies is the outcome of ackAndCheckpoint's transaction, from its
// replies (MULTI, the XACKs, the checkpoint's script, EXEC).
func commitReplies(replies []rueidis.RedisResult, key string, acks []streamAck, name string) error {
	// A connection that failed fails every reply, MULTI's too: the
	// transaction then ran whole or not at all (see EXEC's reply below).
	// Only the server's own refusal of MULTI left the commands after it
	// to run one by one.
	if merr := replies[0].Error(); merr == nil || errors.As(merr, new(*rueidis.RedisError)) {
		if err := transactionRefused(replies[0], "acknowledge entries and update checkpoint "+strconv.Quote(key)); err != nil {
			// Whatever they did, the checkpoint may have moved without
			// its acks, and only an operator can make that right.
			return fmt.Errorf("%w (the acknowledgements and the checkpoint update ran outside a transaction): %w", err, checkpoint.ErrCommitRefused)
		}
	}
	if err := replies[len(replies)-1].Error(); isNoPerm(err) {
		return fmt.Errorf("%w; nothing was acknowledged and the checkpoint did not move: %w", transactionRefusedErr("acknowledge entries and update checkpoint "+strconv.Quote(key), err), checkpoint.ErrCommitRefused)
	}
	// what names the command of reply i.
	what := func(i int) string {
		switch {
		case i == 0:
			return "start the transaction (MULTI)"
		case i <= len(acks):
			return fmt.Sprintf("acknowledge entries of stream %q (XACK)", acks[i-1].Stream)
		}
		return "update checkpoint " + strconv.Quote(key)
	}
	applied, err := replies[len(replies)-1].ToArray()
	var refused *rueidis.RedisError
	switch {
	case err != nil && errors.As(err, &refused):
		// Discarded as a whole (EXECABORT): the command refused while
		// queued says why (LOADING after a restart is worth retrying,
		// NOPERM is not).
		for i, r := range replies[:len(replies)-1] {
			if qerr := r.Error(); qerr != nil {
				return fmt.Errorf("%s: %w; nothing was acknowledged and the checkpoint did not move", what(i), qerr)
			}
		}
		return fmt.Errorf("acknowledge entries and update checkpoint %q (EXEC): %w", key, err)
	case err != nil:
		// The connection failed: the transaction ran whole or not at
		// all, and running it again is right either way.
		return fmt.Errorf("acknowledge entries and update checkpoint %q: %w", key, err)
	}
	if len(applied) != len(acks)+1 {
		return fmt.Errorf("acknowledge entries and update checkpoint %q: EXEC returned %d replies for %d commands", key, len(applied), len(acks)+1)
	}
	var ackErr error
	for i := range acks {
		if err := applied[i].Error(); err != nil {
			ackErr = fmt.Errorf("%s: %w", what(i+1), err)
			break
		}
	}
	ran, err := checkpoint.R2KCommitReply(name, applied[len(acks)])
	switch {
	case !ran && ackErr != nil:
		// The acks that succeeded stand, the checkpoint did not move.
		return ackErr
	case err != nil:
		return err
	case ackErr != nil:
		// The script's checks are the ways XACK fails; should it fail
		// for another, say what that leaves.
		return fmt.Errorf("%w, yet checkpoint %q moved: the entries stay pending, and a run after this one may send their records again", ackErr, key)
	}
	return nil
}
