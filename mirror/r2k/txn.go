package r2k

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/xmirror/xmirror/mirror"
	"github.com/xmirror/xmirror/mirror/setting"
)

// TransactionalIDPrefix starts the transactional ID of every
// redis-to-kafka mirror: the ID is the prefix and the mirror's name.
const TransactionalIDPrefix = "xmirror-r2k:"

// maxTransactionalID is the longest transactional ID Kafka's protocol
// carries (a STRING: a 16-bit length).
const maxTransactionalID = 32767

// TransactionalID is the transactional ID of redis-to-kafka mirror name:
// the same for every run of the mirror, so that a new run fences the
// producer of an earlier one. Kafka puts no limit on its characters.
func TransactionalID(name string) (string, error) {
	id := TransactionalIDPrefix + name
	if len(id) > maxTransactionalID {
		return "", setting.Errorf("mirror name of %d bytes is too long for a Kafka transactional ID (%s<name>, at most %d bytes); choose a shorter {Name}", len(name), TransactionalIDPrefix, maxTransactionalID)
	}
	return id, nil
}

// Transaction sizing of the KafkaSink.
const (
	// DefaultTxnIdle is how long a transaction stays open for more
	// batches once none is coming: short, so that a follow run at a low
	// rate commits each batch within a millisecond or so.
	DefaultTxnIdle = time.Millisecond
	// DefaultTxnBytes commits a transaction once it holds that much
	// payload, whatever keeps coming.
	DefaultTxnBytes = 16 << 20
	// txnSettle is how long the first produce of a transaction waits
	// after the commit of the one before: a produce that reaches the
	// partition leader while the markers of that commit are still being
	// written is held by the broker's own retry backoff
	// (add.partitions.to.txn.retry.backoff.ms, 20 ms by default). Measured
	// on the test broker, one record per transaction: a produce right
	// after the commit took 23 ms (p50), one 0.3 to 2 ms after it 1 to 2
	// ms.
	txnSettle = time.Millisecond
	// txnAbortTime bounds an abort on the way out: a stopping run leaves
	// a transaction it cannot abort in time to the next run, whose
	// InitProducerID aborts it.
	txnAbortTime = 250 * time.Millisecond
)

// FencedError stops a run whose transactional producer Kafka fenced:
// another run of the same mirror started (its InitProducerID bumped the
// producer epoch) and took over. Nothing of this run's open transaction
// can be committed, and nothing of it is acknowledged.
type FencedError struct {
	Mirror string
	Err    error
}

func (e *FencedError) Error() string {
	return fmt.Sprintf("another run of mirror %q started (Kafka fenced this run's transactional producer %s%s, as it also does when a transaction stays open past the transaction timeout, 40s); this one stops, and what it had not committed is aborted and left to that run: %v", e.Mirror, TransactionalIDPrefix, e.Mirror, e.Err)
}

func (e *FencedError) Unwrap() error { return e.Err }

// fenced says whether err is Kafka refusing a producer whose epoch a newer
// InitProducerID of the same transactional ID bumped.
func fenced(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch)
}

// InitProducer loads the transactional producer's ID and epoch
// (InitProducerID), which fences every earlier producer of its
// transactional ID and aborts the transaction one left open. The
// read-back of an interrupted run must come after it: only then can
// nothing of an earlier run still become visible in the topics.
func InitProducer(ctx context.Context, cl *kgo.Client, name string) error {
	if _, _, err := cl.ProducerID(ctx); err != nil {
		if errors.Is(err, kerr.TransactionalIDAuthorizationFailed) {
			// Not transient: the caller names the ACL (endpoint.Kafka.Denied).
			return fmt.Errorf("init the transactional producer %s%s: %w", TransactionalIDPrefix, name, err)
		}
		return mirror.Transient(fmt.Errorf("init the transactional producer %s%s: %w", TransactionalIDPrefix, name, err))
	}
	return nil
}

// openTxn is the transaction the sink is producing into.
type openTxn struct {
	batches []*txnBatch
	bytes   int
	gen     uint64
}

