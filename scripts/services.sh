#!/usr/bin/env bash
# Installs and runs the real local servers that xmirror's tests, demo and
# benchmarks talk to: one Redis and one single-node KRaft Kafka broker.
#
#   scripts/services.sh up [--secure] [--cluster]  install what is missing, start or reuse both, wait
#                                until they answer; with --secure also the TLS Redis servers and the
#                                secured Kafka, with --cluster also the clusters (both below)
#   scripts/services.sh up --cluster-only  the clusters alone: the plain servers are neither started
#                                nor looked at (for a checkout whose plain ports another one holds)
#   scripts/services.sh down [--cluster]  stop only the servers `up` started (reused/external ones
#                                are left alone); with --cluster only the clusters
#   scripts/services.sh status [--secure] [--cluster]  does each answer, and did we start it? exit 0
#                                iff both answer (with --secure: and the TLS Redis servers and the
#                                secured Kafka too; with --cluster: and every cluster in full)
#   scripts/services.sh env      print `export REDIS_URL=...` / `export KAFKA_BROKERS=...`
#                                (and REDIS_TLS_URL, REDIS_MTLS_URL, REDIS_TLS_DIR while the TLS Redis runs;
#                                KAFKA_SASL_BROKERS, KAFKA_MTLS_BROKERS, KAFKA_OAUTH_BROKERS,
#                                KAFKA_SECURE_ADMIN_BROKERS, KAFKA_SECURE_DIR while the secured Kafka runs;
#                                REDIS_CLUSTER_URL, REDIS_CLUSTER_NODES, REDIS_SENTINEL_ADDRS,
#                                REDIS_SENTINEL_MASTER, KAFKA_CLUSTER_BROKERS while the clusters run)
#   scripts/services.sh pid redis|kafka              pid of a server we started (exit 1 if none)
#   scripts/services.sh stop|start|restart redis|kafka   (also stop-redis, restart-kafka, ...)
#                                only for servers we own; data is kept (see below)
#   scripts/services.sh kafka-topics ARGS...         Kafka's TopicCommand against the broker in use,
#                                e.g. kafka-topics --create --topic t1 --partitions 1
#
# Environment:
#   REDIS_URL       use this external Redis (redis://[user:pass@]host:port/db); start none
#   KAFKA_BROKERS   use these external brokers (host:port[,host:port...]); start none
#   XMIRROR_STATE_DIR   pidfiles, logs, Kafka data  (default <repo>/.local/services)
#   XMIRROR_KAFKA_LIB   Kafka jar cache filled by mvn (default <repo>/.local/kafka-lib)
#   XMIRROR_UP_TIMEOUT  seconds to wait for the servers to answer (default 120)
#   XMIRROR_REDIS_PORT, XMIRROR_KAFKA_PORT, XMIRROR_KAFKA_CONTROLLER_PORT  (6379, 9092, 9093)
#   XMIRROR_KAFKA_JVM_OPTS  replaces the broker's default heap/GC flags
#   XMIRROR_REDIS_TLS_PORT, XMIRROR_REDIS_MTLS_PORT  the TLS Redis servers' ports (6380, 6381)
#   XMIRROR_KAFKA_SECURE_SASL_PORT, XMIRROR_KAFKA_SECURE_MTLS_PORT, XMIRROR_KAFKA_SECURE_OAUTH_PORT,
#   XMIRROR_KAFKA_SECURE_ADMIN_PORT, XMIRROR_KAFKA_SECURE_CONTROLLER_PORT
#                   the secured Kafka's listeners (9094, 9095, 9096, 9097, 9098)
#   XMIRROR_REDIS_CLUSTER_PORT  the first of the Redis Cluster's 6 ports (7000: 7000-7005,
#                   cluster buses 17000-17005)
#   XMIRROR_REDIS_SENTINEL_PRIMARY_PORT, XMIRROR_REDIS_SENTINEL_REPLICA_PORT  (6390, 6391)
#   XMIRROR_REDIS_SENTINEL_PORT  the first of the 3 sentinels' ports (26379: 26379-26381)
#   XMIRROR_KAFKA_CLUSTER_PORT, XMIRROR_KAFKA_CLUSTER_CONTROLLER_PORT  the first of the Kafka
#                   cluster's 3 broker and 3 controller ports (9101: 9101-9103, 9111: 9111-9113)
#   XMIRROR_KAFKA_CLUSTER_JVM_OPTS  replaces the cluster nodes' default heap/GC/JIT flags
#   A port of a secured or cluster server that something not started from
#   this checkout holds (another checkout's server) makes `up --secure` or
#   `up --cluster` fail at once, naming the port and the variable that
#   moves it.
#
# Secured Redis (up --secure): two more redis-server processes, TLS only, on
# 127.0.0.1: port 6380 verifies a client certificate when one is sent
# (tls-auth-clients optional), port 6381 requires one (mutual TLS). The
# script makes, with openssl, a CA, a server certificate for 127.0.0.1 and
# localhost and a client certificate, in <state>/redis-tls/ (ca.crt,
# server.crt/.key, client.crt/.key). Both servers share the ACL users of
# <state>/redis-tls/users.acl, each with a random password kept in
# <state>/redis-tls/<user>.password (mode 600): xmirror-admin (everything;
# the tests' own clients), xmirror-r2k and xmirror-k2r (exactly what
# redis-to-kafka and kafka-to-redis need, on streams named tls-*; the rules
# are in README.md) and xmirror-r2k-noxack (xmirror-r2k without XACK). The
# default user is off. The plain servers above are never touched by this.
#
# Secured Kafka (up --secure): a second single-node KRaft broker
# ("kafka-secure", same jars, 512 MB heap, state in <state>/kafka-secure/),
# with the StandardAuthorizer and these listeners on 127.0.0.1:
#   9094 SASL_SSL: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512
#   9095 SSL with a required client certificate (mutual TLS); a certificate
#        whose subject is CN=<user> is the principal User:<user>
#   9096 SASL_SSL: OAUTHBEARER only, validated by Kafka's validator of
#        unsecured JWTs ("alg":"none", sub = the user), for tests only
#   9097 PLAINTEXT: the tests' own clients and the admin tools; its
#        principal, ANONYMOUS, is a super user
#   9098 the KRaft controller
# Users: xmirror-admin (super user), xmirror-r2k and xmirror-k2r (exactly
# the ACLs redis-to-kafka and kafka-to-redis need, on topics prefixed sec-:
# KSEC_ACLS below, README.md "Least privilege (Kafka)"). Each has PLAIN
# and SCRAM credentials (SCRAM made through the admin API) for the random
# password in <user>.password, a client certificate <user>.crt/.key and an
# unsecured JWT in <user>.token (all mode 600 but the certificates). The
# dir also holds ca.crt (the CA of the server and client certificates),
# expired.crt/.key (CN=xmirror-r2k, expired), other-ca.crt (another CA: a
# client trusting only it meets an unknown authority) and untrusted.crt/.key
# (CN=xmirror-r2k, signed by the other CA: the broker refuses it).
#
# Clusters (up --cluster), on 127.0.0.1, state in <state>/redis-cluster/,
# <state>/redis-sentinel/ and <state>/kafka-cluster/:
#  - a Redis Cluster of 6 nodes (cluster-enabled, node timeout 5 s): 3
#    masters, 7000-7002 when created, with one replica each, made with
#    `redis-cli --cluster create --cluster-replicas 1`; up waits until, by
#    each node's own word, 3 masters hold the slots and each has a replica
#    (finishing a create cut short), every node says cluster_state:ok and
#    every replica's link is up;
#  - a primary (6390) and its replica (6391) watched by 3 sentinels
#    (26379-26381; quorum 2, down after 5 s) under the master name xmirror;
#    up waits until each sentinel sees the master, a replica and the two
#    other sentinels, and the other server is the master's replica, in sync
#    (after a failover the replica is the master);
#  - 3 Kafka nodes, each a broker (9101-9103) and a KRaft controller
#    (9111-9113) of a static quorum of three, 1 GiB heap each, with
#    default.replication.factor=3, min.insync.replicas=2 and the offsets
#    and transaction state topics at 3 replicas, min ISR 2 (3 partitions
#    each); up waits until each broker lists all three.
# Like the plain Redis, the Redis Cluster and the Sentinel set-up keep no
# data: an `up` that finds none of a set-up's processes running makes it
# anew. An `up` that finds some running starts only the others, which
# rejoin. The Kafka cluster keeps its log dirs, as the plain broker does.
#
# Data: Redis runs without persistence, so `down` + `up` gives an empty Redis.
# `stop redis`/`restart redis` save a snapshot first (SHUTDOWN SAVE) so a fault
# test can bounce Redis without losing its streams. Kafka keeps its log dirs in
# the state dir across down/up/restart; delete the state dir for a clean slate.
#
# Logs: <state>/redis/redis.log, <state>/kafka/server.log (+ kafka.out for the
# JVM's own stdout/stderr), <state>/redis-tls/redis-tls.log and redis-mtls.log,
# <state>/kafka-secure/server.log (+ kafka.out, setup.log),
# <state>/redis-cluster/<port>/redis.log (+ <state>/redis-cluster/create.log),
# <state>/redis-sentinel/<primary|replica|sentinel-N>/redis.log,
# <state>/kafka-cluster/node-<N>/server.log (+ kafka.out).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"

STATE_DIR="${XMIRROR_STATE_DIR:-$REPO_ROOT/.local/services}"
KAFKA_LIB="${XMIRROR_KAFKA_LIB:-$REPO_ROOT/.local/kafka-lib}"
UP_TIMEOUT="${XMIRROR_UP_TIMEOUT:-120}"

KAFKA_POM="$SCRIPT_DIR/kafka/pom.xml"
KAFKA_LOG4J="$SCRIPT_DIR/kafka/log4j2.xml"
TOOLS_LOG4J="$SCRIPT_DIR/kafka/log4j2-tools.xml"
KSEC_SETUP="$SCRIPT_DIR/kafka/SecureSetup.java"

LOCAL_HOST=127.0.0.1
REDIS_PORT="${XMIRROR_REDIS_PORT:-6379}"
KAFKA_PORT="${XMIRROR_KAFKA_PORT:-9092}"
# The controller port is baked into the formatted metadata (--standalone
# writes the voter's endpoint), so changing it needs a fresh state dir.
KAFKA_CONTROLLER_PORT="${XMIRROR_KAFKA_CONTROLLER_PORT:-9093}"

if [[ -n "${REDIS_URL:-}" ]]; then
  REDIS_EXTERNAL=1
  REDIS_TARGET="$REDIS_URL"
else
  REDIS_EXTERNAL=0
  REDIS_TARGET="redis://$LOCAL_HOST:$REDIS_PORT/0"
fi
if [[ -n "${KAFKA_BROKERS:-}" ]]; then
  KAFKA_EXTERNAL=1
  KAFKA_TARGET="$KAFKA_BROKERS"
else
  KAFKA_EXTERNAL=0
  KAFKA_TARGET="$LOCAL_HOST:$KAFKA_PORT"
fi

REDIS_DIR="$STATE_DIR/redis"
REDIS_PIDFILE="$REDIS_DIR/redis.pid"
REDIS_LOG="$REDIS_DIR/redis.log"

