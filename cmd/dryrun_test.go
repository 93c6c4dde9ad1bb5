package cmd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/xmirror/xmirror/checkpoint"
	"github.com/xmirror/xmirror/internal/testenv"
)

// plan is what a dry run prints with -o json.
type plan struct {
	Mirror       string `json:"mirror"`
	Group        string `json:"group"`
	Entries      int64  `json:"entries"`
	EntriesKnown bool   `json:"entries_known"`
	Items        []struct {
		Stream    string `json:"stream"`
		Topic     string `json:"topic"`
		Partition *int32 `json:"partition"`
		Pattern   string `json:"pattern"`
		From      string `json:"from"`
		Entries   int64  `json:"entries"`
		Note      string `json:"note"`
	} `json:"items"`
	Problems []string `json:"problems"`
}

func parsePlan(t *testing.T, r result) plan {
	t.Helper()
	var p plan
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
		t.Fatalf("dry run printed %q (%v); stderr: %s", r.stdout, err, r.stderr)
	}
	return p
}

// readOnlyRedisURL is the test Redis as a user that may run no command
// that writes (ACL -@write): a dry run that tried to write would fail.
func readOnlyRedisURL(t *testing.T, rc rueidis.Client) string {
	t.Helper()
	user := testenv.Name(t, "ro")
	testenv.RedisUser(t, rc, user, "-@write")
	u := testenv.RedisURL()
	return strings.Replace(u, "redis://", "redis://"+user+":pw@", 1)
}

// noKeys fails if any of keys exists.
func noKeys(t *testing.T, rc rueidis.Client, keys ...string) {
	t.Helper()
	n, err := rc.Do(context.Background(), rc.B().Exists().Key(keys...).Build()).AsInt64()
	if err != nil || n != 0 {
		t.Errorf("after a dry run %d of %v exist (%v): a dry run writes nothing", n, keys, err)
	}
}

