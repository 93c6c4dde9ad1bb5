package checkpoint

import "github.com/xmirror/xmirror/internal/endpoint"

// LeaseCommands are the commands that take, renew and release the lease
// of mirror name of kind (its scripts call GET, SET, PEXPIRE and DEL) and
// that look for the leases of other mirrors (EXISTS), on its key: what a
// user's ACL rules must allow for a lease.
func LeaseCommands(kind, name string) []endpoint.RedisCommand {
	k := LeaseKey(kind, name)
	c := func(rule string, args ...string) endpoint.RedisCommand {
		return endpoint.RedisCommand{Rule: rule, Args: args, Key: k, What: "lease"}
	}
	return []endpoint.RedisCommand{
		c("get", "GET", k),
		c("set", "SET", k, "x", "PX", "1000", "NX"),
		c("pexpire", "PEXPIRE", k, "1000"),
		c("del", "DEL", k),
		c("exists", "EXISTS", k),
		c("eval", "EVAL", "return 0", "1", k),
		c("evalsha", "EVALSHA", "0000000000000000000000000000000000000000", "1", k),
	}
}

// DescriptorCommands are the commands that record what mirror name of
// kind is (see RecordDescriptor), on its key.
func DescriptorCommands(kind, name string) []endpoint.RedisCommand {
	k := DescriptorKey(kind, name)
	return []endpoint.RedisCommand{
		{Rule: "hgetall", Args: []string{"HGETALL", k}, Key: k, What: "mirror record"},
		{Rule: "hset", Args: []string{"HSET", k, "version", "1"}, Key: k, What: "mirror record"},
	}
}