REDIS_TLS_PORT="${XMIRROR_REDIS_TLS_PORT:-6380}"
REDIS_MTLS_PORT="${XMIRROR_REDIS_MTLS_PORT:-6381}"
TLS_DIR="$STATE_DIR/redis-tls"
# The ACL users of the TLS servers; README.md ("Least privilege") documents
# the same rules. Streams of the tests are named tls-*.
TLS_STREAMS='~tls-*'
# Both directions: the connection (HELLO, AUTH, CLIENT SETNAME, CLUSTER SLOTS are
# sent by the client on connect), INFO (Redis Cluster refused, versions),
# the lease (xmirror:lease:*, a script), and the checkpoint scripts.
ACL_COMMON='+ping +hello +auth +client|setname +cluster|slots +info +eval +evalsha +get +set +pexpire +del +exists +type +multi +exec'
ACL_R2K="$ACL_COMMON +hgetall +hget +hset +hsetnx +hexists +hincrby +xreadgroup +xread +xack +xadd +xautoclaim +xclaim +xpending +xlen +xgroup|create +xgroup|setid +xinfo|stream +xinfo|groups +xinfo|consumers ~xmirror:lease:* ~xmirror:mirror:* ~xmirror:r2k:* ~xmirror:r2k-gap-hold:* $TLS_STREAMS"
ACL_K2R="$ACL_COMMON +watch +unwatch +hgetall +hget +hmget +hset +hsetnx +hexists +hdel +hkeys +hincrby +xadd +xrange +xlen +xdel +xsetid +xinfo|stream +blpop +lpush ~xmirror:lease:* ~xmirror:mirror:* ~xmirror:k2r:* ~xmirror:k2r-guard:* ~xmirror:k2r-order:* $TLS_STREAMS"
TLS_USERS=(xmirror-admin xmirror-r2k xmirror-k2r xmirror-r2k-noxack)

KAFKA_DIR="$STATE_DIR/kafka"
KAFKA_PIDFILE="$KAFKA_DIR/kafka.pid"
KAFKA_OUT="$KAFKA_DIR/kafka.out"
KAFKA_SERVER_LOG="$KAFKA_DIR/server.log"
KAFKA_PROPS="$KAFKA_DIR/server.properties"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_CLUSTER_ID_FILE="$KAFKA_DIR/cluster-id"

# The heap and GC flags Kafka's own kafka-server-start.sh and kafka-run-class.sh
# use. A heap started small (-Xms256m) stayed near 315 MB with about 175 MB of
# it live, above InitiatingHeapOccupancyPercent: at 10,000 records/s G1 paused
# for young collections every 2-3 s and for the Remark of an endless series of
# marking cycles every 5 s, 8-18 ms each. With the whole 1 GiB from the start,
# a young pause comes every 7-16 s and no marking cycle runs after start-up.
KAFKA_JVM_OPTS_DEFAULT=(
  -Xms1g -Xmx1g
  -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
  -XX:+ExplicitGCInvokesConcurrent
  -Djava.awt.headless=true
)
# The secured broker (up --secure): its own process, state and ports.
KSEC_SASL_PORT="${XMIRROR_KAFKA_SECURE_SASL_PORT:-9094}"
KSEC_MTLS_PORT="${XMIRROR_KAFKA_SECURE_MTLS_PORT:-9095}"
KSEC_OAUTH_PORT="${XMIRROR_KAFKA_SECURE_OAUTH_PORT:-9096}"
KSEC_ADMIN_PORT="${XMIRROR_KAFKA_SECURE_ADMIN_PORT:-9097}"
# Baked into the formatted metadata, like the plain broker's.
KSEC_CONTROLLER_PORT="${XMIRROR_KAFKA_SECURE_CONTROLLER_PORT:-9098}"
KSEC_DIR="$STATE_DIR/kafka-secure"
KSEC_PIDFILE="$KSEC_DIR/kafka-secure.pid"
KSEC_OUT="$KSEC_DIR/kafka.out"
KSEC_SERVER_LOG="$KSEC_DIR/server.log"
KSEC_PROPS="$KSEC_DIR/server.properties"
KSEC_DATA="$KSEC_DIR/data"
KSEC_ADMIN="$LOCAL_HOST:$KSEC_ADMIN_PORT"
KSEC_USERS=(xmirror-admin xmirror-r2k xmirror-k2r)
# The ACLs of the least-privilege users, the options of one `kafka-acls.sh
# --add` each (README.md, "Least privilege (Kafka)", has the same as
# kafka-acls.sh lines); the tests' topics are named sec-*. xmirror-admin is
# a super user and needs none.
#  redis-to-kafka: finds its topics (Describe), creates missing ones with
#    --create-topic (Create), reads their max.message.bytes
#    (DescribeConfigs), produces (Write) in transactions of its own
#    transactional ID xmirror-r2k:<mirror name> (TransactionalId Describe,
#    Write; a transactional producer needs no Cluster IdempotentWrite since
#    Kafka 3.0) and reads back what an interrupted run wrote (Read). The
#    broker's configuration (Cluster DescribeConfigs) is optional: without
#    it xmirror takes Kafka's default request size limit.
#  kafka-to-redis: finds its topics (Describe), reads their limits
#    (DescribeConfigs) and fetches assigned partitions (Read): no consumer
#    group, its positions live in Redis.
KSEC_ACLS=(
  "--allow-principal User:xmirror-r2k --operation Describe --operation Create --operation DescribeConfigs --operation Write --operation Read --topic sec- --resource-pattern-type prefixed"
  "--allow-principal User:xmirror-r2k --operation Describe --operation Write --transactional-id xmirror-r2k: --resource-pattern-type prefixed"
  "--allow-principal User:xmirror-k2r --operation Describe --operation DescribeConfigs --operation Read --topic sec- --resource-pattern-type prefixed"
)
# Half the plain broker's heap: the secured broker carries only the tests
# of secure connections, never a benchmark. For the same reason only the
# quick JIT compiler (C1): the broker's start-up then takes about 8 CPU
# seconds instead of 14-16, which on 2 shared cores is most of its wait.
KSEC_JVM_OPTS=(
  -Xms512m -Xmx512m -XX:TieredStopAtLevel=1
  -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
  -XX:+ExplicitGCInvokesConcurrent
  -Djava.awt.headless=true
)
# Short-lived CLI tools: start fast, stay small.
TOOL_JVM_OPTS=(-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true)

# The clusters (up --cluster), each with its own ports and state:
#  a Redis Cluster of RCL_NODES nodes on consecutive ports from RCL_PORT
#  (3 masters with one replica each; each node's cluster bus listens on its
#  port + 10000, Redis's default);
#  a primary and a replica watched by three sentinels on consecutive ports
#  from RSN_PORT, under the master name RSN_MASTER;
#  three Kafka nodes, each broker and KRaft controller (a quorum of three),
#  brokers on consecutive ports from KCL_PORT, controllers from
#  KCL_CONTROLLER_PORT.
RCL_PORT="${XMIRROR_REDIS_CLUSTER_PORT:-7000}"
RCL_NODES=6
RCL_DIR="$STATE_DIR/redis-cluster"
RSN_PRIMARY_PORT="${XMIRROR_REDIS_SENTINEL_PRIMARY_PORT:-6390}"
RSN_REPLICA_PORT="${XMIRROR_REDIS_SENTINEL_REPLICA_PORT:-6391}"
RSN_PORT="${XMIRROR_REDIS_SENTINEL_PORT:-26379}"
RSN_MASTER=xmirror
RSN_DIR="$STATE_DIR/redis-sentinel"
KCL_PORT="${XMIRROR_KAFKA_CLUSTER_PORT:-9101}"
# The static voters of the quorum: change it only together with a fresh
# <state>/kafka-cluster, like the plain broker's controller port.
KCL_CONTROLLER_PORT="${XMIRROR_KAFKA_CLUSTER_CONTROLLER_PORT:-9111}"
KCL_DIR="$STATE_DIR/kafka-cluster"
# Each node the plain broker's 1 GiB heap, so a test sees the same broker;
# but only the quick JIT compiler (C1), as the secured broker: three JVMs
# starting at once on 2 shared cores would otherwise take most of a minute.
KCL_JVM_OPTS_DEFAULT=(
  -Xms1g -Xmx1g -XX:TieredStopAtLevel=1
  -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
  -XX:+ExplicitGCInvokesConcurrent
  -Djava.awt.headless=true
)

log() { echo "services.sh: $*" >&2; }
die() { echo "services.sh: ERROR: $*" >&2; exit 1; }

# Prints the tail of each non-empty log given, then dies with a one-line
# message (last, so it is what a CI log shows at the bottom).
fail_with_logs() {
  local msg=$1; shift
  local f
  for f in "$@"; do
    if [[ -s $f ]]; then
      # Java stack frames omitted: they would push the actual message
      # ("Caused by: ...Address already in use") out of the window.
      echo "---- last 30 lines of $f (stack frames omitted) ----" >&2
      # A tool that echoes its input (ConfigCommand does) must not put a
      # password on the screen.
      grep -Ev $'^[ \t]+(at |\\.\\.\\. [0-9]+ more)' "$f" | tail -n 30 |
        sed -E 's/(password=)[^],[:space:]]*/\1[redacted]/g' >&2 || true
      echo "---- end of $f ----" >&2
    fi
  done
  die "$msg"
}

