// Package setting names a mirror's settings in its texts. A mirror is
// configured by a Config struct, and each front end (the command line, a
// configuration file) knows its fields under names of its own: the flag
// --create-topic, the key create_topic. An error or a validation problem
// that names a setting ("pass {CreateTopic} to create it") does so by the
// field's name in braces in its format: Error writes the field's name, and
// Render the front end's, through a Names func. Only the format is read for
// settings, never the arguments, so a stream or topic called
// "{CreateTopic}" stays what it is.
package setting
