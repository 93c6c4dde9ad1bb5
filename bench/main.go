// Command bench measures xmirror against the local Redis and Kafka: what
// the servers can do through plain clients (the limits), what xmirror does
// on the same backlog (a subprocess of the built binary), follow-mode
// latency, the cost of a one-shot run with nothing to do and the memory of
// a large one-shot run. It also checks that every run mirrored exactly the
// backlog, and exits 1 when one did not, so `make bench-smoke` is a test.
//
//	go run ./bench                 # the full set (make bench)
//	go run ./bench -smoke          # small and quick, correctness only (make bench-smoke)
//	BENCH_BIG=1 go run ./bench     # also the 5,000,000-entry memory run
//
// Servers come from REDIS_URL and KAFKA_BROKERS (scripts/services.sh env),
// defaulting to the local ones.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Defaults of the full run; each has a flag.
const (
	// defaultBacklog is the entries per run below 1 KiB: large enough that
	// start-up is about 1% of an xmirror run.
	defaultBacklog = 1_000_000
	// defaultBacklogLarge is the entries per run from 1 KiB up: the same
	// order of bytes (about 200 MB) in a fifth of the time.
	defaultBacklogLarge = 200_000
	// defaultBatch is xmirror's --batch-size default (cmd/run.go), so the
	// raw reads use the same COUNT.
	defaultBatch = 2000
	// defaultBigBacklog is the backlog of the peak-memory run.
	defaultBigBacklog = 5_000_000
	// Latency: a steady rate well below the limits, long enough for a
	// stable p99.9 (300,000 samples).
	defaultLatencyRate     = 10_000
	defaultLatencyDuration = 30 * time.Second
)

// config is the whole run, from flags and environment.
type config struct {
	redisURL string
	brokers  string
	bin      string
	kafkaLib string
	log4j    string

	sizes        []int
	backlog      int
	backlogLarge int
	runs         int
	warmup       bool
	cases        map[string]bool
	batch        int
	latRate      int
	latDuration  time.Duration
	bigBacklog   int
	jsonPath     string
	profileDir   string
	smoke        bool
	k2rAvailable bool
	scaleTotal   int
	burst        int
	python       string // the hand-rolled script's interpreter
	script       string
}