# host:port out of redis://[user:pass@]host:port[/db], for messages only
# (the password must not end up in logs).
redis_display() {
  local u=${1#*://}
  u=${u##*@}
  echo "${u%%/*}"
}

now() { date +%s; }

# ---------------------------------------------------------------- tools

apt_install() {
  local sudo=()
  if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null || die "need root (or sudo) to apt-get install $*"
    sudo=(sudo)
  fi
  mkdir -p "$STATE_DIR"
  local aptlog="$STATE_DIR/apt.log"
  log "installing $* (apt-get; output in $aptlog)"
  # First try without `apt-get update`: it is slow and usually unnecessary;
  # on a fresh image the package lists are empty and the install fails, then
  # we update once and retry.
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends "$@" >>"$aptlog" 2>&1; then
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$aptlog" 2>&1 || true
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends "$@" >>"$aptlog" 2>&1 ||
      fail_with_logs "apt-get install $* failed; see $aptlog" "$aptlog"
  fi
}

# ensure_cmds cmd:package ... installs the packages whose command is missing.
ensure_cmds() {
  local pair missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  if ((${#missing[@]})); then
    apt_install "${missing[@]}"
  fi
}

ensure_client_tools() {
  ensure_cmds redis-cli:redis-tools kcat:kcat
}

# The broker's jars come from Maven Central (the only place this machine and
# CI can download Java artifacts from) via scripts/kafka/pom.xml. A stamp
# holding the pom's checksum skips mvn entirely when the cache is current.
ensure_kafka_lib() {
  ensure_cmds java:openjdk-17-jre-headless mvn:maven
  local sum stamp="$KAFKA_LIB/.pom.sha256"
  sum="$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)"
  if [[ -f $stamp && "$(cat "$stamp")" == "$sum" ]] && compgen -G "$KAFKA_LIB/kafka_2.13-*.jar" >/dev/null; then
    return 0
  fi
  mkdir -p "$STATE_DIR"
  local mvnlog="$STATE_DIR/mvn.log" tmp="$KAFKA_LIB.tmp.$$"
  log "resolving Kafka jars with mvn into $KAFKA_LIB (output in $mvnlog)"
  rm -rf "$tmp"
  mkdir -p "$(dirname "$KAFKA_LIB")"
  # Resolve into a temp dir and swap it in, so an interrupted download never
  # leaves a half-filled cache that looks complete.
  if ! mvn -q -B -Dstyle.color=never -f "$KAFKA_POM" dependency:copy-dependencies \
      -DoutputDirectory="$tmp" >"$mvnlog" 2>&1; then
    rm -rf "$tmp"
    fail_with_logs "mvn could not resolve the Kafka jars; see $mvnlog" "$mvnlog"
  fi
  echo "$sum" >"$tmp/.pom.sha256"
  rm -rf "$KAFKA_LIB"
  mv "$tmp" "$KAFKA_LIB"
}

# kafka_tool CLASS ARGS... runs a Kafka CLI class from the jar cache.
kafka_tool() {
  java "${TOOL_JVM_OPTS[@]}" -Dlog4j2.configurationFile="$TOOLS_LOG4J" \
    -cp "$KAFKA_LIB/*" "$@"
}

# ------------------------------------------------------- probes / pids

# Prints the pid recorded in pidfile $1 if that process is alive and its
# command line contains $2; the check on the command line keeps a stale
# pidfile (e.g. after a machine restart) from naming an unrelated process.
owned_pid() {
  local pidfile=$1 pattern=$2 pid cmdline
  [[ -s $pidfile ]] || return 1
  pid="$(<"$pidfile")"
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ $cmdline == *"$pattern"* ]] || return 1
  echo "$pid"
}

redis_pid() { owned_pid "$REDIS_PIDFILE" redis-server; }
kafka_pid() { owned_pid "$KAFKA_PIDFILE" kafka.Kafka; }

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# need_free_port NAME PORT VAR: dies at once, in one line, when something
# listens on PORT; called only for a server this checkout has not started,
# so whatever listens there is someone else's.
need_free_port() {
  if port_open "$LOCAL_HOST" "$2"; then
    die "port $2 ($1) is in use by another server, not one started from this checkout; set $3 to a free port"
  fi
}

redis_answers() {
  local out
  out="$(timeout 5 redis-cli --no-auth-warning -u "$REDIS_TARGET" ping 2>/dev/null)" || return 1
  [[ $out == PONG ]]
}

# kafka_answers [metadata-timeout-seconds]: true once a metadata request
# lists at least one broker (a KRaft broker only shows up there once it has
# caught up with the metadata log and is unfenced, i.e. usable).
kafka_answers() {
  local t=${1:-5} out
  if ((KAFKA_EXTERNAL == 0)); then
    # Cheap pre-check: kcat would otherwise spend its whole timeout
    # retrying a port nothing listens on.
    port_open "$LOCAL_HOST" "$KAFKA_PORT" || return 1
  fi
  out="$(timeout $((t + 5)) kcat -L -b "$KAFKA_TARGET" -m "$t" 2>/dev/null)" || return 1
  grep -qE '^ *broker [0-9]+ at ' <<<"$out"
}

# ---------------------------------------------------------------- redis

start_redis() {
  ensure_cmds redis-server:redis-server
  mkdir -p "$REDIS_DIR"
  rm -f "$REDIS_PIDFILE"
  # Not --daemonize: launched like the broker (see wait_pidfile), so the pid
  # is known at once and a redis-server that dies on start-up (port taken)
  # is noticed at once.
  # --save '' --appendonly no: no persistence (a dump.rdb only exists
  # between `stop redis` and the next start, which loads it).
  # shellcheck disable=SC2016  # $$ and $@ are for the inner shell
  setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$REDIS_PIDFILE" \
    redis-server --bind "$LOCAL_HOST" --port "$REDIS_PORT" --daemonize no \
    --logfile "$REDIS_LOG" --dir "$REDIS_DIR" --save '' --appendonly no \
    >>"$REDIS_DIR/redis.out" 2>&1 </dev/null 9>&- &
  wait_pidfile "$REDIS_PIDFILE"
  REDIS_STARTED=1
}

# stop_redis save|nosave
stop_redis() {
  local mode=$1 pid
  pid="$(redis_pid)" || return 0
  if [[ $mode == save ]]; then
    # SHUTDOWN SAVE writes dump.rdb even with `save ''`; the next start loads it.
    timeout 30 redis-cli -h "$LOCAL_HOST" -p "$REDIS_PORT" shutdown save >/dev/null 2>&1 || true
  else
    kill -TERM "$pid" 2>/dev/null || true
  fi
  wait_exit "$pid" redis 20
  rm -f "$REDIS_PIDFILE"
  if [[ $mode == nosave ]]; then
    rm -f "$REDIS_DIR/dump.rdb"
  fi
}

# Once a Redis we started answers PING it has loaded any dump.rdb left by
# `stop redis`; drop the file so a later crash + start cannot bring back
# stale data (Redis is meant to run without persistence).
forget_redis_snapshot() {
  if [[ -n ${REDIS_STARTED:-} ]]; then
    rm -f "$REDIS_DIR/dump.rdb"
  fi
}

# wait_redis DEADLINE
wait_redis() {
  local deadline=$1 what
  what="redis at $(redis_display "$REDIS_TARGET")"
  while ! redis_answers; do
    if [[ -n ${REDIS_STARTED:-} ]] && ! redis_pid >/dev/null; then
      fail_with_logs "redis-server exited during start-up; see $REDIS_LOG" "$REDIS_LOG" "$REDIS_DIR/redis.out"
    fi
    if (($(now) >= deadline)); then
      if ((REDIS_EXTERNAL)); then
        die "$what did not answer PING within ${UP_TIMEOUT}s (external REDIS_URL)"
      fi
      fail_with_logs "$what did not answer PING within ${UP_TIMEOUT}s; see $REDIS_LOG" "$REDIS_LOG"
    fi
    sleep 0.2
  done
}


# ------------------------------------------------------------ redis TLS

# acl_rules USER: the ACL rules of a user of the TLS servers.
acl_rules() {
  case "$1" in
    xmirror-admin) echo '+@all ~* &*' ;;
    xmirror-r2k) echo "$ACL_R2K" ;;
    xmirror-k2r) echo "$ACL_K2R" ;;
    xmirror-r2k-noxack) echo "${ACL_R2K/ +xack / }" ;;
    *) die "no ACL rules for user $1" ;;
  esac
}