// txnBatch is a batch produced into the open transaction: its outcome is
// known once the transaction ended.
type txnBatch struct {
	// answered is closed when every record produced was answered.
	answered chan struct{}
	// result is what done gets once the transaction committed: nil, or
	// a *PartialError of an entry refused before it was produced.
	result error
	// refused is an error Kafka returned for one of its records: the
	// whole transaction is aborted.
	refused error
	done    func(error)
}

// txnWait takes the sink's transaction, waiting while another holder (a
// commit) has it, bounded by ctx.
func (k *KafkaSink) txnWait(ctx context.Context) error {
	select {
	case k.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (k *KafkaSink) txnRelease() { <-k.sem }

// begin opens a transaction if none is open, at least txnSettle after
// the last one committed; the caller holds the sem.
func (k *KafkaSink) begin(ctx context.Context) error {
	if k.fatal != nil {
		return k.fatal
	}
	if k.txn != nil {
		return nil
	}
	if wait := txnSettle - time.Since(k.committed); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		}
	}
	if err := k.cfg.Client.BeginTransaction(); err != nil {
		return k.producerErr(fmt.Errorf("begin a Kafka transaction: %w", err))
	}
	k.gen++
	k.txn = &openTxn{gen: k.gen}
	return nil
}

// producerErr makes a fenced producer's error a *FencedError, remembered
// so that every later batch fails with it.
func (k *KafkaSink) producerErr(err error) error {
	if fenced(err) {
		ferr := &FencedError{Mirror: k.cfg.Mirror, Err: err}
		k.fatal = ferr
		return ferr
	}
	return err
}

// added decides, after a batch joined the open transaction, whether to
// commit now (it holds enough, or nothing more may come) or a moment
// later if no batch follows. The caller holds the sem.
func (k *KafkaSink) added(ctx context.Context) {
	t := k.txn
	if k.halted.Load() || len(t.batches) >= k.cfg.TxnBatches || t.bytes >= k.cfg.TxnBytes {
		k.end(ctx)
		return
	}
	gen := t.gen
	if k.idle != nil {
		// Idle counts from the last batch. A timer already firing
		// waits for the sem and commits early, which is harmless.
		k.idle.Stop()
	}
	k.idle = time.AfterFunc(k.cfg.TxnIdle, func() {
		if k.txnWait(ctx) != nil {
			return // the run stops; the batches fail with its cause
		}
		defer k.txnRelease()
		if k.txn != nil && k.txn.gen == gen {
			k.end(ctx)
		}
	})
}

// end commits the open transaction, or aborts it when Kafka refused one of
// its records, and then calls done for each of its batches, in order. The
// caller holds the sem.
func (k *KafkaSink) end(ctx context.Context) {
	t := k.txn
	if t == nil {
		return
	}
	k.txn = nil
	if k.idle != nil {
		k.idle.Stop()
		k.idle = nil
	}
	cl := k.cfg.Client
	err := cl.Flush(ctx)
	for _, b := range t.batches {
		if err != nil {
			break
		}
		select {
		case <-b.answered:
		case <-ctx.Done():
			err = context.Cause(ctx)
		}
	}
	var refused error
	for _, b := range t.batches {
		if answered(b) && b.refused != nil {
			refused = b.refused
			break
		}
	}
	if ferr := (*FencedError)(nil); errors.As(refused, &ferr) {
		k.fatal = ferr
	}
	if err == nil && refused == nil {
		if err = cl.EndTransaction(ctx, kgo.TryCommit); err == nil {
			k.committed = time.Now()
			for _, b := range t.batches {
				b.done(b.result)
			}
			return
		}
		err = k.producerErr(k.denied(fmt.Errorf("commit the Kafka transaction: %w", err), ""))
	}
	if err == nil {
		err = refused
	}
	// The run stops at this transaction's first batch: a later one
	// produced and committed meanwhile would land ahead of it.
	k.halted.Store(true)
	if k.fatal == nil || !errors.As(k.fatal, new(*FencedError)) {
		// Abort, so the next transaction starts clean; bounded, and
		// also on the way out (ctx done): a transaction left open is
		// aborted by the next run's InitProducerID.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), txnAbortTime)
		aerr := cl.AbortBufferedRecords(actx)
		if aerr == nil {
			aerr = cl.EndTransaction(actx, kgo.TryAbort)
		}
		cancel()
		if aerr != nil {
			aerr = k.producerErr(aerr)
			if k.fatal == nil {
				k.fatal = fmt.Errorf("not produced: the Kafka transaction of an earlier batch could not be aborted: %w", aerr)
			}
		}
		// A commit refused while another producer of the transactional
		// ID fences this one can come back as UNKNOWN_SERVER_ERROR (the
		// coordinator fails on the fence it has pending); the abort then
		// tells the fence, which is what the run must act on.
		var ferr *FencedError
		if errors.As(aerr, &ferr) && errors.Is(err, kerr.UnknownServerError) {
			err = &FencedError{Mirror: ferr.Mirror, Err: fmt.Errorf("%w (the commit before it: %v)", ferr.Err, err)}
		}
	}
	for _, b := range t.batches {
		switch {
		case answered(b) && b.refused != nil:
			b.done(b.refused)
		case errors.As(err, new(*FencedError)):
			b.done(err)
		default:
			b.done(fmt.Errorf("not committed: the Kafka transaction holding this batch was aborted: %w", err))
		}
	}
}