// allCases are the names -cases accepts.
var allCases = []string{"r2k", "k2r", "java", "script", "scale", "latency", "idle", "create", "big"}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var (
		cfg   config
		sizes string
		cases string
		big   bool
	)
	fs.StringVar(&cfg.redisURL, "redis", envOr("REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis URL (env REDIS_URL)")
	fs.StringVar(&cfg.brokers, "brokers", envOr("KAFKA_BROKERS", "127.0.0.1:9092"), "Kafka brokers (env KAFKA_BROKERS)")
	fs.StringVar(&cfg.bin, "bin", "bin/xmirror", "the xmirror binary to measure (make build)")
	fs.StringVar(&cfg.kafkaLib, "kafka-lib", envOr("XMIRROR_KAFKA_LIB", ".local/kafka-lib"), "Kafka jar cache, for ProducerPerformance")
	fs.StringVar(&cfg.log4j, "kafka-log4j", "scripts/kafka/log4j2-tools.xml", "log4j2 configuration for Kafka's tools")
	fs.StringVar(&sizes, "sizes", "100,1024", "record payload sizes in bytes, comma-separated")
	fs.IntVar(&cfg.backlog, "backlog", defaultBacklog, "entries per run for sizes below 1024")
	fs.IntVar(&cfg.backlogLarge, "backlog-1k", defaultBacklogLarge, "entries per run for sizes from 1024 up")
	fs.IntVar(&cfg.runs, "runs", 3, "measured runs per figure (the median is reported)")
	fs.BoolVar(&cfg.warmup, "warmup", true, "run each figure once, unreported, before the measured runs")
	fs.IntVar(&cfg.burst, "burst", 100_000, "latency: entries sent at once into each following mirror, after the steady runs (0: none)")
	fs.IntVar(&cfg.scaleTotal, "scale-total", defaultScaleTotal, "entries of each run of the scale case (1, 4 and 16 streams or partitions)")
	fs.StringVar(&cfg.python, "python", envOr("XMIRROR_BENCH_PYTHON", ".local/bench-venv/bin/python"), "the Python of the hand-rolled script, with redis-py and confluent-kafka (scripts/bench-venv.sh)")
	fs.StringVar(&cfg.script, "script", "bench/handrolled.py", "the hand-rolled script the script case runs")
	fs.StringVar(&cases, "cases", "r2k,k2r,java,script,scale,latency,idle,create", "what to run: "+strings.Join(allCases, ","))
	fs.IntVar(&cfg.batch, "batch-size", defaultBatch, "COUNT of the raw reads and XADDs per pipeline (xmirror's --batch-size default)")
	fs.IntVar(&cfg.latRate, "latency-rate", defaultLatencyRate, "entries per second in the latency runs")
	fs.DurationVar(&cfg.latDuration, "latency-duration", defaultLatencyDuration, "length of each latency run")
	fs.BoolVar(&big, "big", os.Getenv("BENCH_BIG") == "1", "also the peak-memory run on a -big-backlog backlog (env BENCH_BIG=1)")
	fs.IntVar(&cfg.bigBacklog, "big-backlog", defaultBigBacklog, "entries of the peak-memory run (100 B each)")
	fs.StringVar(&cfg.jsonPath, "json", "bench/results/latest.json", "where the results are written as JSON")
	fs.StringVar(&cfg.profileDir, "profile", "", "write xmirror's CPU and allocation profiles of each one-shot run into this directory")
	fs.BoolVar(&cfg.smoke, "smoke", false, "small and quick: 20,000 entries, 1 run, no warm-up, 3s of latency at 1,000/s, no Java; flags given override")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if cfg.smoke {
		preset := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		preset("backlog", func() { cfg.backlog = 20_000 })
		preset("backlog-1k", func() { cfg.backlogLarge = 20_000 })
		preset("runs", func() { cfg.runs = 1 })
		preset("warmup", func() { cfg.warmup = false })
		preset("cases", func() { cases = "r2k,k2r,latency,idle" })
		preset("latency-rate", func() { cfg.latRate = 1000 })
		preset("latency-duration", func() { cfg.latDuration = 3 * time.Second })
		preset("burst", func() { cfg.burst = 10_000 })
		preset("json", func() { cfg.jsonPath = "bench/results/smoke.json" })
	}

	var problems []string
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 1<<20 {
			problems = append(problems, fmt.Sprintf("-sizes: %q is not a size from 1 to 1048576", s))
			continue
		}
		cfg.sizes = append(cfg.sizes, n)
	}
	cfg.cases = map[string]bool{}
	for _, c := range strings.Split(cases, ",") {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		if !contains(allCases, c) {
			problems = append(problems, fmt.Sprintf("-cases: unknown case %q (known: %s)", c, strings.Join(allCases, ",")))
		}
		cfg.cases[c] = true
	}
	if big {
		cfg.cases["big"] = true
	}
	if cfg.backlog < 1 || cfg.backlogLarge < 1 || cfg.bigBacklog < 1 || cfg.scaleTotal < 16 {
		problems = append(problems, "-backlog, -backlog-1k and -big-backlog must be positive, -scale-total at least 16")
	}
	if cfg.runs < 1 {
		problems = append(problems, fmt.Sprintf("-runs must be at least 1, got %d", cfg.runs))
	}
	if cfg.batch < 1 || cfg.batch > 100000 {
		problems = append(problems, fmt.Sprintf("-batch-size must be from 1 to 100000, got %d", cfg.batch))
	}
	if cfg.burst < 0 {
		problems = append(problems, "-burst must not be negative")
	}
	if cfg.latRate < 1 || cfg.latDuration <= 0 {
		problems = append(problems, "-latency-rate and -latency-duration must be positive")
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	return &cfg, nil
}

// backlogFor is the number of entries a run at this size mirrors.
func (c *config) backlogFor(size int) int {
	if size >= 1024 {
		return c.backlogLarge
	}
	return c.backlog
}