# Makes the CA, the server's and the client's certificates and the users'
# passwords once per state dir; `rm -r <state>/redis-tls` makes new ones.
make_tls_material() {
  mkdir -p "$TLS_DIR"
  chmod 700 "$TLS_DIR"
  local log="$TLS_DIR/openssl.log" d=$TLS_DIR
  if [[ ! -s $d/ca.crt || ! -s $d/server.crt || ! -s $d/client.crt ]]; then
    log "making a CA, a server and a client certificate in $d (openssl; output in $log)"
    {
      openssl req -x509 -new -nodes -newkey rsa:2048 -sha256 -days 3650 \
        -subj "/CN=xmirror test CA" -keyout "$d/ca.key" -out "$d/ca.crt" &&
        openssl req -new -nodes -newkey rsa:2048 -subj "/CN=localhost" \
          -keyout "$d/server.key" -out "$d/server.csr" &&
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$d/server.ext" &&
        openssl x509 -req -sha256 -days 3650 -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
          -CAcreateserial -extfile "$d/server.ext" -out "$d/server.crt" &&
        openssl req -new -nodes -newkey rsa:2048 -subj "/CN=xmirror-client" \
          -keyout "$d/client.key" -out "$d/client.csr" &&
        printf 'extendedKeyUsage=clientAuth\n' >"$d/client.ext" &&
        openssl x509 -req -sha256 -days 3650 -in "$d/client.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
          -CAcreateserial -extfile "$d/client.ext" -out "$d/client.crt"
    } >"$log" 2>&1 || fail_with_logs "openssl could not make the certificates; see $log" "$log"
    chmod 600 "$d"/*.key
  fi
  local user pw
  for user in "${TLS_USERS[@]}"; do
    if [[ ! -s $d/$user.password ]]; then
      (umask 077 && openssl rand -hex 16 >"$d/$user.password")
    fi
  done
  # Rewritten on every start so edits here take effect. Passwords go in as
  # SHA-256 (#...), never in clear.
  {
    echo "user default off"
    for user in "${TLS_USERS[@]}"; do
      pw="$(printf %s "$(<"$d/$user.password")" | sha256sum | cut -d' ' -f1)"
      echo "user $user on #$pw resetchannels -@all $(acl_rules "$user")"
    done
  } >"$d/users.acl"
  chmod 600 "$d/users.acl"
}

# tls_pid NAME: pid of the TLS server NAME (redis-tls or redis-mtls) we started.
tls_pid() { owned_pid "$TLS_DIR/$1.pid" redis-server; }
tls_port() { if [[ $1 == redis-tls ]]; then echo "$REDIS_TLS_PORT"; else echo "$REDIS_MTLS_PORT"; fi; }

tls_answers() {
  local name=$1 out
  [[ -s $TLS_DIR/xmirror-admin.password ]] || return 1
  out="$(REDISCLI_AUTH="$(<"$TLS_DIR/xmirror-admin.password")" timeout 5 redis-cli --no-auth-warning \
    --tls --cacert "$TLS_DIR/ca.crt" --cert "$TLS_DIR/client.crt" --key "$TLS_DIR/client.key" \
    -h "$LOCAL_HOST" -p "$(tls_port "$name")" --user xmirror-admin ping 2>/dev/null)" || return 1
  [[ $out == PONG ]]
}

start_tls_redis() {
  local name=$1 auth
  if [[ $name == redis-tls ]]; then auth=optional; else auth=yes; fi
  rm -f "$TLS_DIR/$name.pid"
  # shellcheck disable=SC2016  # $$ and $@ are for the inner shell
  setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$TLS_DIR/$name.pid" \
    redis-server --bind "$LOCAL_HOST" --port 0 --tls-port "$(tls_port "$name")" --daemonize no \
    --tls-cert-file "$TLS_DIR/server.crt" --tls-key-file "$TLS_DIR/server.key" \
    --tls-ca-cert-file "$TLS_DIR/ca.crt" --tls-auth-clients "$auth" \
    --aclfile "$TLS_DIR/users.acl" \
    --logfile "$TLS_DIR/$name.log" --dir "$TLS_DIR" --dbfilename "$name.rdb" --save '' --appendonly no \
    >>"$TLS_DIR/$name.out" 2>&1 </dev/null 9>&- &
  wait_pidfile "$TLS_DIR/$name.pid"
}

# tls_port_var NAME: the variable that moves the port of TLS server NAME.
tls_port_var() { if [[ $1 == redis-tls ]]; then echo XMIRROR_REDIS_TLS_PORT; else echo XMIRROR_REDIS_MTLS_PORT; fi; }

# check_tls_redis_ports: dies at once when the port of a TLS server that is
# not ours is taken (another checkout's server, say): reaching that one with
# this checkout's passwords could only fail, and much later.
check_tls_redis_ports() {
  local name
  for name in redis-tls redis-mtls; do
    tls_pid "$name" >/dev/null || need_free_port "$name" "$(tls_port "$name")" "$(tls_port_var "$name")"
  done
}

# start_tls_redis_servers: start both TLS servers unless they run (ours);
# TLS_STATE_<name> says which. wait_tls_redis waits for them.
start_tls_redis_servers() {
  local name
  ensure_cmds redis-server:redis-server openssl:openssl
  for name in redis-tls redis-mtls; do
    if tls_pid "$name" >/dev/null; then
      printf -v "TLS_STATE_${name//-/_}" reused
    else
      [[ $name == redis-tls ]] && make_tls_material
      start_tls_redis "$name"
      printf -v "TLS_STATE_${name//-/_}" started
    fi
  done
}

# wait_tls_redis DEADLINE
wait_tls_redis() {
  local deadline=$1 name state
  for name in redis-tls redis-mtls; do
    state="TLS_STATE_${name//-/_}"
    while ! tls_answers "$name"; do
      if ! tls_pid "$name" >/dev/null; then
        fail_with_logs "$name (redis-server) exited during start-up; see $TLS_DIR/$name.log" \
          "$TLS_DIR/$name.log" "$TLS_DIR/$name.out"
      fi
      if (($(now) >= deadline)); then
        fail_with_logs "$name at $LOCAL_HOST:$(tls_port "$name") did not answer PING within ${UP_TIMEOUT}s; see $TLS_DIR/$name.log" \
          "$TLS_DIR/$name.log"
      fi
      sleep 0.2
    done
    echo "$name: $LOCAL_HOST:$(tls_port "$name") (${!state})"
  done
}

# ---------------------------------------------------------------- kafka

write_kafka_props() {
  mkdir -p "$KAFKA_DIR" "$KAFKA_DATA"
  # Rewritten on every start so edits here take effect; the cluster id and
  # data live in $KAFKA_DATA and are not touched.
  cat >"$KAFKA_PROPS" <<EOF
# Generated by scripts/services.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://$LOCAL_HOST:$KAFKA_PORT,CONTROLLER://$LOCAL_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$LOCAL_HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
controller.quorum.bootstrap.servers=$LOCAL_HOST:$KAFKA_CONTROLLER_PORT
log.dirs=$KAFKA_DATA

# Single node: every internal topic must make do with one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# The defaults (50 partitions each) make the first consumer group / first
# transactional producer wait while 50 partitions are created; one is plenty here.
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1

num.partitions=1
group.initial.rebalance.delay.ms=0
# xmirror must create its topics explicitly; a typo must not create one.
auto.create.topics.enable=false
# Only 2 cores on the dev/CI machines.
num.network.threads=2
num.io.threads=4
EOF
}

format_kafka_storage_if_needed() {
  # meta.properties is written by `format`; its presence means formatted.
  # Formatting again would need a new cluster id and would lose the topics.
  [[ -f $KAFKA_DATA/meta.properties ]] && return 0
  if [[ ! -s $KAFKA_CLUSTER_ID_FILE ]]; then
    kafka_tool kafka.tools.StorageTool random-uuid >"$KAFKA_CLUSTER_ID_FILE.tmp"
    mv "$KAFKA_CLUSTER_ID_FILE.tmp" "$KAFKA_CLUSTER_ID_FILE"
  fi
  log "formatting Kafka storage in $KAFKA_DATA (cluster id $(<"$KAFKA_CLUSTER_ID_FILE"))"
  kafka_tool kafka.tools.StorageTool format --standalone \
    -t "$(<"$KAFKA_CLUSTER_ID_FILE")" -c "$KAFKA_PROPS" >"$KAFKA_DIR/format.log" 2>&1 ||
    fail_with_logs "formatting Kafka storage failed; see $KAFKA_DIR/format.log" "$KAFKA_DIR/format.log"
}

start_kafka() {
  ensure_kafka_lib
  write_kafka_props
  format_kafka_storage_if_needed
  local opts=("${KAFKA_JVM_OPTS_DEFAULT[@]}")
  if [[ -n ${XMIRROR_KAFKA_JVM_OPTS:-} ]]; then
    read -r -a opts <<<"$XMIRROR_KAFKA_JVM_OPTS"
  fi
  rm -f "$KAFKA_PIDFILE"
  echo "==== $(date -u +%FT%TZ) services.sh starting kafka.Kafka" >>"$KAFKA_OUT"
  # shellcheck disable=SC2016  # $$ and $@ are for the inner shell
  setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$KAFKA_PIDFILE" \
    java "${opts[@]}" \
    -Dkafka.logs.dir="$KAFKA_DIR" \
    -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
    -cp "$KAFKA_LIB/*" kafka.Kafka "$KAFKA_PROPS" \
    >>"$KAFKA_OUT" 2>&1 </dev/null 9>&- &
  wait_pidfile "$KAFKA_PIDFILE"
  KAFKA_STARTED=1
}

stop_kafka() {
  local pid
  pid="$(kafka_pid)" || return 0
  # SIGTERM runs Kafka's shutdown hook: a clean shutdown, so the next start
  # does not have to recover its logs.
  kill -TERM "$pid" 2>/dev/null || true
  wait_exit "$pid" kafka 60
  rm -f "$KAFKA_PIDFILE"
}

# wait_kafka DEADLINE
wait_kafka() {
  local deadline=$1 what="kafka at $KAFKA_TARGET"
  while ! kafka_answers 2; do
    if [[ -n ${KAFKA_STARTED:-} ]] && ! kafka_pid >/dev/null; then
      fail_with_logs "the Kafka broker (java) exited during start-up; see $KAFKA_SERVER_LOG" \
        "$KAFKA_SERVER_LOG" "$KAFKA_OUT"
    fi
    if (($(now) >= deadline)); then
      if ((KAFKA_EXTERNAL)); then
        die "$what did not answer a metadata request within ${UP_TIMEOUT}s (external KAFKA_BROKERS)"
      fi
      fail_with_logs "$what did not answer a metadata request within ${UP_TIMEOUT}s; see $KAFKA_SERVER_LOG" \
        "$KAFKA_SERVER_LOG" "$KAFKA_OUT"
    fi
    sleep 0.5
  done
}

# ------------------------------------------------------- kafka secure

# ksec_sign NAME SUBJECT DAYS EXTENSIONS [CA]: NAME.key and NAME.crt, signed
# by CA (default ca). EC P-256 keys: as good as RSA for tests, and made in
# milliseconds.
ksec_sign() {
  local name=$1 subj=$2 days=$3 ext=$4 ca=${5:-ca} d=$KSEC_DIR
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj "$subj" \
    -keyout "$d/$name.key" -out "$d/$name.csr" &&
    printf '%b\n' "$ext" >"$d/$name.ext" &&
    openssl x509 -req -sha256 -days "$days" -in "$d/$name.csr" -CA "$d/$ca.crt" -CAkey "$d/$ca.key" \
      -CAcreateserial -extfile "$d/$name.ext" -out "$d/$name.crt" &&
    rm -f "$d/$name.csr" "$d/$name.ext"
}

ksec_ca() {
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -days 3650 \
    -subj "$2" -keyout "$KSEC_DIR/$1.key" -out "$KSEC_DIR/$1.crt"
}

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# unsecured_jwt SUB: a JWT with "alg":"none" and an empty signature, as
# Kafka's OAuthBearerUnsecuredValidatorCallbackHandler takes it: sub is the
# principal, exp is required; valid for ten years.
unsecured_jwt() {
  local iat
  iat="$(now)"
  printf '%s.%s.\n' "$(printf '{"alg":"none"}' | b64url)" \
    "$(printf '{"sub":"%s","iat":%d,"exp":%d}' "$1" "$iat" $((iat + 3650 * 86400)) | b64url)"
}

ksec_sign_users() {
  local user
  for user in "${KSEC_USERS[@]}"; do
    ksec_sign "$user" "/CN=$user" 3650 'extendedKeyUsage=clientAuth' || return 1
  done
}

# make_ksec_secrets and make_ksec_certs make the passwords and tokens and
# the certificates of the secured broker, once per state dir; `rm -r
# <state>/kafka-secure` makes new ones (and a new, empty broker).
make_ksec_secrets() {
  local d=$KSEC_DIR user
  ensure_cmds openssl:openssl
  mkdir -p "$d"
  chmod 700 "$d"
  for user in "${KSEC_USERS[@]}"; do
    if [[ ! -s $d/$user.password ]]; then
      (umask 077 && openssl rand -hex 16 >"$d/$user.password")
    fi
    if [[ ! -s $d/$user.token ]]; then
      (umask 077 && unsecured_jwt "$user" >"$d/$user.token")
    fi
  done
}

make_ksec_certs() {
  local d=$KSEC_DIR log="$KSEC_DIR/openssl.log"
  [[ -s $d/ca.crt && -s $d/server.pem && -s $d/untrusted.crt ]] && return 0
  log "making a CA, server and client certificates in $d (openssl; output in $log)"
  {
    ksec_ca ca "/CN=xmirror test Kafka CA" &&
      ksec_ca other-ca "/CN=xmirror test other CA" &&
      ksec_sign server /CN=localhost 3650 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth' &&
      cat "$d/server.key" "$d/server.crt" >"$d/server.pem" &&
      ksec_sign_users &&
      # Not after = not before - 1 day: expired from the start.
      ksec_sign expired /CN=xmirror-r2k -1 'extendedKeyUsage=clientAuth' &&
      ksec_sign untrusted /CN=xmirror-r2k 3650 'extendedKeyUsage=clientAuth' other-ca
  } >"$log" 2>&1 || fail_with_logs "openssl could not make the certificates; see $log" "$log"
  chmod 600 "$d"/*.key "$d/server.pem"
}

write_ksec_props() {
  local d=$KSEC_DIR h=$LOCAL_HOST user plain=""
  mkdir -p "$KSEC_DATA"
  for user in "${KSEC_USERS[@]}"; do
    plain+=" user_$user=\"$(<"$d/$user.password")\""
  done
  # Holds the PLAIN passwords: mode 600, like the password files.
  (umask 077 && cat >"$KSEC_PROPS") <<EOF
# Generated by scripts/services.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
listeners=SASL_SSL://$h:$KSEC_SASL_PORT,SSL://$h:$KSEC_MTLS_PORT,OAUTH://$h:$KSEC_OAUTH_PORT,PLAINTEXT://$h:$KSEC_ADMIN_PORT,CONTROLLER://$h:$KSEC_CONTROLLER_PORT
advertised.listeners=SASL_SSL://$h:$KSEC_SASL_PORT,SSL://$h:$KSEC_MTLS_PORT,OAUTH://$h:$KSEC_OAUTH_PORT,PLAINTEXT://$h:$KSEC_ADMIN_PORT
listener.security.protocol.map=SASL_SSL:SASL_SSL,SSL:SSL,OAUTH:SASL_SSL,PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
controller.quorum.bootstrap.servers=$h:$KSEC_CONTROLLER_PORT
log.dirs=$KSEC_DATA

# ACLs. The PLAINTEXT listener (the tests' own clients, this script's admin
# tools) and the controller's connections are ANONYMOUS: super users.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS;User:xmirror-admin
allow.everyone.if.no.acl.found=false

# TLS: PEM files, no Java keystores. The server's certificate is for
# 127.0.0.1 and localhost.
ssl.keystore.type=PEM
ssl.keystore.location=$d/server.pem
ssl.truststore.type=PEM
ssl.truststore.location=$d/ca.crt
# SSL (mutual TLS): a client certificate is required, and its subject
# CN=<user> is the principal User:<user>.
listener.name.ssl.ssl.client.auth=required
ssl.principal.mapping.rules=RULE:^CN=([^,]+)\$/\$1/,DEFAULT

# SASL_SSL: PLAIN (users and passwords below), SCRAM-SHA-256 and -512
# (credentials stored in the metadata by the admin API).
listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required$plain;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;

# OAUTH (SASL_SSL): OAUTHBEARER only, with Kafka's validator of unsecured
# JWTs ("alg":"none"; sub is the principal), for tests only. The login
# module's sub is the broker's own token, which no connection uses.
listener.name.oauth.sasl.enabled.mechanisms=OAUTHBEARER
listener.name.oauth.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="xmirror-admin";
listener.name.oauth.oauthbearer.sasl.server.callback.handler.class=org.apache.kafka.common.security.oauthbearer.internals.unsecured.OAuthBearerUnsecuredValidatorCallbackHandler

# Single node, as the plain broker (see there).
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1
num.partitions=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
# Network threads are per listener.
num.network.threads=1
num.io.threads=2
EOF
}

ksec_pid() { owned_pid "$KSEC_PIDFILE" "kafka.Kafka $KSEC_PROPS"; }

# ksec_ports: name, port and variable of each listener of the secured broker.
ksec_ports() {
  printf '%s\n' "kafka-secure-sasl $KSEC_SASL_PORT XMIRROR_KAFKA_SECURE_SASL_PORT" \
    "kafka-secure-mtls $KSEC_MTLS_PORT XMIRROR_KAFKA_SECURE_MTLS_PORT" \
    "kafka-secure-oauth $KSEC_OAUTH_PORT XMIRROR_KAFKA_SECURE_OAUTH_PORT" \
    "kafka-secure-admin $KSEC_ADMIN_PORT XMIRROR_KAFKA_SECURE_ADMIN_PORT" \
    "kafka-secure-controller $KSEC_CONTROLLER_PORT XMIRROR_KAFKA_SECURE_CONTROLLER_PORT"
}

check_ksec_ports() {
  ksec_pid >/dev/null && return 0
  local name port var
  while read -r name port var; do
    need_free_port "$name" "$port" "$var"
  done < <(ksec_ports)
}

# ksec_answers: its PLAINTEXT listener lists the broker (see kafka_answers).
ksec_answers() {
  local out
  port_open "$LOCAL_HOST" "$KSEC_ADMIN_PORT" || return 1
  out="$(timeout 7 kcat -L -b "$KSEC_ADMIN" -m 2 2>/dev/null)" || return 1
  grep -qE '^ *broker [0-9]+ at ' <<<"$out"
}

# start_kafka_secure: start the secured broker unless it runs (ours);
# KSEC_STATE says which.
start_kafka_secure() {
  if ksec_pid >/dev/null; then
    KSEC_STATE=reused
    start_ksec_setup
    return 0
  fi
  ensure_kafka_lib
  make_ksec_secrets
  write_ksec_props
  local format_pid=""
  if [[ ! -f $KSEC_DATA/meta.properties ]]; then
    if [[ ! -s $KSEC_DIR/cluster-id ]]; then
      # What `StorageTool random-uuid` prints (16 random bytes, base64url,
      # never starting with "-"), without a JVM.
      local id=-
      while [[ $id == -* ]]; do id="$(openssl rand 16 | b64url)"; done
      echo "$id" >"$KSEC_DIR/cluster-id"
    fi
    # While openssl makes the certificates, which formatting does not read.
    kafka_tool kafka.tools.StorageTool format --standalone \
      -t "$(<"$KSEC_DIR/cluster-id")" -c "$KSEC_PROPS" >"$KSEC_DIR/format.log" 2>&1 9>&- &
    format_pid=$!
  fi
  make_ksec_certs
  if [[ -n $format_pid ]] && ! wait "$format_pid"; then
    fail_with_logs "formatting the secured Kafka's storage failed; see $KSEC_DIR/format.log" "$KSEC_DIR/format.log"
  fi
  rm -f "$KSEC_PIDFILE"
  echo "==== $(date -u +%FT%TZ) services.sh starting kafka.Kafka" >>"$KSEC_OUT"
  # shellcheck disable=SC2016  # $$ and $@ are for the inner shell
  setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$KSEC_PIDFILE" \
    java "${KSEC_JVM_OPTS[@]}" \
    -Dkafka.logs.dir="$KSEC_DIR" \
    -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
    -cp "$KAFKA_LIB/*" kafka.Kafka "$KSEC_PROPS" \
    >>"$KSEC_OUT" 2>&1 </dev/null 9>&- &
  wait_pidfile "$KSEC_PIDFILE"
  KSEC_STATE=started
  start_ksec_setup
}

# start_ksec_setup: the SCRAM credentials and the ACLs, through the admin
# API (scripts/kafka/SecureSetup.java: one JVM instead of one per Kafka CLI
# call), once per broker and set of passwords and ACLs: a stamp holds their
# checksum (passwords hashed), so a later `up` runs no JVM for it at all.
# It starts with the broker and waits for it to answer, so that the JVM's
# start-up and the compilation of the source overlap the broker's;
# finish_ksec_setup waits for it.
start_ksec_setup() {
  local user
  KSEC_SETUP_PID=""
  KSEC_SETUP_SUM="$({
    cat "$KSEC_DATA/meta.properties" "$KSEC_SETUP"
    printf '%s\n' "${KSEC_ACLS[@]}"
    for user in "${KSEC_USERS[@]}"; do sha256sum <"$KSEC_DIR/$user.password"; done
  } | sha256sum | cut -d' ' -f1)"
  [[ -f $KSEC_DIR/setup.stamp && "$(<"$KSEC_DIR/setup.stamp")" == "$KSEC_SETUP_SUM" ]] && return 0
  kafka_tool "$KSEC_SETUP" "$KSEC_ADMIN" "$KSEC_DIR" "$UP_TIMEOUT" "${KSEC_USERS[@]}" -- "${KSEC_ACLS[@]}" \
    >"$KSEC_DIR/setup.log" 2>&1 9>&- &
  KSEC_SETUP_PID=$!
}

finish_ksec_setup() {
  [[ -n $KSEC_SETUP_PID ]] || return 0
  wait "$KSEC_SETUP_PID" ||
    fail_with_logs "creating the users and ACLs of the secured Kafka failed; see $KSEC_DIR/setup.log" "$KSEC_DIR/setup.log"
  echo "$KSEC_SETUP_SUM" >"$KSEC_DIR/setup.stamp"
}

# stop_ksec_setup: on the way out of a failed start, so no admin client
# keeps trying to reach a broker that is gone.
stop_ksec_setup() {
  if [[ -n ${KSEC_SETUP_PID:-} ]]; then
    kill -TERM "$KSEC_SETUP_PID" 2>/dev/null || true
  fi
}

# wait_kafka_secure DEADLINE: wait for the secured broker, then set up its
# users and ACLs.
wait_kafka_secure() {
  local deadline=$1
  while ! ksec_answers; do
    if ! ksec_pid >/dev/null; then
      stop_ksec_setup
      fail_with_logs "the secured Kafka broker (java) exited during start-up; see $KSEC_SERVER_LOG" \
        "$KSEC_SERVER_LOG" "$KSEC_OUT"
    fi
    if (($(now) >= deadline)); then
      stop_ksec_setup
      fail_with_logs "the secured Kafka at $KSEC_ADMIN did not answer a metadata request within ${UP_TIMEOUT}s; see $KSEC_SERVER_LOG" \
        "$KSEC_SERVER_LOG" "$KSEC_OUT"
    fi
    sleep 0.3
  done
  finish_ksec_setup
  echo "kafka-secure: SASL_SSL $LOCAL_HOST:$KSEC_SASL_PORT, SSL $LOCAL_HOST:$KSEC_MTLS_PORT, OAUTHBEARER $LOCAL_HOST:$KSEC_OAUTH_PORT, PLAINTEXT $KSEC_ADMIN ($KSEC_STATE)"
}

stop_kafka_secure() {
  local pid
  pid="$(ksec_pid)" || return 1
  kill -TERM "$pid" 2>/dev/null || true
  wait_exit "$pid" kafka-secure 60
  rm -f "$KSEC_PIDFILE"
  echo "kafka-secure: stopped (pid $pid)"
}

# ------------------------------------------------------------- clusters

# launch PIDFILE OUT SERVER...: start a server as described at
# wait_pidfile, its stdout and stderr appended to OUT.
launch() {
  local pidfile=$1 out=$2
  shift 2
  rm -f "$pidfile"
  # shellcheck disable=SC2016  # $$ and $@ are for the inner shell
  setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" \
    >>"$out" 2>&1 </dev/null 9>&- &
  wait_pidfile "$pidfile"
}

# rcli PORT ARGS...: redis-cli against a local server, bounded.
rcli() {
  local port=$1
  shift
  timeout 5 redis-cli -h "$LOCAL_HOST" -p "$port" "$@" 2>/dev/null
}

# redis_port_pid PIDFILE PORT: the pid of our redis-server on PORT. Its
# process title names the address it listens on, so a pidfile left from
# another node cannot name this one.
redis_port_pid() { owned_pid "$1" "redis-server $LOCAL_HOST:$2 "; }

# count_running FN ARG...: how many of FN ARG run (FN is a *_pid function).
count_running() {
  local fn=$1 arg n=0
  shift
  for arg in "$@"; do
    if "$fn" "$arg" >/dev/null; then n=$((n + 1)); fi
  done
  echo "$n"
}

# pids_of FN ARG...: the pids of those of FN ARG that run, comma-separated.
pids_of() {
  local fn=$1 arg pid out=()
  shift
  for arg in "$@"; do
    if pid="$("$fn" "$arg")"; then out+=("$pid"); fi
  done
  local IFS=,
  echo "${out[*]}"
}

# stop_group NAME SECONDS FN ARG...: SIGTERM to each of FN ARG that runs,
# all at once, then wait for each; pidfiles are removed by the caller.
stop_group() {
  local name=$1 secs=$2 fn=$3 arg pid pids=()
  shift 3
  for arg in "$@"; do
    if pid="$("$fn" "$arg")"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  ((${#pids[@]})) || return 1
  for pid in "${pids[@]}"; do wait_exit "$pid" "$name" "$secs"; done
  local IFS=,
  echo "$name: stopped (pids ${pids[*]})"
}

# ----------------------------------------------- clusters: Redis Cluster

RCL_PORTS=()
for ((i = 0; i < RCL_NODES; i++)); do RCL_PORTS+=($((RCL_PORT + i))); done
unset i
RCL_PORT_VAR="XMIRROR_REDIS_CLUSTER_PORT (the first of $RCL_NODES ports in a row, each with its cluster bus at +10000)"

rcl_pid() { redis_port_pid "$RCL_DIR/$1/redis.pid" "$1"; }
rcl_nodes() { local p out=(); for p in "${RCL_PORTS[@]}"; do out+=("$LOCAL_HOST:$p"); done; local IFS=,; echo "${out[*]}"; }

# start_redis_cluster: start the nodes that do not run (ours); RCL_STATE
# says whether any was started. wait_redis_cluster creates the cluster.
start_redis_cluster() {
  local n port d
  ensure_cmds redis-server:redis-server
  n="$(count_running rcl_pid "${RCL_PORTS[@]}")"
  if ((n == RCL_NODES)); then
    RCL_STATE=reused
    return 0
  fi
  RCL_STATE=started
  # No node runs: a new cluster. The nodes keep no data (see Data), so the
  # last cluster's nodes.conf files would bring back only its shape.
  if ((n == 0)); then rm -rf "$RCL_DIR"; fi
  for port in "${RCL_PORTS[@]}"; do
    rcl_pid "$port" >/dev/null && continue
    d="$RCL_DIR/$port"
    mkdir -p "$d"
    # A node timeout of 5 s (Redis's default is 15 s): a test that stops
    # a master sees its replica take over within seconds.
    launch "$d/redis.pid" "$d/redis.out" \
      redis-server --bind "$LOCAL_HOST" --port "$port" --daemonize no \
      --cluster-enabled yes --cluster-config-file "$d/nodes.conf" --cluster-node-timeout 5000 \
      --logfile "$d/redis.log" --dir "$d" --save '' --appendonly no
  done
}

# rcl_ready PORT: the node sees cluster_state:ok and, a replica, has its
# link to its master up (so a test may read from replicas at once).
rcl_ready() {
  local out
  out="$(printf 'CLUSTER INFO\nINFO replication\n' |
    timeout 5 redis-cli -h "$LOCAL_HOST" -p "$1" 2>/dev/null)" || return 1
  [[ $out == *cluster_state:ok* ]] || return 1
  [[ $out != *role:slave* || $out == *master_link_status:up* ]]
}

# rcl_self_views: each node's own line of its CLUSTER NODES, "port id
# flags master slots...": what it is itself, which no gossip delays.
rcl_self_views() {
  local port line id addr flags master rest
  for port in "${RCL_PORTS[@]}"; do
    line="$(rcli "$port" cluster nodes | grep ' myself,')" || continue
    read -r id addr flags master _ _ _ _ rest <<<"${line//$'\r'/}"
    echo "$port $id $flags $master $rest"
  done
}

# rcl_shape: how many masters hold slots, how many of them a replica
# follows, and how many nodes answer, each node taken at its own word.
rcl_shape() {
  local views port id flags master rest masters=0 covered=0 nodes=0
  views="$(rcl_self_views)"
  local -A followed=()
  while read -r port id flags master rest; do
    [[ -n $port ]] || continue
    nodes=$((nodes + 1))
    if [[ $flags == *slave* ]]; then followed[$master]=1; fi
  done <<<"$views"
  while read -r port id flags master rest; do
    if [[ $flags == *master* && -n $rest ]]; then
      masters=$((masters + 1))
      if [[ -n ${followed[$id]:-} ]]; then covered=$((covered + 1)); fi
    fi
  done <<<"$views"
  echo "$masters $covered $nodes"
}

# rcl_attach_replicas: each node that is a master without slots (a create
# cut short before it made the replicas) becomes the replica of a master
# that no replica follows, as redis-cli --cluster create would have made
# it. Each node's own word counts, so a replica is never moved.
rcl_attach_replicas() {
  local views port id flags master rest empty=() lonely=()
  views="$(rcl_self_views)"
  local -A followed=()
  while read -r port id flags master rest; do
    if [[ $flags == *slave* ]]; then followed[$master]=1; fi
  done <<<"$views"
  while read -r port id flags master rest; do
    [[ $flags == *master* ]] || continue
    if [[ -z $rest ]]; then
      empty+=("$port")
    elif [[ -z ${followed[$id]:-} ]]; then
      lonely+=("$id")
    fi
  done <<<"$views"
  local i
  for ((i = 0; i < ${#empty[@]} && i < ${#lonely[@]}; i++)); do
    # Fails harmlessly while the node has not met that master yet.
    if [[ "$(rcli "${empty[i]}" cluster replicate "${lonely[i]}")" == OK ]]; then
      log "redis-cluster: $LOCAL_HOST:${empty[i]}, a master without slots, made the replica of ${lonely[i]}, which had none"
    fi
  done
}

# rcl_alive_or_fail PORT DEADLINE WHAT: dies, with the node's log, when it
# has exited or the deadline has passed.
rcl_alive_or_fail() {
  local port=$1 deadline=$2 what=$3 d="$RCL_DIR/$1"
  rcl_pid "$port" >/dev/null ||
    fail_with_logs "redis-cluster node $LOCAL_HOST:$port (redis-server) exited during start-up; see $d/redis.log" \
      "$d/redis.log" "$d/redis.out"
  (($(now) < deadline)) ||
    fail_with_logs "redis-cluster node $LOCAL_HOST:$port did not $what within ${UP_TIMEOUT}s; see $d/redis.log" \
      "$d/redis.log"
}

# wait_redis_cluster DEADLINE: every node answers; a cluster is created
# unless one already holds every slot; every node sees it ok.
wait_redis_cluster() {
  local deadline=$1 port addrs=() created=0 left
  for port in "${RCL_PORTS[@]}"; do
    until [[ "$(rcli "$port" ping)" == PONG ]]; do
      rcl_alive_or_fail "$port" "$deadline" "answer PING"
      sleep 0.1
    done
    addrs+=("$LOCAL_HOST:$port")
    if [[ "$(rcli "$port" cluster info)" == *cluster_slots_assigned:16384* ]]; then created=1; fi
  done
  if ((!created)); then
    left=$((deadline - $(now)))
    ((left > 0)) || left=1
    # Masters are the first three nodes given, each with one replica.
    if ! timeout "$left" redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes \
        >"$RCL_DIR/create.log" 2>&1 </dev/null; then
      fail_with_logs "redis-cli --cluster create failed or outlasted the ${UP_TIMEOUT}s; see $RCL_DIR/create.log (run up again, which finishes a create cut short; if it fails the same way, $0 down --cluster first)" \
        "$RCL_DIR/create.log" "$RCL_DIR/${RCL_PORTS[0]}/redis.log"
    fi
  fi
  local shape
  until shape="$(rcl_shape)" && [[ $shape == "3 3 $RCL_NODES" ]]; do
    rcl_attach_replicas
    rcl_alive_or_fail "${RCL_PORTS[0]}" "$deadline" \
      "see 3 masters with a replica each (masters with slots, of them with a replica, nodes: ${shape:-none})"
    sleep 0.2
  done
  for port in "${RCL_PORTS[@]}"; do
    until rcl_ready "$port"; do
      rcl_alive_or_fail "$port" "$deadline" "reach cluster_state:ok (or, a replica, a link to its master)"
      sleep 0.2
    done
  done
  echo "redis-cluster: $LOCAL_HOST:${RCL_PORTS[0]}-${RCL_PORTS[-1]}, 3 masters with a replica each ($RCL_STATE)"
}

stop_redis_cluster() {
  stop_group redis-cluster 20 rcl_pid "${RCL_PORTS[@]}" || return 1
  rm -f "$RCL_DIR"/*/redis.pid
}

