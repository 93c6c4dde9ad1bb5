package r2k

// flags names a few Config fields as the command line does, for the tests
// of texts that name settings.
func flags(field string) (string, bool) {
	name, ok := map[string]string{
		"CreateTopic": "--create-topic",
		"Timestamp":   "--timestamp",
		"OnError":     "--on-error",
		"OnGap":       "--on-gap",
		"Name":        "--name",
		"Partitions":  "--partitions",
	}[field]
	return name, ok
}
