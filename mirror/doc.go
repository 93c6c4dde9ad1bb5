// Package mirror is xmirror's copy engine. It moves batches from a Source to
// a Sink and tells the Source a batch may be forgotten (acknowledged,
// checkpointed) only after the Sink confirmed the whole batch, in the order
// the batches were read. The Redis and Kafka sides are implementations of
// those two small interfaces; the engine knows nothing of either.
//
// The engine keeps several batches in flight: while the Sink makes one
// durable, the Source already reads the next, and confirmations are
// committed in order by a separate goroutine. Memory is bounded by the batch
// size times the number of batches in flight, not by the backlog.
package mirror