// TestDryRunRedisToKafkaWritesNothingAndCountsFromTheCheckpoint: a dry run,
// as a Redis user that may not write, resolves the pattern and prints per
// stream its topic, where a run would start and how many entries it would
// mirror; no group, topic, checkpoint, lease or record of the mirror is
// made. After a real run, a dry run counts only what was added since.
func TestDryRunRedisToKafkaWritesNothingAndCountsFromTheCheckpoint(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	prefix := testenv.Name(t, "dry")
	a, b, missing := prefix+".a", prefix+".b", prefix+".missing"
	name := testenv.Name(t, "m")
	topicA, topicB := "t-"+a, "t-"+b
	deleteTopicsAfter(t, kc, topicA, topicB)
	keys := []string{checkpoint.R2KKey(name), checkpoint.DescriptorKey(checkpoint.KindRedisToKafka, name), checkpoint.LeaseKey(checkpoint.KindRedisToKafka, name)}
	delKeys(t, rc, append([]string{a, b}, keys...)...)
	fields := func(i int) []string { return []string{"n", strconv.Itoa(i)} }
	addEntries(t, rc, a, 0, 100, fields)
	addEntries(t, rc, b, 0, 50, fields)

	args := []string{"r2k", "--stream", a, "--stream-pattern", prefix + ".*", "--topic", "t-{stream}", "--create-topic", "--name", name}
	dry := append(slices.Clone(args), "--redis", readOnlyRedisURL(t, rc), "--dry-run", "-o", "json")
	p := parsePlan(t, mustMirror(t, dry...))
	if p.Entries != 150 || !p.EntriesKnown || len(p.Items) != 2 || len(p.Problems) != 0 {
		t.Fatalf("plan %+v: want 150 entries over 2 streams, no problem", p)
	}
	if it := p.Items[1]; it.Stream != b || it.Pattern != prefix+".*" || it.Topic != topicB || it.Entries != 50 || it.From != "first entry" ||
		!strings.Contains(it.Note, "a run creates topic "+topicB) || !strings.Contains(it.Note, "a run creates consumer group xmirror:"+name) {
		t.Errorf("stream b's row %+v: want its pattern, topic, 50 entries from the first, and what a run creates", it)
	}
	noKeys(t, rc, keys...)
	for _, s := range []string{a, b} {
		if groups, err := rc.Do(context.Background(), rc.B().XinfoGroups().Key(s).Build()).ToArray(); err != nil || len(groups) != 0 {
			t.Errorf("stream %s has %d consumer groups after a dry run (%v), want none", s, len(groups), err)
		}
	}
	details, err := kadm.NewClient(kc).ListTopics(context.Background(), topicA, topicB)
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range []string{topicA, topicB} {
		if d, ok := details[tp]; ok && d.Err == nil {
			t.Errorf("topic %s exists after a dry run", tp)
		}
	}

	// A missing stream named on the command line: the run would fail, so
	// the dry run says why and exits 1.
	r := xmirror(t, append(slices.Clone(dry), "--stream", missing)...)
	if r.code != 1 || !strings.Contains(r.stderr, fmt.Sprintf("stream %q does not exist in Redis", missing)) || !strings.Contains(r.stderr, "--allow-missing") {
		t.Errorf("dry run with a missing stream: exit %d, stderr %q; want 1 naming the stream and --allow-missing", r.code, r.stderr)
	}

	mustMirror(t, args...)
	addEntries(t, rc, b, 50, 7, fields)
	p = parsePlan(t, mustMirror(t, dry...))
	if p.Entries != 7 || p.Group != "xmirror:"+name {
		t.Fatalf("plan after a run %+v: want the 7 entries added since, through group xmirror:%s", p, name)
	}
	if it := p.Items[1]; it.Entries != 7 || !strings.HasPrefix(it.From, "after ") || !strings.HasSuffix(it.From, "(checkpoint)") {
		t.Errorf("stream b's row %+v: want 7 entries after its checkpoint", it)
	}
	text := mustMirror(t, append(slices.Clone(args), "--redis", readOnlyRedisURL(t, rc), "--dry-run")...)
	for _, want := range []string{"dry run: nothing was written", "STREAM", a, topicB, "would mirror 7 entries"} {
		if !strings.Contains(text.stdout, want) {
			t.Errorf("dry run's table lacks %q:\n%s", want, text.stdout)
		}
	}
}

// TestDryRunKafkaToRedisWritesNothingAndCountsFromTheCheckpoint: per
// partition, the stream it feeds, its start and its records; no stream,
// checkpoint or lease is made, as a Redis user that may not write.
func TestDryRunKafkaToRedisWritesNothingAndCountsFromTheCheckpoint(t *testing.T) {
	rc := testenv.Redis(t)
	topic := testenv.Topic(t, testenv.Kafka(t), 3)
	name := testenv.Name(t, "m")
	stream := testenv.Name(t, "dest")
	var keys []string
	for p := range 3 {
		s := stream + "." + strconv.Itoa(p)
		keys = append(keys, s, checkpoint.K2RKey(name, s))
	}
	keys = append(keys, checkpoint.DescriptorKey(checkpoint.KindKafkaToRedis, name), checkpoint.LeaseKey(checkpoint.KindKafkaToRedis, name))
	delKeys(t, rc, keys...)
	produce(t, topic, numbered(0, 300, 3))

	args := []string{"k2r", "--topic", topic, "--stream", stream + ".{partition}", "--name", name}
	dry := append(slices.Clone(args), "--redis", readOnlyRedisURL(t, rc), "--dry-run", "-o", "json")
	p := parsePlan(t, mustMirror(t, dry...))
	if p.Entries != 300 || len(p.Items) != 3 || len(p.Problems) != 0 {
		t.Fatalf("plan %+v: want 300 records over 3 partitions, no problem", p)
	}
	for i, it := range p.Items {
		if it.Partition == nil || int(*it.Partition) != i || it.Stream != stream+"."+strconv.Itoa(i) || it.Entries != 100 || it.From != "offset 0 (the log start)" {
			t.Errorf("partition row %d %+v: want partition %d into %s.%d, 100 records from the log start", i, it, i, stream, i)
		}
	}
	noKeys(t, rc, keys...)

	mustMirror(t, args...)
	produce(t, topic, numbered(300, 30, 3))
	p = parsePlan(t, mustMirror(t, dry...))
	if p.Entries != 30 {
		t.Fatalf("plan after a run %+v: want the 30 records added since", p)
	}
	if it := p.Items[2]; it.From != "offset 100 (checkpoint)" || it.Entries != 10 {
		t.Errorf("partition 2's row %+v: want 10 records from offset 100 (checkpoint)", it)
	}
}

