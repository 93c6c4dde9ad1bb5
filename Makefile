# xmirror: build, test and demo against real local Redis and Kafka servers
# (started by scripts/services.sh, or external ones via REDIS_URL and
# KAFKA_BROKERS).

GO       ?= go
BIN      := bin/xmirror
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/xmirror/xmirror/cmd.Version=$(VERSION)
SERVICES := scripts/services.sh
# Every recipe that needs the servers runs with their addresses exported.
WITH_ENV := eval "$$($(SERVICES) env)" &&

.PHONY: all build test test-cluster unit fuzz-smoke fmt-check vet services-up services-up-secure services-up-cluster services-down services-status demo bench bench-venv bench-smoke test-faults clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/xmirror

services-up:
	$(SERVICES) up

# services-up-secure: also the TLS Redis servers and the secured Kafka
# broker (certificates, ACL users, SCRAM credentials and Kafka ACLs made by
# the script; about 10 s more the first time).
services-up-secure:
	$(SERVICES) up --secure

# services-up-cluster: also the clusters: a Redis Cluster (3 masters, a
# replica each), a Sentinel set-up (master xmirror) and a 3-node Kafka
# cluster (1 GiB heap each); about 15 s the first time.
services-up-cluster:
	$(SERVICES) up --cluster

services-down:
	$(SERVICES) down

services-status:
	$(SERVICES) status

fmt-check:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go') 2>/dev/null); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted (run gofmt -w)"; exit 1; fi

# vet: also the files of the build tag cluster, which `make test` does not
# run, so that they keep compiling.
vet:
	$(GO) vet ./...
	$(GO) vet -tags cluster ./...

# test: every check, integration tests included, against the real servers.
test: services-up-secure fmt-check vet build
	$(WITH_ENV) $(GO) test -race -count=1 -timeout 25m ./...
	$(MAKE) fuzz-smoke
	$(MAKE) bench-smoke
	$(MAKE) test-faults

# test-cluster: the tests of the clusters, which `make test` does not run
# (nor start the clusters for): files with the build tag `cluster`, tests
# named TestCluster*. CLUSTER_UP=--cluster-only starts the clusters alone,
# leaving the plain servers to another checkout.
CLUSTER_UP ?= --cluster
test-cluster:
	$(SERVICES) up $(CLUSTER_UP)
	$(WITH_ENV) $(GO) test -tags cluster -count=1 -timeout 10m -run '^TestCluster' ./...

# unit: only the tests that need no server (fast feedback while editing).
unit:
	$(GO) test -short -count=1 ./...

# fuzz-smoke: every fuzz target (func FuzzX in a _test.go file) run for
# FUZZ_EXECS inputs (default 10000) past its seeds, one after the other;
# about a minute on 2 cores. Part of `make test`. A longer run of one:
# go test -run '^$$' -fuzz '^FuzzParseBrokers$$' -fuzztime 5m ./internal/endpoint
fuzz-smoke:
	GO=$(GO) scripts/fuzz-smoke.sh

demo: services-up build
	$(WITH_ENV) scripts/demo.sh

# bench: throughput limits of the servers vs xmirror (1,000,000 entries of
# 100 B, 200,000 of 1 KiB; median of 3 after a warm-up), follow-mode latency
# and the cost of an idle run. Tables on stdout, JSON in
# bench/results/latest.json. BENCH_BIG=1 adds the 5,000,000-entry peak-RSS
# run; BENCH_ARGS passes flags (go run ./bench -h). The hand-rolled Python
# script it compares xmirror with runs in a virtualenv scripts/bench-venv.sh
# makes.
bench: services-up build bench-venv
	$(WITH_ENV) $(GO) run ./bench -bin $(BIN) $(BENCH_ARGS)

# bench-smoke: the same harness on 20,000 entries, once: checks that every
# run mirrored exactly its backlog (not speed); part of `make test`.
bench-venv:
	scripts/bench-venv.sh

bench-smoke: services-up build
	$(WITH_ENV) $(GO) run ./bench -smoke -bin $(BIN) $(BENCH_ARGS)

# test-faults: the fault suite (go run ./faults -h): for both directions,
# kill -9 of the mirror (x10), a Kafka broker restart, a crash of a Redis
# running with AOF (appendfsync always), Redis and the broker SIGSTOPped past
# the client timeouts, SIGTERM under load; 200,000 entries each, verified
# with plain clients. FAULTS_ARGS passes flags (e.g. -scenarios kill9 -v).
test-faults: services-up build
	$(WITH_ENV) $(GO) run ./faults -bin $(BIN) -services $(SERVICES) $(FAULTS_ARGS)

clean:
	rm -rf bin
