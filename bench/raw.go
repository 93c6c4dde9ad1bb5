package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Case names, as they appear in the table and the JSON.
const (
	caseRedisWrite = "redis write (XADD, pipelined)"
	caseRedisRead  = "redis read (XREADGROUP+XACK)"
	caseKafkaWrite = "kafka write (franz-go)"
	caseJava       = "kafka write (ProducerPerformance)"
	caseKafkaRead  = "kafka read (franz-go)"
	caseR2K        = "xmirror redis-to-kafka"
	caseK2R        = "xmirror kafka-to-redis"
	caseIdleR2K    = "xmirror r2k, nothing new"
	caseIdleK2R    = "xmirror k2r, nothing new"
	caseIdleCreate = "xmirror r2k, nothing new, --create-topic"
)

// measurement is one timed run of one case.
type measurement struct {
	Case       string  `json:"case"`
	Size       int     `json:"size"`
	Records    int64   `json:"records"`
	Seconds    float64 `json:"seconds"`
	RecPerSec  float64 `json:"rec_per_s"`
	MBPerSec   float64 `json:"mb_per_s"`
	PeakRSSKiB int64   `json:"peak_rss_kib,omitempty"`
	// RusageKiB is ru_maxrss, inflated by the harness (see rusageMaxRSS).
	RusageKiB int64 `json:"rusage_maxrss_kib,omitempty"`
	// Reported is xmirror's own rate from its summary (engine time,
	// without start-up); RecPerSec is from the wall time of the process.
	Reported float64 `json:"xmirror_reported_rec_per_s,omitempty"`
	// CPU is the cores each party used during the run (see cpu.go).
	CPU *cpuCores `json:"cpu,omitempty"`
}

func measured(c string, size int, records int64, d time.Duration) measurement {
	s := d.Seconds()
	m := measurement{Case: c, Size: size, Records: records, Seconds: s}
	if s > 0 {
		m.RecPerSec = float64(records) / s
		// MB/s counts payload bytes only (the record size), 10^6 B.
		m.MBPerSec = m.RecPerSec * float64(size) / 1e6
	}
	return m
}

// payload is size printable bytes.
func payload(size int) string {
	b := make([]byte, size)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return string(b)
}

