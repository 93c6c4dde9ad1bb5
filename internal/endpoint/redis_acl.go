package endpoint

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/rueidis"
)

// A RedisCommand is one command a mirror sends to Redis, written as a
// permission check sends it: the mirror's real keys, harmless other
// arguments. A check never runs it.
type RedisCommand struct {
	// Rule names the command as ACL rules do: "xack", "xgroup|create".
	Rule string
	// Args is the whole command: "XACK", stream, group, "0-1".
	Args []string
	// Key is the key it touches ("" none); What says what that key is to
	// the mirror: "stream", "checkpoint", "lease".
	Key, What string
	// KeyPattern is the ACL key pattern that grants it, when Key stands
	// for keys a run names anew (K2ROrderKey); "" is Key alone.
	KeyPattern string
}

// Pattern is the ACL key pattern that grants c's key.
func (c RedisCommand) Pattern() string {
	if c.KeyPattern != "" {
		return c.KeyPattern
	}
	return ACLPattern(c.Key)
}

// ACLPattern is key as an ACL key pattern that matches it alone.
func ACLPattern(key string) string {
	var b strings.Builder
	for _, r := range key {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Name is the command as people write it: "XGROUP CREATE".
func (c RedisCommand) Name() string { return strings.ToUpper(strings.ReplaceAll(c.Rule, "|", " ")) }

// RedisPermission is whether a user may run one RedisCommand.
type RedisPermission struct {
	Command RedisCommand
	// OK: the user may run it. Otherwise KeyDenied tells a refused key
	// from a refused command (the command is checked first, so a refused
	// key means the command itself is allowed), and Unchecked, when not
	// "", says why the server could not tell.
	OK        bool
	KeyDenied bool
	Unchecked string
}

// How CheckRedisPermissions asked.
const (
	ProbeDryRun = "ACL DRYRUN"
	ProbeMulti  = "MULTI, discarded"
)

// CheckRedisPermissions asks the server whether user, the one c is logged
// in as, may run each of cmds, without running any. On Redis 7 and later
// it asks ACL DRYRUN. A user that may not run ACL DRYRUN (or a server
// without it) is asked by queueing the commands in a transaction that
// cannot run: Redis checks a command's ACL when it queues it (a refused
// one replies NOPERM), and a command of the wrong arity queued first makes
// EXEC discard the whole transaction (EXECABORT), so nothing queued is
// ever run. MULTI and that command are each sent alone, and only once
// their replies show the transaction doomed is anything queued. MULTI and
// EXEC themselves are told by the replies to the transaction's own MULTI
// and EXEC (a refused EXEC discards it too, saying NOPERM). The check
// takes a connection of its own, which it closes.
func CheckRedisPermissions(ctx context.Context, c rueidis.Client, user string, cmds []RedisCommand) ([]RedisPermission, string, error) {
	if len(cmds) == 0 {
		return nil, ProbeDryRun, nil
	}
	probe := make(rueidis.Commands, 0, len(cmds))
	for _, cmd := range cmds {
		probe = append(probe, c.B().Arbitrary("ACL", "DRYRUN").Args(user).Args(cmd.Args...).Build())
	}
	replies := c.DoMulti(ctx, probe...)
	if err := replies[0].Error(); err != nil && !noDryRun(err) {
		return nil, ProbeDryRun, err
	} else if err == nil {
		out := make([]RedisPermission, len(cmds))
		for i, r := range replies {
			out[i] = dryRunPermission(cmds[i], r)
		}
		return out, ProbeDryRun, nil
	}
	out, err := checkInMulti(ctx, c, cmds)
	return out, ProbeMulti, err
}

// noDryRun says the server will not answer ACL DRYRUN for this user: the
// user may not run it, or the server (before 7.0) has no such subcommand.
func noDryRun(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "NOPERM") || strings.Contains(msg, "unknown subcommand") || strings.Contains(msg, "unknown command")
}

func dryRunPermission(cmd RedisCommand, r rueidis.RedisResult) RedisPermission {
	p := RedisPermission{Command: cmd}
	s, err := r.ToString()
	switch {
	case err != nil:
		p.Unchecked = err.Error()
	case s == "OK":
		p.OK = true
	case strings.Contains(strings.ToLower(s), "no permissions"):
		// "This user has no permissions to access the 'k' key" (7.0),
		// "No permissions to access a key" (7.2).
		p.KeyDenied = strings.Contains(s, " key")
	default:
		p.Unchecked = s
	}
	return p
}

// wrongArity is a command Redis refuses before any ACL check (GET takes
// exactly one key), which marks the transaction so EXEC discards it.
var wrongArity = []string{"GET"}

func checkInMulti(ctx context.Context, c rueidis.Client, cmds []RedisCommand) ([]RedisPermission, error) {
	dc, cancel := c.Dedicate()
	defer cancel()
	// Whatever state the check leaves the connection in (a transaction
	// open after a failed round trip), it is never handed back for reuse.
	defer dc.Close()
	out := make([]RedisPermission, len(cmds))
	for i, cmd := range cmds {
		out[i] = RedisPermission{Command: cmd}
	}
	// MULTI alone first: were it refused, what follows would run.
	if err := dc.Do(ctx, dc.B().Multi().Build()).Error(); err != nil {
		if !isNoPerm(err) {
			return nil, err
		}
		for i, cmd := range cmds {
			if cmd.Rule != "multi" {
				out[i].Unchecked = "not checked: the user may run neither ACL DRYRUN nor MULTI"
			}
		}
		return out, nil
	}
	// Then the command that dooms the transaction, alone too: only once
	// it is refused may anything be queued.
	if err := dc.Do(ctx, dc.B().Arbitrary(wrongArity...).Build()).Error(); err == nil || !strings.Contains(err.Error(), "wrong number of arguments") {
		return nil, fmt.Errorf("the transaction that checks permissions could not be marked to be discarded (%v); nothing was queued", err)
	}
	queued := make([]int, 0, len(cmds))
	batch := make(rueidis.Commands, 0, len(cmds)+1)
	for i, cmd := range cmds {
		switch cmd.Rule {
		case "multi":
			out[i].OK = true
			continue
		case "exec":
			continue
		case "discard", "quit", "reset":
			// Inside a transaction these are not queued but run, and
			// what follows them would too.
			out[i].Unchecked = "not checked: " + cmd.Name() + " cannot be checked inside a transaction"
			continue
		}
		queued = append(queued, i)
		batch = append(batch, dc.B().Arbitrary(cmd.Args[0]).Args(cmd.Args[1:]...).Build())
	}
	batch = append(batch, dc.B().Exec().Build())
	replies := dc.DoMulti(ctx, batch...)
	execErr := replies[len(replies)-1].Error()
	switch {
	case execErr == nil:
		return nil, errors.New("the transaction that checks permissions ran instead of being discarded")
	case !isNoPerm(execErr) && !strings.Contains(execErr.Error(), "EXECABORT"):
		return nil, execErr
	}
	// An EXEC refused discards the transaction all the same, saying
	// why: "EXECABORT Transaction discarded because of: NOPERM ...".
	execRefused := strings.Contains(execErr.Error(), "NOPERM")
	for i, cmd := range cmds {
		if cmd.Rule == "exec" {
			out[i].OK = !execRefused
		}
	}
	for j, i := range queued {
		err := replies[j].Error()
		switch {
		case err == nil, inMultiOnly(err):
			out[i].OK = true
		case isNoPerm(err):
			out[i].KeyDenied = strings.Contains(err.Error(), " key")
		default:
			out[i].Unchecked = err.Error()
		}
	}
	return out, nil
}

func isNoPerm(err error) bool {
	var re *rueidis.RedisError
	return errors.As(err, &re) && strings.HasPrefix(re.Error(), "NOPERM")
}

// inMultiOnly says a command passed the ACL check and was then refused
// only for being inside a transaction (WATCH, MULTI), which Redis checks
// after the ACL.
func inMultiOnly(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "inside MULTI is not allowed") || strings.Contains(msg, "can not be nested") || strings.Contains(msg, "not allowed inside a transaction")
}

// RedisConnectionCommands are what the client sends on connecting (HELLO,
// AUTH, CLIENT SETNAME) and what tells a Redis Cluster (INFO, CLUSTER
// SLOTS): every mirror needs them.
func RedisConnectionCommands() []RedisCommand {
	return []RedisCommand{
		{Rule: "ping", Args: []string{"PING"}},
		{Rule: "hello", Args: []string{"HELLO", "3"}},
		{Rule: "auth", Args: []string{"AUTH", "x"}},
		{Rule: "client|setname", Args: []string{"CLIENT", "SETNAME", "xmirror"}},
		{Rule: "cluster|slots", Args: []string{"CLUSTER", "SLOTS"}},
		{Rule: "info", Args: []string{"INFO", "server"}},
	}
}