func run(ctx context.Context, cfg *config) error {
	if _, err := os.Stat(cfg.bin); err != nil {
		return fmt.Errorf("xmirror binary %s: %w; build it with make build", cfg.bin, err)
	}
	env, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer env.close()
	cfg.k2rAvailable = k2rAvailable(ctx, cfg.bin)

	res := &results{
		Started: time.Now().UTC(),
		Config:  describeConfig(cfg),
	}
	res.Notes = append(res.Notes, env.cpu.notes()...)
	if !cfg.k2rAvailable {
		res.Notes = append(res.Notes, "kafka-to-redis: not available ("+cfg.bin+" kafka-to-redis --help failed)")
	}
	if cfg.cases["java"] && !javaAvailable(cfg) {
		res.Notes = append(res.Notes, "ProducerPerformance: not available (no java on PATH or no Kafka jars in "+cfg.kafkaLib+")")
		delete(cfg.cases, "java")
	}

	if cfg.cases["script"] && !scriptAvailable(cfg) {
		res.Notes = append(res.Notes, "hand-rolled script: not available (no "+cfg.python+" with redis and confluent_kafka; run scripts/bench-venv.sh)")
		delete(cfg.cases, "script")
	}

	runErr := runAll(ctx, cfg, env, res)
	res.Finished = time.Now().UTC()

	// Whatever happened, leave nothing behind and report what was measured.
	env.cleanupAll()
	res.print(os.Stdout, cfg)
	if err := res.write(cfg.jsonPath); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
	} else {
		fmt.Printf("\nJSON: %s\n", cfg.jsonPath)
	}
	if runErr != nil {
		return runErr
	}
	if len(res.Failures) > 0 {
		return fmt.Errorf("%d correctness check(s) failed: %s", len(res.Failures), strings.Join(res.Failures, "; "))
	}
	return nil
}

func runAll(ctx context.Context, cfg *config, env *env, res *results) error {
	if cfg.cases["r2k"] || cfg.cases["k2r"] || cfg.cases["java"] || cfg.cases["script"] || cfg.cases["idle"] || cfg.cases["create"] {
		for _, size := range cfg.sizes {
			if err := throughput(ctx, cfg, env, res, size); err != nil {
				return err
			}
		}
	}
	if cfg.cases["scale"] {
		if err := scaleRounds(ctx, cfg, env, res); err != nil {
			return err
		}
	}
	if cfg.cases["latency"] {
		if err := latencyRounds(ctx, cfg, env, res); err != nil {
			return err
		}
	}
	if cfg.cases["big"] {
		b, err := bigRun(ctx, cfg, env)
		if err != nil {
			return err
		}
		res.Big = b
		if b.Entries != int64(cfg.bigBacklog) {
			res.fail(fmt.Sprintf("big run: xmirror mirrored %d of %d entries", b.Entries, cfg.bigBacklog))
		}
	}
	return nil
}

// throughput runs every throughput figure at one size: a warm-up, then
// cfg.runs measured runs, each on a fresh backlog.
func throughput(ctx context.Context, cfg *config, env *env, res *results, size int) error {
	n := cfg.backlogFor(size)
	total := cfg.runs
	if cfg.warmup {
		total++
	}
	for i := 0; i < total; i++ {
		warm := cfg.warmup && i == 0
		label := fmt.Sprintf("%s, run %d/%d", sizeLabel(size), i+1-btoi(cfg.warmup), cfg.runs)
		if warm {
			label = sizeLabel(size) + ", warm-up"
		}
		progress("%s: %d entries", label, n)
		ms, err := throughputRun(ctx, cfg, env, res, size, n)
		if err != nil {
			return fmt.Errorf("%s: %w", label, err)
		}
		if !warm {
			for _, m := range ms {
				res.addRun(m)
			}
		}
	}
	return nil
}