# ---------------------------------------------------- clusters: Sentinel

RSN_NAMES=(primary replica sentinel-1 sentinel-2 sentinel-3)
RSN_SENTINELS=(sentinel-1 sentinel-2 sentinel-3)

rsn_port() {
  case "$1" in
    primary) echo "$RSN_PRIMARY_PORT" ;;
    replica) echo "$RSN_REPLICA_PORT" ;;
    sentinel-*) echo $((RSN_PORT + ${1#sentinel-} - 1)) ;;
  esac
}

rsn_port_var() {
  case "$1" in
    primary) echo XMIRROR_REDIS_SENTINEL_PRIMARY_PORT ;;
    replica) echo XMIRROR_REDIS_SENTINEL_REPLICA_PORT ;;
    *) echo "XMIRROR_REDIS_SENTINEL_PORT (the first of 3 ports in a row)" ;;
  esac
}

rsn_pid() { redis_port_pid "$RSN_DIR/$1/redis.pid" "$(rsn_port "$1")"; }
rsn_addrs() { local n out=(); for n in "${RSN_SENTINELS[@]}"; do out+=("$LOCAL_HOST:$(rsn_port "$n")"); done; local IFS=,; echo "${out[*]}"; }

write_sentinel_conf() {
  local d=$1 port=$2
  # Quorum 2 of 3; a primary unreachable for 5 s is down (the default, 30 s,
  # is longer than most tests).
  cat >"$d/sentinel.conf" <<EOF
# Written by scripts/services.sh when missing; the sentinel rewrites it.
bind $LOCAL_HOST
port $port
daemonize no
logfile $d/redis.log
dir $d
sentinel monitor $RSN_MASTER $LOCAL_HOST $RSN_PRIMARY_PORT 2
sentinel down-after-milliseconds $RSN_MASTER 5000
sentinel failover-timeout $RSN_MASTER 30000
sentinel parallel-syncs $RSN_MASTER 1
EOF
}

