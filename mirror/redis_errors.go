package mirror

import (
	"context"
	"errors"
	"strings"

	"github.com/redis/rueidis"
)

// classifyRedis marks a Redis failure transient when retrying can help: the
// connection failed or the server is (re)starting. An error reply about the
// data or the command itself (WRONGTYPE, NOGROUP, ...) is final.
func classifyRedis(err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return err
	}
	if re, ok := rueidis.IsRedisErr(err); ok {
		if re.IsLoading() || re.IsTryAgain() || re.IsClusterDown() || strings.HasPrefix(re.Error(), "MASTERDOWN") || strings.HasPrefix(re.Error(), "BUSY ") {
			return Transient(err)
		}
		return err
	}
	return Transient(err)
}

// isRedisErrPrefix reports a Redis error reply starting with prefix, such as
// "NOGROUP" or "BUSYGROUP".
func isRedisErrPrefix(err error, prefix string) bool {
	re, ok := rueidis.IsRedisErr(err)
	return ok && strings.HasPrefix(re.Error(), prefix)
}

// isRedisErrContaining reports a Redis error reply whose text contains s.
func isRedisErrContaining(err error, s string) bool {
	re, ok := rueidis.IsRedisErr(err)
	return ok && strings.Contains(re.Error(), s)
}