// throughputRun is one run of each figure at one size. The raw writes
// double as the preloads: the stream they fill is what the raw Redis read
// and xmirror r2k drain, the topic what the raw Kafka read and xmirror k2r
// drain.
func throughputRun(ctx context.Context, cfg *config, env *env, res *results, size, n int) ([]measurement, error) {
	var out []measurement
	add := func(m measurement) {
		progress("  %-34s %9.0f rec/s %7.1f MB/s%s%s", m.Case, m.RecPerSec, m.MBPerSec, rssNote(m.PeakRSSKiB), cpuNote(m.CPU))
		out = append(out, m)
	}
	check := func(what string, got, want int64) {
		if got != want {
			res.fail(fmt.Sprintf("%s at %s: %d entries, want %d", what, sizeLabel(size), got, want))
		}
	}

	// Redis -> Kafka.
	stream := env.newStream("src")
	m, err := rawRedisWrite(ctx, env, stream, size, n, cfg.batch)
	if err != nil {
		return nil, err
	}
	add(m)
	m, err = rawRedisRead(ctx, env, stream, size, cfg.batch)
	if err != nil {
		return nil, err
	}
	check(caseRedisRead, m.Records, int64(n))
	add(m)
	if cfg.cases["r2k"] || cfg.cases["idle"] || cfg.cases["create"] {
		// The topic exists, as for the raw producer: --create-topic has a
		// fixed cost of its own, measured below.
		topic := env.newTopic("r2k")
		if err := env.createTopic(ctx, topic); err != nil {
			return nil, err
		}
		name := env.newName("r2k")
		args := []string{"redis-to-kafka", "--stream", stream, "--topic", topic, "--name", name}
		m, err := oneShot(ctx, cfg, env, caseR2K, args, size, "r2k")
		if err != nil {
			return nil, err
		}
		end, err := env.topicRecords(ctx, topic)
		if err != nil {
			return nil, err
		}
		check("xmirror r2k summary", m.Records, int64(n))
		check("xmirror r2k topic "+topic, end, int64(n))
		add(m)
		if cfg.cases["idle"] {
			idle, err := idleRun(ctx, cfg, env, caseIdleR2K, args, size)
			if err != nil {
				return nil, err
			}
			check("idle xmirror r2k", idle.Records, 0)
			add(idle)
		}
		if cfg.cases["create"] {
			// Another mirror of the same group on the drained stream,
			// into a topic it must create.
			ct, cn := env.newTopic("r2k-create"), env.newName("r2k-create")
			idle, err := idleRun(ctx, cfg, env, caseIdleCreate, []string{"redis-to-kafka", "--stream", stream, "--topic", ct, "--create-topic", "--name", cn}, size)
			if err != nil {
				return nil, err
			}
			check("idle xmirror r2k --create-topic", idle.Records, 0)
			add(idle)
			env.dropTopic(ctx, ct)
			env.dropKeys(ctx, cn)
		}
		env.dropTopic(ctx, topic)
		env.dropKeys(ctx, name)
	}
	if cfg.cases["script"] {
		// Through a group of its own, the same backlog again.
		st := env.newTopic("script")
		if err := env.createTopic(ctx, st); err != nil {
			return nil, err
		}
		m, err := scriptRun(ctx, cfg, env, "r2k", stream, st, size, n)
		if err != nil {
			return nil, err
		}
		end, err := env.topicRecords(ctx, st)
		if err != nil {
			return nil, err
		}
		check("script r2k", m.Records, int64(n))
		check("script r2k topic "+st, end, int64(n))
		add(m)
		env.dropTopic(ctx, st)
	}
	env.dropStream(ctx, stream)

	// Kafka -> Redis.
	topic := env.newTopic("src")
	if err := env.createTopic(ctx, topic); err != nil {
		return nil, err
	}
	m, err = rawKafkaWrite(ctx, env, topic, size, n)
	if err != nil {
		return nil, err
	}
	add(m)
	if cfg.cases["java"] {
		jt := env.newTopic("java")
		if err := env.createTopic(ctx, jt); err != nil {
			return nil, err
		}
		m, err := javaProducerPerf(ctx, cfg, env, jt, size, n)
		if err != nil {
			return nil, err
		}
		add(m)
		env.dropTopic(ctx, jt)
	}
	m, err = rawKafkaRead(ctx, env, topic, size, n)
	if err != nil {
		return nil, err
	}
	check(caseKafkaRead, m.Records, int64(n))
	add(m)
	if cfg.k2rAvailable && (cfg.cases["k2r"] || cfg.cases["idle"]) {
		dst := env.newStream("k2r")
		name := env.newName("k2r")
		args := []string{"kafka-to-redis", "--topic", topic, "--stream", dst, "--name", name}
		m, err := oneShot(ctx, cfg, env, caseK2R, args, size, "k2r")
		if err != nil {
			return nil, err
		}
		xlen, err := env.streamLen(ctx, dst)
		if err != nil {
			return nil, err
		}
		check("xmirror k2r summary", m.Records, int64(n))
		check("xmirror k2r stream "+dst, xlen, int64(n))
		add(m)
		if cfg.cases["idle"] {
			idle, err := idleRun(ctx, cfg, env, caseIdleK2R, args, size)
			if err != nil {
				return nil, err
			}
			check("idle xmirror k2r", idle.Records, 0)
			add(idle)
		}
		env.dropStream(ctx, dst)
		env.dropKeys(ctx, name)
	}
	if cfg.cases["script"] {
		dst := env.newStream("script")
		m, err := scriptRun(ctx, cfg, env, "k2r", dst, topic, size, n)
		if err != nil {
			return nil, err
		}
		xlen, err := env.streamLen(ctx, dst)
		if err != nil {
			return nil, err
		}
		check("script k2r", m.Records, int64(n))
		check("script k2r stream "+dst, xlen, int64(n))
		add(m)
		env.dropStream(ctx, dst)
	}
	env.dropTopic(ctx, topic)
	return out, nil
}