# start_redis_sentinel: start the primary, the replica and the sentinels
# that do not run (ours); RSN_STATE says whether any was started.
start_redis_sentinel() {
  local n name d port
  ensure_cmds redis-server:redis-server
  n="$(count_running rsn_pid "${RSN_NAMES[@]}")"
  if ((n == ${#RSN_NAMES[@]})); then
    RSN_STATE=reused
    return 0
  fi
  RSN_STATE=started
  # None runs: a new set-up (the sentinels' files would bring back the
  # last one's roles, and its data is gone).
  if ((n == 0)); then rm -rf "$RSN_DIR"; fi
  for name in "${RSN_NAMES[@]}"; do
    rsn_pid "$name" >/dev/null && continue
    d="$RSN_DIR/$name"
    port="$(rsn_port "$name")"
    mkdir -p "$d"
    case "$name" in
      primary | replica)
        # The replica follows the primary it was started with; after a
        # failover the sentinels repoint whichever of the two comes back.
        local follow=()
        if [[ $name == replica ]]; then follow=(--replicaof "$LOCAL_HOST" "$RSN_PRIMARY_PORT"); fi
        launch "$d/redis.pid" "$d/redis.out" \
          redis-server --bind "$LOCAL_HOST" --port "$port" --daemonize no \
          --logfile "$d/redis.log" --dir "$d" --save '' --appendonly no "${follow[@]}"
        ;;
      *)
        # A sentinel rewrites its file (the replicas and sentinels it
        # found, the primary after a failover): written only when missing.
        [[ -s $d/sentinel.conf ]] || write_sentinel_conf "$d" "$port"
        launch "$d/redis.pid" "$d/redis.out" redis-server "$d/sentinel.conf" --sentinel
        ;;
    esac
  done
}

# rsn_pair_ready: of the primary and the replica, the one the sentinels
# name master is one, and the other is its replica, in sync. (Whichever of
# the two restarts after a failover comes back a master; the sentinels
# turn it into the replica.)
rsn_pair_ready() {
  local master mport name port out
  master="$(rsn_master_addr)" || return 1
  mport=${master##*:}
  for name in primary replica; do
    port="$(rsn_port "$name")"
    out="$(rcli "$port" info replication)" || return 1
    if [[ $port == "$mport" ]]; then
      [[ $out == *role:master* ]] || return 1
    else
      [[ $out == *role:slave* && $out == *master_port:$mport* && $out == *master_link_status:up* ]] || return 1
    fi
  done
}

# rsn_sentinel_ready NAME: the sentinel sees the primary up, a replica and
# the two other sentinels.
rsn_sentinel_ready() {
  local out kv k flags="" replicas=0 others=0
  out="$(rcli "$(rsn_port "$1")" sentinel master "$RSN_MASTER")" || return 1
  # One field or value a line, field first.
  mapfile -t kv <<<"${out//$'\r'/}"
  for ((k = 0; k + 1 < ${#kv[@]}; k += 2)); do
    case "${kv[k]}" in
      flags) flags=${kv[k + 1]} ;;
      num-slaves) replicas=${kv[k + 1]} ;;
      num-other-sentinels) others=${kv[k + 1]} ;;
    esac
  done
  [[ $flags == master ]] && ((replicas >= 1 && others == 2))
}

# rsn_alive_or_fail NAME DEADLINE WHAT
rsn_alive_or_fail() {
  local name=$1 deadline=$2 what=$3 d="$RSN_DIR/$1" addr
  addr="$LOCAL_HOST:$(rsn_port "$name")"
  rsn_pid "$name" >/dev/null ||
    fail_with_logs "redis-sentinel $name $addr (redis-server) exited during start-up; see $d/redis.log" \
      "$d/redis.log" "$d/redis.out"
  (($(now) < deadline)) ||
    fail_with_logs "redis-sentinel $name $addr did not $what within ${UP_TIMEOUT}s; see $d/redis.log" \
      "$d/redis.log"
}

# rsn_master_addr: host:port of the primary as the first sentinel that
# answers names it.
rsn_master_addr() {
  local name out
  for name in "${RSN_SENTINELS[@]}"; do
    out="$(rcli "$(rsn_port "$name")" sentinel get-master-addr-by-name "$RSN_MASTER")" || continue
    out="${out//$'\r'/}"
    [[ $out == *$'\n'* ]] || continue
    echo "${out%%$'\n'*}:${out#*$'\n'}"
    return 0
  done
  return 1
}

# wait_redis_sentinel DEADLINE
wait_redis_sentinel() {
  local deadline=$1 name
  for name in primary replica; do
    until [[ "$(rcli "$(rsn_port "$name")" ping)" == PONG ]]; do
      rsn_alive_or_fail "$name" "$deadline" "answer PING"
      sleep 0.1
    done
  done
  for name in "${RSN_SENTINELS[@]}"; do
    # Sentinels find each other through the primary every 2 s.
    until rsn_sentinel_ready "$name"; do
      rsn_alive_or_fail "$name" "$deadline" "see master $RSN_MASTER up with a replica and 2 other sentinels"
      sleep 0.3
    done
  done
  until rsn_pair_ready; do
    for name in primary replica; do
      rsn_alive_or_fail "$name" "$deadline" \
        "become, with the other, master $RSN_MASTER (as the sentinels name it) and its replica in sync"
    done
    sleep 0.3
  done
  echo "redis-sentinel: master $RSN_MASTER at $(rsn_master_addr), sentinels $(rsn_addrs) ($RSN_STATE)"
}

stop_redis_sentinel() {
  stop_group redis-sentinel 20 rsn_pid "${RSN_NAMES[@]}" || return 1
  rm -f "$RSN_DIR"/*/redis.pid
}

# ------------------------------------------------------ clusters: Kafka

KCL_IDS=(1 2 3)

kcl_dir() { echo "$KCL_DIR/node-$1"; }
kcl_port() { echo $((KCL_PORT + $1 - 1)); }
kcl_controller_port() { echo $((KCL_CONTROLLER_PORT + $1 - 1)); }
kcl_pid() { owned_pid "$(kcl_dir "$1")/kafka.pid" "kafka.Kafka $(kcl_dir "$1")/server.properties"; }
kcl_brokers() { local id out=(); for id in "${KCL_IDS[@]}"; do out+=("$LOCAL_HOST:$(kcl_port "$id")"); done; local IFS=,; echo "${out[*]}"; }

write_kcl_props() {
  local id=$1 d voters="" v
  d="$(kcl_dir "$id")"
  for v in "${KCL_IDS[@]}"; do voters+="${voters:+,}$v@$LOCAL_HOST:$(kcl_controller_port "$v")"; done
  mkdir -p "$d/data"
  cat >"$d/server.properties" <<EOF
# Generated by scripts/services.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=$id
listeners=PLAINTEXT://$LOCAL_HOST:$(kcl_port "$id"),CONTROLLER://$LOCAL_HOST:$(kcl_controller_port "$id")
advertised.listeners=PLAINTEXT://$LOCAL_HOST:$(kcl_port "$id")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
# A static quorum of the three nodes' controllers.
controller.quorum.voters=$voters
log.dirs=$d/data

# Three replicas of everything, two of them in sync for a write: one
# broker can be lost without losing an acknowledged record or refusing
# acks=all writes.
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
# Three partitions instead of 50: the group and transaction coordinators
# spread over the brokers, and the first group or transactional producer
# does not wait for 150 replicas to be created.
offsets.topic.num.partitions=3
transaction.state.log.num.partitions=3

num.partitions=1
group.initial.rebalance.delay.ms=0
# xmirror must create its topics explicitly; a typo must not create one.
auto.create.topics.enable=false
# Three brokers on 2 cores.
num.network.threads=1
num.io.threads=2
num.replica.fetchers=1
EOF
}

# start_kafka_cluster: start the nodes that do not run (ours), formatting
# the storage of any that never ran; KCL_STATE says whether any was started.
start_kafka_cluster() {
  local n id d opts=("${KCL_JVM_OPTS_DEFAULT[@]}") formats=()
  n="$(count_running kcl_pid "${KCL_IDS[@]}")"
  if ((n == ${#KCL_IDS[@]})); then
    KCL_STATE=reused
    return 0
  fi
  KCL_STATE=started
  ensure_kafka_lib
  ensure_cmds openssl:openssl
  mkdir -p "$KCL_DIR"
  if [[ ! -s $KCL_DIR/cluster-id ]]; then
    # As for the secured broker: what `StorageTool random-uuid` prints.
    local cid=-
    while [[ $cid == -* ]]; do cid="$(openssl rand 16 | b64url)"; done
    echo "$cid" >"$KCL_DIR/cluster-id"
  fi
  for id in "${KCL_IDS[@]}"; do
    kcl_pid "$id" >/dev/null && continue
    d="$(kcl_dir "$id")"
    write_kcl_props "$id"
    if [[ ! -f $d/data/meta.properties ]]; then
      # The three at once: each is a JVM of its own.
      kafka_tool kafka.tools.StorageTool format -t "$(<"$KCL_DIR/cluster-id")" -c "$d/server.properties" \
        >"$d/format.log" 2>&1 9>&- &
      formats+=("$id:$!")
    fi
  done
  local f
  for f in "${formats[@]}"; do
    d="$(kcl_dir "${f%%:*}")"
    wait "${f#*:}" ||
      fail_with_logs "formatting the storage of kafka-cluster node ${f%%:*} failed; see $d/format.log" "$d/format.log"
  done
  if [[ -n ${XMIRROR_KAFKA_CLUSTER_JVM_OPTS:-} ]]; then
    read -r -a opts <<<"$XMIRROR_KAFKA_CLUSTER_JVM_OPTS"
  fi
  for id in "${KCL_IDS[@]}"; do
    kcl_pid "$id" >/dev/null && continue
    d="$(kcl_dir "$id")"
    echo "==== $(date -u +%FT%TZ) services.sh starting kafka.Kafka" >>"$d/kafka.out"
    launch "$d/kafka.pid" "$d/kafka.out" \
      java "${opts[@]}" -Dkafka.logs.dir="$d" -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
      -cp "$KAFKA_LIB/*" kafka.Kafka "$d/server.properties"
  done
}

# kcl_answers ID: the node's broker lists all three brokers (each shows up
# only once it has caught up with the metadata log and is unfenced).
kcl_answers() {
  local out
  port_open "$LOCAL_HOST" "$(kcl_port "$1")" || return 1
  out="$(timeout 7 kcat -L -b "$LOCAL_HOST:$(kcl_port "$1")" -m 2 2>/dev/null)" || return 1
  (($(grep -cE '^ *broker [0-9]+ at ' <<<"$out") == ${#KCL_IDS[@]}))
}

# wait_kafka_cluster DEADLINE
wait_kafka_cluster() {
  local deadline=$1 id d
  for id in "${KCL_IDS[@]}"; do
    d="$(kcl_dir "$id")"
    until kcl_answers "$id"; do
      kcl_pid "$id" >/dev/null ||
        fail_with_logs "kafka-cluster node $id (java) exited during start-up; see $d/server.log and kafka.out" \
          "$d/server.log" "$d/kafka.out"
      (($(now) < deadline)) ||
        fail_with_logs "kafka-cluster node $id at $LOCAL_HOST:$(kcl_port "$id") did not list the ${#KCL_IDS[@]} brokers within ${UP_TIMEOUT}s; see $d/server.log" \
          "$d/server.log" "$d/kafka.out"
      sleep 0.5
    done
  done
  echo "kafka-cluster: $(kcl_brokers), controllers $LOCAL_HOST:$(kcl_controller_port 1)-$(kcl_controller_port "${KCL_IDS[-1]}") ($KCL_STATE)"
}

stop_kafka_cluster() {
  # All at once: stopped one by one, the last two would wait for a
  # controller quorum that is gone.
  stop_group kafka-cluster 60 kcl_pid "${KCL_IDS[@]}" || return 1
  rm -f "$KCL_DIR"/node-*/kafka.pid
}

# check_cluster_ports: dies at once when a port of a cluster server that is
# not ours is taken (another checkout's, say).
check_cluster_ports() {
  local port name id
  for port in "${RCL_PORTS[@]}"; do
    rcl_pid "$port" >/dev/null && continue
    need_free_port "redis-cluster node" "$port" "$RCL_PORT_VAR"
    need_free_port "redis-cluster bus" $((port + 10000)) "$RCL_PORT_VAR"
  done
  for name in "${RSN_NAMES[@]}"; do
    rsn_pid "$name" >/dev/null || need_free_port "redis-sentinel $name" "$(rsn_port "$name")" "$(rsn_port_var "$name")"
  done
  for id in "${KCL_IDS[@]}"; do
    kcl_pid "$id" >/dev/null && continue
    need_free_port "kafka-cluster broker $id" "$(kcl_port "$id")" \
      "XMIRROR_KAFKA_CLUSTER_PORT (the first of 3 ports in a row)"
    need_free_port "kafka-cluster controller $id" "$(kcl_controller_port "$id")" \
      "XMIRROR_KAFKA_CLUSTER_CONTROLLER_PORT (the first of 3 ports in a row)"
  done
}

start_clusters() {
  start_redis_cluster
  start_redis_sentinel
  start_kafka_cluster
}

# wait_clusters DEADLINE: the Redis ones first, while the brokers start.
wait_clusters() {
  wait_redis_cluster "$1"
  wait_redis_sentinel "$1"
  wait_kafka_cluster "$1"
}

stop_clusters() {
  stop_redis_cluster || echo "redis-cluster: not running"
  stop_redis_sentinel || echo "redis-sentinel: not running"
  stop_kafka_cluster || echo "kafka-cluster: not running"
}

# status_clusters ASKED: a line for each group asked for or running; exit 1
# if one asked for does not answer in full.
status_clusters() {
  local asked=$1 rc=0 n ans port name id ok
  n="$(count_running rcl_pid "${RCL_PORTS[@]}")"
  if ((asked || n)); then
    ok=0
    for port in "${RCL_PORTS[@]}"; do if rcl_ready "$port"; then ok=$((ok + 1)); fi; done
    if ((ok == RCL_NODES)); then ans="answers, cluster_state:ok on every node"; else ans="$ok of $RCL_NODES nodes ready"; fi
    ((asked && ok < RCL_NODES)) && rc=1
    echo "redis-cluster: $(rcl_nodes) $ans; $(group_owner "$n" "$RCL_NODES" "$(pids_of rcl_pid "${RCL_PORTS[@]}")")"
  fi
  n="$(count_running rsn_pid "${RSN_NAMES[@]}")"
  if ((asked || n)); then
    ok=0
    for name in "${RSN_SENTINELS[@]}"; do if rsn_sentinel_ready "$name"; then ok=$((ok + 1)); fi; done
    if ((ok == 3)) && rsn_pair_ready; then
      ans="answers, master $RSN_MASTER at $(rsn_master_addr) with its replica in sync"
    else
      ans="$ok of 3 sentinels see master $RSN_MASTER ready"
      if ((ok == 3)); then ans="3 sentinels see master $RSN_MASTER ready, but its replica is not in sync"; fi
      ok=0
    fi
    ((asked && ok < 3)) && rc=1
    echo "redis-sentinel: sentinels $(rsn_addrs) $ans; $(group_owner "$n" "${#RSN_NAMES[@]}" "$(pids_of rsn_pid "${RSN_NAMES[@]}")")"
  fi
  n="$(count_running kcl_pid "${KCL_IDS[@]}")"
  if ((asked || n)); then
    ok=0
    for id in "${KCL_IDS[@]}"; do if kcl_answers "$id"; then ok=$((ok + 1)); fi; done
    if ((ok == ${#KCL_IDS[@]})); then ans="answers, 3 brokers"; else ans="$ok of 3 brokers list all 3"; fi
    ((asked && ok < ${#KCL_IDS[@]})) && rc=1
    echo "kafka-cluster: $(kcl_brokers) $ans; $(group_owner "$n" "${#KCL_IDS[@]}" "$(pids_of kcl_pid "${KCL_IDS[@]}")")"
  fi
  return "$rc"
}

# group_owner RUNNING TOTAL PIDS
group_owner() {
  if (($1 == 0)); then
    echo "not running (start it with: $0 up --cluster)"
  elif (($1 == $2)); then
    echo "started by services.sh, pids $3"
  else
    echo "$1 of $2 processes started by services.sh run, pids $3"
  fi
}

# ---------------------------------------------------------------- common

# Servers are launched as
#   setsid nohup bash -c 'echo $$ >PIDFILE; exec SERVER...' ... 9>&- &
# setsid + nohup: the server must outlive this script and the terminal or CI
# step that ran it, and must not get that terminal's Ctrl-C. The inner shell
# writes its own pid and then execs the server, so the recorded pid is the
# server's whatever setsid does about forking. 9>&-: the server must not
# inherit our lock fd (take_lock), or it would hold the lock forever.
wait_pidfile() {
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -s $1 ]] && return 0
    sleep 0.1
  done
  die "no pid was written to $1"
}

# alive PID: the process exists and is not a zombie. (Daemons end up as
# children of PID 1, and not every PID 1 reaps promptly, so `kill -0` alone
# would call an exited server alive.)
alive() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }" # the command name in (...) may contain spaces
  [[ ${stat%% *} != [ZX] ]]
}

# wait_exit PID NAME SECONDS: wait for a process we signalled; SIGKILL it
# if it outstays its welcome.
wait_exit() {
  local pid=$1 name=$2 secs=$3 i
  for ((i = 0; i < secs * 10; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
  log "$name (pid $pid) did not exit within ${secs}s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
  die "$name (pid $pid) survived SIGKILL"
}

# Serialises up/down/restart between concurrent callers (e.g. parallel test
# jobs that each run `up`). The lock is released when this script exits.
LOCKED=0
take_lock() {
  ((LOCKED)) && return 0
  mkdir -p "$STATE_DIR"
  exec 9>"$STATE_DIR/.lock"
  flock 9
  LOCKED=1
}

# ---------------------------------------------------------------- commands

cmd_up() {
  local secure=0 cluster=0 plain=1 arg
  for arg in "$@"; do
    case "$arg" in
      --secure) secure=1 ;;
      --cluster) cluster=1 ;;
      --cluster-only) cluster=1 plain=0 ;;
      *) die "up takes only --secure, --cluster or --cluster-only, got '$arg'" ;;
    esac
  done
  if ((secure && !plain)); then die "--cluster-only starts the clusters alone; use --secure --cluster for both"; fi
  take_lock
  ensure_client_tools
  local redis_state kafka_state deadline
  # Before anything starts: a port taken by someone else fails at once.
  if ((secure)); then
    check_tls_redis_ports
    check_ksec_ports
  fi
  if ((cluster)); then check_cluster_ports; fi

  if ((plain)); then
    if ((REDIS_EXTERNAL)); then
      redis_state=external
    elif redis_answers; then
      redis_state=reused
    elif redis_pid >/dev/null; then
      # Ours and alive but not answering yet (still loading a snapshot, or
      # another caller is starting it): wait for it like for a fresh start.
      redis_state=started
      REDIS_STARTED=1
    else
      redis_state=started
      start_redis
    fi

    if ((KAFKA_EXTERNAL)); then
      kafka_state=external
    elif kafka_answers 5; then
      kafka_state=reused
    elif kafka_pid >/dev/null; then
      # Ours and alive but not answering yet: another `up` or a restart is
      # still starting it (or it hangs); wait for it like for a fresh start.
      kafka_state=started
      KAFKA_STARTED=1
    else
      kafka_state=started
      start_kafka
    fi
  fi

  # The secured servers and the clusters start while the plain ones do;
  # all are waited for below.
  if ((secure)); then
    start_tls_redis_servers
    start_kafka_secure
  fi
  if ((cluster)); then start_clusters; fi

  # The timeout counts from here: package installs and the first jar
  # download are not the servers' fault.
  deadline=$(($(now) + UP_TIMEOUT))
  if ((plain)); then
    wait_redis "$deadline"
    wait_kafka "$deadline"
    forget_redis_snapshot

    echo "redis: $(redis_display "$REDIS_TARGET") ($redis_state)"
    echo "kafka: $KAFKA_TARGET ($kafka_state)"
  fi
  if ((secure)); then
    wait_tls_redis "$deadline"
    wait_kafka_secure "$deadline"
  fi
  if ((cluster)); then wait_clusters "$deadline"; fi
}

cmd_down() {
  case "${1:-}" in
    --cluster)
      take_lock
      stop_clusters
      return 0
      ;;
    "") ;;
    *) die "down takes only --cluster, got '$1'" ;;
  esac
  take_lock
  local pid
  if pid="$(redis_pid)"; then
    stop_redis nosave
    echo "redis: stopped (pid $pid)"
  else
    echo "redis: not started by services.sh; left alone"
  fi
  if pid="$(kafka_pid)"; then
    stop_kafka
    echo "kafka: stopped (pid $pid)"
  else
    echo "kafka: not started by services.sh; left alone"
  fi
  local name
  for name in redis-tls redis-mtls; do
    if pid="$(tls_pid "$name")"; then
      kill -TERM "$pid" 2>/dev/null || true
      wait_exit "$pid" "$name" 20
      rm -f "$TLS_DIR/$name.pid"
      echo "$name: stopped (pid $pid)"
    fi
  done
  stop_kafka_secure || true
  stop_redis_cluster || true
  stop_redis_sentinel || true
  stop_kafka_cluster || true
}

cmd_status() {
  local secure=0 cluster=0 arg
  for arg in "$@"; do
    case "$arg" in
      --secure) secure=1 ;;
      --cluster) cluster=1 ;;
      *) die "status takes only --secure or --cluster, got '$arg'" ;;
    esac
  done
  if ! command -v redis-cli >/dev/null || ! command -v kcat >/dev/null; then
    echo "redis-cli/kcat not installed (run: $0 up)"
    return 1
  fi
  local rc=0 ans owner pid
  if redis_answers; then ans=answers; else ans="does not answer"; rc=1; fi
  if ((REDIS_EXTERNAL)); then owner="external (REDIS_URL)"
  elif pid="$(redis_pid)"; then owner="started by services.sh, pid $pid"
  elif [[ $ans == answers ]]; then owner="not started by services.sh"
  else owner="not running"; fi
  echo "redis: $(redis_display "$REDIS_TARGET") $ans; $owner"

  if kafka_answers 3; then ans=answers; else ans="does not answer"; rc=1; fi
  if ((KAFKA_EXTERNAL)); then owner="external (KAFKA_BROKERS)"
  elif pid="$(kafka_pid)"; then owner="started by services.sh, pid $pid"
  elif [[ $ans == answers ]]; then owner="not started by services.sh"
  else owner="not running"; fi
  echo "kafka: $KAFKA_TARGET $ans; $owner"

  local name
  for name in redis-tls redis-mtls; do
    pid=""
    tls_pid "$name" >/dev/null && pid="$(tls_pid "$name")"
    # Shown when asked for or running: most runs never start them.
    ((secure)) || [[ -n $pid ]] || continue
    if tls_answers "$name"; then
      ans=answers
    else
      ans="does not answer"
      if ((secure)); then rc=1; fi
    fi
    if [[ -n $pid ]]; then owner="started by services.sh, pid $pid"
    elif [[ $ans == answers ]]; then owner="not started by services.sh"
    else owner="not running (start it with: $0 up --secure)"; fi
    echo "$name: $LOCAL_HOST:$(tls_port "$name") $ans; $owner"
  done

  pid=""
  ksec_pid >/dev/null && pid="$(ksec_pid)"
  if ((secure)) || [[ -n $pid ]]; then
    if ksec_answers; then
      ans=answers
    else
      ans="does not answer"
      if ((secure)); then rc=1; fi
    fi
    if [[ -n $pid ]]; then owner="started by services.sh, pid $pid"
    elif [[ $ans == answers ]]; then owner="not started by services.sh"
    else owner="not running (start it with: $0 up --secure)"; fi
    echo "kafka-secure: $KSEC_ADMIN (SASL_SSL $KSEC_SASL_PORT, SSL $KSEC_MTLS_PORT, OAUTHBEARER $KSEC_OAUTH_PORT) $ans; $owner"
  fi
  status_clusters "$cluster" || rc=1
  return "$rc"
}