// answered says whether every record of b was answered, after which its
// outcome may be read.
func answered(b *txnBatch) bool {
	select {
	case <-b.answered:
		return true
	default:
		return false
	}
}

// errStopped fails a batch written after Stop.
var errStopped = errors.New("not produced: the run stopped")

// Stop ends the sink's use of its producer once a run ended, however it
// ended (its lease lost, Kafka fenced it, a signal): no batch is produced
// or committed after it, and the transaction still open, if any, is
// aborted, its batches failed. The abort is bounded (txnAbortTime); one
// that does not get through is done by the next run's InitProducerID.
func (k *KafkaSink) Stop(ctx context.Context) {
	// Write refuses every batch from now on, before the sem is free.
	k.halted.Store(true)
	wctx, cancel := context.WithTimeout(ctx, txnAbortTime)
	defer cancel()
	if k.txnWait(wctx) != nil {
		return // a commit still holds it: it ends with the run's context
	}
	defer k.txnRelease()
	if k.fatal == nil {
		k.fatal = errStopped
	}
	t := k.txn
	if t == nil {
		return
	}
	k.txn = nil
	if k.idle != nil {
		k.idle.Stop()
		k.idle = nil
	}
	if errors.As(k.fatal, new(*FencedError)) {
		// A fenced producer cannot abort: the run that fenced it did.
	} else {
		cl := k.cfg.Client
		aerr := cl.AbortBufferedRecords(wctx)
		if aerr == nil {
			aerr = cl.EndTransaction(wctx, kgo.TryAbort)
		}
		if aerr != nil {
			k.log.Debug("the open Kafka transaction could not be aborted on the way out; the next run's InitProducerID aborts it", "err", aerr)
		}
	}
	for _, b := range t.batches {
		b.done(fmt.Errorf("not committed: the run stopped and aborted the Kafka transaction holding this batch"))
	}
}

// stablePoll is how often WaitVisible asks for the last stable offsets.
const stablePoll = 5 * time.Millisecond

// WaitVisible waits, until ctx is done, for what the transactions that
// committed before it was called to be visible to read_committed readers:
// a commit returns once the transaction is decided, and its markers are
// written just after, so the topics' last stable offsets reach their end
// offsets a moment later. A one-shot run calls it before it exits, so that
// a reader started then (another mirror's snapshot of the topic) sees
// every record it wrote. It returns false when ctx ended first (another
// producer's transaction left open holds a partition back, or the broker
// does not answer); that is no failure of the run.
func WaitVisible(ctx context.Context, adm *kadm.Client, topics []string) bool {
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil || ends.Error() != nil {
		return false
	}
	for {
		stable, err := adm.ListCommittedOffsets(ctx, topics...)
		if err == nil && stable.Error() == nil {
			behind := false
			ends.Each(func(e kadm.ListedOffset) {
				if s, ok := stable.Lookup(e.Topic, e.Partition); !ok || s.Offset < e.Offset {
					behind = true
				}
			})
			if !behind {
				return true
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(stablePoll):
		}
	}
}