// TestDryRunOfAMirrorsFile: run --config --dry-run plans every mirror of
// the file, in its order, writing nothing, and exits 1 naming a mirror
// whose run would fail.
func TestDryRunOfAMirrorsFile(t *testing.T) {
	rc := testenv.Redis(t)
	kc := testenv.Kafka(t)
	topic := testenv.Topic(t, kc, 1)
	stream, missing := testenv.Name(t, "s"), testenv.Name(t, "gone")
	r2kName, k2rName := testenv.Name(t, "to-kafka"), testenv.Name(t, "to-redis")
	delKeys(t, rc, stream, stream+".back", checkpoint.R2KKey(r2kName), checkpoint.K2RKey(k2rName, stream+".back"))
	addEntries(t, rc, stream, 0, 20, func(i int) []string { return []string{"n", strconv.Itoa(i)} })
	produce(t, topic, numbered(0, 12, 1))
	dir := t.TempDir()
	var file string
	readOnly := readOnlyRedisURL(t, rc)
	write := func(extra string) {
		body := fmt.Sprintf(`redis: %s
mirrors:
  - name: %s
    direction: r2k
    stream: [%s%s]
    topic: %s
  - name: %s
    direction: k2r
    topic: %s
    stream: %s.back
`, readOnly, r2kName, stream, extra, topic, k2rName, topic, stream)
		file = writeFile(t, dir, "mirrors.yaml", body)
	}
	write("")
	var plans []plan
	r := mustMirror(t, "run", "--config", file, "--once", "--dry-run", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &plans); err != nil || len(plans) != 2 {
		t.Fatalf("run --dry-run printed %q (%v): want an array of 2 plans", r.stdout, err)
	}
	if plans[0].Mirror != r2kName || plans[0].Entries != 20 || plans[1].Mirror != k2rName || plans[1].Entries != 12 {
		t.Errorf("plans %+v: want %s with 20 entries, then %s with 12 records", plans, r2kName, k2rName)
	}
	noKeys(t, rc, stream+".back", checkpoint.R2KKey(r2kName), checkpoint.K2RKey(k2rName, stream+".back"))

	write(", " + missing)
	r = xmirror(t, "run", "--config", file, "--once", "--dry-run")
	if r.code != 1 || !strings.Contains(r.stderr, fmt.Sprintf("mirror %q: stream %q does not exist", r2kName, missing)) ||
		!strings.Contains(r.stdout, r2kName) || !strings.Contains(r.stdout, k2rName) {
		t.Errorf("a file with a missing stream: exit %d\nstdout: %s\nstderr: %s\nwant 1, both plans, and the mirror and stream named", r.code, r.stdout, r.stderr)
	}

	r = xmirror(t, "run", "--config", writeFile(t, dir, "refused.yaml", "mirrors:\n  - name: x\n    direction: r2k\n    stream: s\n    dry-run: true\n"), "--check")
	if r.code != 2 || !strings.Contains(r.stderr, `key "dry-run" cannot be set in a mirrors file`) {
		t.Errorf("dry-run as a mirror's key: exit %d, stderr %q; want 2 and the key refused", r.code, r.stderr)
	}
}