cmd_env() {
  printf 'export REDIS_URL=%q\n' "$REDIS_TARGET"
  printf 'export KAFKA_BROKERS=%q\n' "$KAFKA_TARGET"
  if tls_pid redis-tls >/dev/null && tls_pid redis-mtls >/dev/null; then
    printf 'export REDIS_TLS_URL=%q\n' "rediss://$LOCAL_HOST:$REDIS_TLS_PORT/0"
    printf 'export REDIS_MTLS_URL=%q\n' "rediss://$LOCAL_HOST:$REDIS_MTLS_PORT/0"
    printf 'export REDIS_TLS_DIR=%q\n' "$TLS_DIR"
  fi
  if ksec_pid >/dev/null; then
    printf 'export KAFKA_SASL_BROKERS=%q\n' "$LOCAL_HOST:$KSEC_SASL_PORT"
    printf 'export KAFKA_MTLS_BROKERS=%q\n' "$LOCAL_HOST:$KSEC_MTLS_PORT"
    printf 'export KAFKA_OAUTH_BROKERS=%q\n' "$LOCAL_HOST:$KSEC_OAUTH_PORT"
    printf 'export KAFKA_SECURE_ADMIN_BROKERS=%q\n' "$KSEC_ADMIN"
    printf 'export KAFKA_SECURE_DIR=%q\n' "$KSEC_DIR"
  fi
  # The clusters: while any of their processes runs (ours); the URL names a
  # node that runs.
  local port
  for port in "${RCL_PORTS[@]}"; do
    if rcl_pid "$port" >/dev/null; then
      printf 'export REDIS_CLUSTER_URL=%q\n' "redis://$LOCAL_HOST:$port"
      printf 'export REDIS_CLUSTER_NODES=%q\n' "$(rcl_nodes)"
      break
    fi
  done
  if [[ "$(count_running rsn_pid "${RSN_NAMES[@]}")" != 0 ]]; then
    printf 'export REDIS_SENTINEL_ADDRS=%q\n' "$(rsn_addrs)"
    printf 'export REDIS_SENTINEL_MASTER=%q\n' "$RSN_MASTER"
  fi
  if [[ "$(count_running kcl_pid "${KCL_IDS[@]}")" != 0 ]]; then
    printf 'export KAFKA_CLUSTER_BROKERS=%q\n' "$(kcl_brokers)"
  fi
}