// bigRun is the peak-memory run: a one-shot r2k of cfg.bigBacklog entries
// of 100 B.
func bigRun(ctx context.Context, cfg *config, env *env) (*bigResult, error) {
	const size = 100
	progress("big: preloading %d entries of %d B", cfg.bigBacklog, size)
	stream := env.newStream("big")
	if _, err := rawRedisWrite(ctx, env, stream, size, cfg.bigBacklog, cfg.batch); err != nil {
		return nil, err
	}
	topic := env.newTopic("big")
	if err := env.createTopic(ctx, topic); err != nil {
		return nil, err
	}
	name := env.newName("big")
	args := []string{"redis-to-kafka", "--stream", stream, "--topic", topic, "--name", name}
	m, err := oneShot(ctx, cfg, env, caseR2K, args, size, "big-r2k")
	if err != nil {
		return nil, err
	}
	end, err := env.topicRecords(ctx, topic)
	if err != nil {
		return nil, err
	}
	progress("big: %d entries in %.1fs, %.0f rec/s, peak RSS %.1f MiB", m.Records, m.Seconds, m.RecPerSec, float64(m.PeakRSSKiB)/1024)
	env.dropTopic(ctx, topic)
	env.dropStream(ctx, stream)
	env.dropKeys(ctx, name)
	return &bigResult{Entries: end, Size: size, Seconds: m.Seconds, RecPerSec: m.RecPerSec, PeakRSSKiB: m.PeakRSSKiB, RusageKiB: m.RusageKiB, TargetRSSKiB: 64 * 1024}, nil
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func rssNote(kib int64) string {
	if kib == 0 {
		return ""
	}
	return fmt.Sprintf(", peak RSS %.1f MiB", float64(kib)/1024)
}

func cpuNote(c *cpuCores) string {
	if c == nil {
		return ""
	}
	return ", cpu cores r/k/c/m " + c.String()
}

func sizeLabel(size int) string {
	if size >= 1024 && size%1024 == 0 {
		return fmt.Sprintf("%d KiB", size/1024)
	}
	return fmt.Sprintf("%d B", size)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// profilePath names a profile file of one xmirror run, or "" when
// profiling is off.
func profilePath(cfg *config, tag, kind string) string {
	if cfg.profileDir == "" {
		return ""
	}
	return filepath.Join(cfg.profileDir, tag+"."+kind+".pprof")
}
