// Package checkpoint owns the positions xmirror keeps in Redis: the names of
// their keys, their encoding, their version and the lease. Nothing else in
// xmirror reads these keys; the one other writer is the kafka-to-redis
// atomic step (the Redis sink of mirror/k2r), which moves a stream's
// positions together with the entries it writes, in the fields and format
// given here. The redis-to-kafka commit (the Redis source of mirror/r2k)
// acknowledges entries and moves the checkpoint in one transaction: it
// builds the acknowledgements and the transaction, and queues in it the
// update this package builds (R2KCommitCommand) and reads the reply of
// (R2KCommitReply).
//
// Every checkpoint is a Redis hash with a "version" field. A reader refuses a
// key that is not a hash, has no version, has a version it does not know,
// holds a position it cannot parse or lacks the position of a partition it
// records covering: a mirror never silently restarts from the beginning
// because its checkpoint was damaged.
//
// redis-to-kafka keeps one hash per mirror, in the Redis being read
// (see R2KKey). kafka-to-redis keeps one hash per mirror and destination
// stream, in a key sharing the stream's hash slot so that the entries and the
// positions they came from can be written in one atomic step (see K2RKey). It
// also records the ID of each topic its positions are about, so that a
// topic deleted and created again under its name is not taken for the old
// one (see TopicRecreatedError).
package checkpoint