// rawRedisWrite appends n entries of one field "v" of size bytes with
// pipelined XADDs: cfg.batch per round trip, 4 pipelines in flight (as
// many as xmirror's default --max-in-flight).
func rawRedisWrite(ctx context.Context, e *env, stream string, size, n, batch int) (measurement, error) {
	const workers = 4
	c := e.redis
	v := payload(size)
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	cpu := e.startCPU()
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmds := make(rueidis.Commands, 0, batch)
			for {
				from := int(next.Add(int64(batch))) - batch
				if from >= n || ctx.Err() != nil {
					return
				}
				k := min(batch, n-from)
				cmds = cmds[:0]
				for i := 0; i < k; i++ {
					cmds = append(cmds, c.B().Xadd().Key(stream).Id("*").FieldValue().FieldValue("v", v).Build())
				}
				for _, r := range c.DoMulti(ctx, cmds...) {
					if err := r.Error(); err != nil {
						once.Do(func() { first = fmt.Errorf("XADD to %q: %w", stream, err) })
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	if first == nil {
		first = ctx.Err()
	}
	m := measured(caseRedisWrite, size, int64(n), d)
	m.CPU = cpu.stop(nil)
	return m, first
}

// rawRedisRead drains a stream through a consumer group of its own:
// XREADGROUP COUNT batch, each read pipelined with the XACK of the batch
// before it, so one round trip per batch.
func rawRedisRead(ctx context.Context, e *env, stream string, size, batch int) (measurement, error) {
	c := e.redis
	const group, consumer = "bench-raw", "bench"
	if err := c.Do(ctx, c.B().XgroupCreate().Key(stream).Group(group).Id("0").Build()).Error(); err != nil {
		return measurement{}, fmt.Errorf("XGROUP CREATE on %q: %w", stream, err)
	}
	var (
		total int64
		ack   []string
	)
	cpu := e.startCPU()
	start := time.Now()
	for {
		cmds := make(rueidis.Commands, 0, 2)
		if len(ack) > 0 {
			cmds = append(cmds, c.B().Xack().Key(stream).Group(group).Id(ack...).Build())
		}
		cmds = append(cmds, c.B().Xreadgroup().Group(group, consumer).Count(int64(batch)).Streams().Key(stream).Id(">").Build())
		res := c.DoMulti(ctx, cmds...)
		if len(ack) > 0 {
			if err := res[0].Error(); err != nil {
				return measurement{}, fmt.Errorf("XACK on %q: %w", stream, err)
			}
		}
		ack = ack[:0]
		msg, err := res[len(res)-1].ToMessage()
		if rueidis.IsRedisNil(err) {
			break
		}
		if err != nil {
			return measurement{}, fmt.Errorf("XREADGROUP on %q: %w", stream, err)
		}
		ids, err := entryIDs(msg, stream)
		if err != nil {
			return measurement{}, err
		}
		if len(ids) == 0 {
			break
		}
		total += int64(len(ids))
		ack = ids
	}
	m := measured(caseRedisRead, size, total, time.Since(start))
	m.CPU = cpu.stop(nil)
	return m, nil
}

// entryIDs takes the IDs out of an XREADGROUP reply (RESP2 array or RESP3
// map), touching each entry's fields as a reader would.
func entryIDs(msg rueidis.RedisMessage, stream string) ([]string, error) {
	var entries rueidis.RedisMessage
	if msg.IsMap() {
		m, err := msg.AsMap()
		if err != nil {
			return nil, err
		}
		entries = m[stream]
	} else {
		arr, err := msg.ToArray()
		if err != nil || len(arr) == 0 {
			return nil, err
		}
		kv, err := arr[0].ToArray()
		if err != nil || len(kv) != 2 {
			return nil, fmt.Errorf("unexpected XREADGROUP reply from %q", stream)
		}
		entries = kv[1]
	}
	list, err := entries.ToArray()
	if err != nil {
		return nil, fmt.Errorf("unexpected XREADGROUP reply from %q: %w", stream, err)
	}
	ids := make([]string, 0, len(list))
	for _, raw := range list {
		parts, err := raw.ToArray()
		if err != nil || len(parts) != 2 {
			return nil, fmt.Errorf("unexpected entry in XREADGROUP reply from %q", stream)
		}
		id, err := parts[0].ToString()
		if err != nil {
			return nil, err
		}
		fields, err := parts[1].ToArray()
		if err != nil || len(fields) != 2 {
			return nil, fmt.Errorf("entry %s of %q: want one field", id, stream)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// recordValue is what xmirror's json format makes of the entry {v: p}.
func recordValue(size int) []byte {
	return []byte(`{"v":"` + payload(size) + `"}`)
}

// producerOpts are xmirror's producer settings for a one-shot run
// (r2k.ProducerOpts with r2k.Defaults()), restated
// here so the raw producer shares no code with xmirror: acks=all and
// idempotent, no linger, 1 MiB batches, no compression, at most
// batch*(max-in-flight+1) records buffered.
func producerOpts(e *env, batch int) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(e.brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.ProducerBatchMaxBytes(1 << 20),
		kgo.MaxBufferedRecords(batch * (4 + 1)),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
	}
}

// rawKafkaWrite produces n records shaped as xmirror's (json value and
// the two lineage headers) with a plain franz-go producer.
func rawKafkaWrite(ctx context.Context, e *env, topic string, size, n int) (measurement, error) {
	cl, err := kgo.NewClient(append(producerOpts(e, e.cfg.batch), kgo.DefaultProduceTopic(topic))...)
	if err != nil {
		return measurement{}, err
	}
	defer cl.Close()
	value := recordValue(size)
	stream := []byte("bench-stream")
	var (
		failed atomic.Int64
		once   sync.Once
		first  error
	)
	cb := func(_ *kgo.Record, err error) {
		if err != nil {
			failed.Add(1)
			once.Do(func() { first = err })
		}
	}
	ms := time.Now().UnixMilli()
	cpu := e.startCPU()
	start := time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		id := strconv.AppendInt(append(strconv.AppendInt(make([]byte, 0, 24), ms, 10), '-'), int64(i), 10)
		cl.Produce(ctx, &kgo.Record{
			Value:   value,
			Headers: []kgo.RecordHeader{{Key: "xmirror.stream", Value: stream}, {Key: "xmirror.id", Value: id}},
		}, cb)
	}
	if err := cl.Flush(ctx); err != nil {
		return measurement{}, err
	}
	d := time.Since(start)
	if first != nil {
		return measurement{}, fmt.Errorf("produce to %q: %d records failed: %w", topic, failed.Load(), first)
	}
	m := measured(caseKafkaWrite, size, int64(n), d)
	m.CPU = cpu.stop(nil)
	return m, ctx.Err()
}

// rawKafkaRead consumes a topic from its start with a plain franz-go
// consumer (no group, default fetch sizes, as xmirror k2r) until n
// records were seen.
func rawKafkaRead(ctx context.Context, e *env, topic string, size, n int) (measurement, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(e.brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		return measurement{}, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	var total, bytes int64
	cpu := e.startCPU()
	start := time.Now()
	for total < int64(n) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return measured(caseKafkaRead, size, total, time.Since(start)), fmt.Errorf("read topic %q: %d of %d records: %w", topic, total, n, errShort)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("fetch %s/%d: %w", t, p, err) })
		if ferr != nil {
			return measurement{}, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			total++
			bytes += int64(len(r.Value))
		})
	}
	m := measured(caseKafkaRead, size, total, time.Since(start))
	m.CPU = cpu.stop(nil)
	return m, nil
}

// javaAvailable says whether Kafka's own producer perf tool can run.
func javaAvailable(cfg *config) bool {
	if _, err := exec.LookPath("java"); err != nil {
		return false
	}
	jars, _ := filepath.Glob(filepath.Join(cfg.kafkaLib, "kafka-tools-*.jar"))
	return len(jars) > 0
}

var perfLine = regexp.MustCompile(`^(\d+) records sent, ([\d.]+) records/sec`)

// javaProducerPerf runs Kafka's ProducerPerformance for reference: records
// of the size of xmirror's json value, acks=all, linger.ms=0, the Java
// client's other defaults (16 KiB batches).
func javaProducerPerf(ctx context.Context, cfg *config, e *env, topic string, size, n int) (measurement, error) {
	recSize := len(recordValue(size))
	args := []string{
		"-Xmx512m", "-Djava.awt.headless=true",
		"-Dlog4j2.configurationFile=" + cfg.log4j,
		"-cp", filepath.Join(cfg.kafkaLib, "*"),
		"org.apache.kafka.tools.ProducerPerformance",
		"--topic", topic,
		"--num-records", strconv.Itoa(n),
		"--record-size", strconv.Itoa(recSize),
		"--throughput", "-1",
		"--producer-props", "bootstrap.servers=" + cfg.brokers, "acks=all", "linger.ms=0",
	}
	cmd := exec.CommandContext(ctx, "java", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	// The client is the JVM, start-up included, over the process's life
	// (the rate is the tool's own, from its send time).
	cpu := e.startCPU()
	if err := cmd.Run(); err != nil {
		return measurement{}, fmt.Errorf("ProducerPerformance: %w: %s", err, tail(errb.String()))
	}
	cores := cpu.stop(cmd.ProcessState)
	var last []string
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if m := perfLine.FindStringSubmatch(sc.Text()); m != nil {
			last = m
		}
	}
	if last == nil {
		return measurement{}, fmt.Errorf("ProducerPerformance printed no summary: %s", tail(out.String()+errb.String()))
	}
	sent, _ := strconv.ParseInt(last[1], 10, 64)
	rate, _ := strconv.ParseFloat(last[2], 64)
	m := measurement{Case: caseJava, Size: size, Records: sent, RecPerSec: rate, MBPerSec: rate * float64(size) / 1e6, CPU: cores}
	if rate > 0 {
		m.Seconds = float64(sent) / rate
	}
	if sent != int64(n) {
		return m, fmt.Errorf("ProducerPerformance sent %d of %d records", sent, n)
	}
	return m, nil
}

// tail is the end of a tool's output, for an error message.
func tail(s string) string {
	s = string(bytes.TrimSpace([]byte(s)))
	if len(s) > 600 {
		s = "..." + s[len(s)-600:]
	}
	if s == "" {
		return "(no output)"
	}
	return s
}