check_name() {
  case "${1:-}" in
    redis | kafka) ;;
    *) die "expected redis or kafka, got '${1:-}'" ;;
  esac
}

cmd_pid() {
  check_name "${1:-}"
  "${1}_pid" || { echo "services.sh: $1 is not running under services.sh" >&2; return 1; }
}

# Fault-test helpers: they only touch servers this script started.
require_owned_or_stopped() {
  local name=$1
  if [[ $name == redis ]] && ((REDIS_EXTERNAL)); then die "redis is external (REDIS_URL); not managed here"; fi
  if [[ $name == kafka ]] && ((KAFKA_EXTERNAL)); then die "kafka is external (KAFKA_BROKERS); not managed here"; fi
}

cmd_stop() {
  local name=${1:-}
  check_name "$name"
  require_owned_or_stopped "$name"
  take_lock
  local pid
  pid="$("${name}_pid")" || die "$name is not running under services.sh; nothing to stop"
  if [[ $name == redis ]]; then stop_redis save; else stop_kafka; fi
  echo "$name: stopped (pid $pid)"
}

cmd_start() {
  local name=${1:-}
  check_name "$name"
  require_owned_or_stopped "$name"
  take_lock
  ensure_client_tools
  if [[ $name == redis ]]; then
    if redis_answers; then
      echo "redis: $(redis_display "$REDIS_TARGET") (already running)"
      return 0
    fi
    if redis_pid >/dev/null; then REDIS_STARTED=1; else start_redis; fi
    wait_redis $(($(now) + UP_TIMEOUT))
    forget_redis_snapshot
    echo "redis: $(redis_display "$REDIS_TARGET") (started, pid $(redis_pid))"
  else
    if kafka_answers 5; then
      echo "kafka: $KAFKA_TARGET (already running)"
      return 0
    fi
    if kafka_pid >/dev/null; then KAFKA_STARTED=1; else start_kafka; fi
    wait_kafka $(($(now) + UP_TIMEOUT))
    echo "kafka: $KAFKA_TARGET (started, pid $(kafka_pid))"
  fi
}

cmd_restart() {
  local name=${1:-}
  check_name "$name"
  require_owned_or_stopped "$name"
  "${name}_pid" >/dev/null || die "$name is not running under services.sh; refusing to restart it"
  take_lock
  cmd_stop "$name"
  cmd_start "$name"
}

cmd_kafka_topics() {
  ensure_client_tools
  ensure_kafka_lib
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_TARGET" "$@"
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

main() {
  local cmd=${1:-}
  shift || true
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    env) cmd_env ;;
    pid) cmd_pid "$@" ;;
    stop | start | restart) "cmd_$cmd" "$@" ;;
    stop-redis | stop-kafka | start-redis | start-kafka | restart-redis | restart-kafka)
      "cmd_${cmd%%-*}" "${cmd#*-}" ;;
    kafka-topics) cmd_kafka_topics "$@" ;;
    -h | --help | help | "") usage ;;
    *) echo "services.sh: unknown command '$cmd'" >&2; usage ;;
  esac
}

main "$@"
