#!/usr/bin/env bash
# Installs and runs the real local servers that xmirror's tests, demo and
# benchmarks talk to: one Redis and one single-node KRaft Kafka broker.
#
#   scripts/services.sh up [--secure]  install what is missing, start or reuse both, wait until they answer;
#                                with --secure also the TLS Redis servers (below)
#   scripts/services.sh down     stop only the servers `up` started (reused/external ones are left alone)
#   scripts/services.sh status [--secure]  does each answer, and did we start it? exit 0 iff both
#                                answer (with --secure: and both TLS Redis servers too)
#   scripts/services.sh env      print `export REDIS_URL=...` / `export KAFKA_BROKERS=...`
#                                (and REDIS_TLS_URL, REDIS_MTLS_URL, REDIS_TLS_DIR while the TLS Redis runs)
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
# Data: Redis runs without persistence, so `down` + `up` gives an empty Redis.
# `stop redis`/`restart redis` save a snapshot first (SHUTDOWN SAVE) so a fault
# test can bounce Redis without losing its streams. Kafka keeps its log dirs in
# the state dir across down/up/restart; delete the state dir for a clean slate.
#
# Logs: <state>/redis/redis.log, <state>/kafka/server.log (+ kafka.out for the
# JVM's own stdout/stderr), <state>/redis-tls/redis-tls.log and redis-mtls.log.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"

STATE_DIR="${XMIRROR_STATE_DIR:-$REPO_ROOT/.local/services}"
KAFKA_LIB="${XMIRROR_KAFKA_LIB:-$REPO_ROOT/.local/kafka-lib}"
UP_TIMEOUT="${XMIRROR_UP_TIMEOUT:-120}"

KAFKA_POM="$SCRIPT_DIR/kafka/pom.xml"
KAFKA_LOG4J="$SCRIPT_DIR/kafka/log4j2.xml"
TOOLS_LOG4J="$SCRIPT_DIR/kafka/log4j2-tools.xml"

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
ACL_R2K="$ACL_COMMON +hgetall +hget +hset +hsetnx +hexists +hincrby +xreadgroup +xread +xack +xadd +xautoclaim +xclaim +xpending +xlen +xgroup|create +xgroup|setid +xinfo|stream +xinfo|groups +xinfo|consumers ~xmirror:lease:* ~xmirror:r2k:* ~xmirror:r2k-gap-hold:* $TLS_STREAMS"
ACL_K2R="$ACL_COMMON +watch +unwatch +hgetall +hget +hmget +hset +hsetnx +hexists +hdel +hkeys +hincrby +xadd +xrange +xlen +xdel +xsetid +xinfo|stream +blpop +lpush ~xmirror:lease:* ~xmirror:k2r:* ~xmirror:k2r-guard:* ~xmirror:k2r-order:* $TLS_STREAMS"
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
# Short-lived CLI tools: start fast, stay small.
TOOL_JVM_OPTS=(-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true)

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
      grep -Ev $'^[ \t]+(at |\\.\\.\\. [0-9]+ more)' "$f" | tail -n 30 >&2 || true
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

# up_tls_redis DEADLINE: start (or reuse) both TLS servers and wait for them.
up_tls_redis() {
  local deadline=$1 name state
  ensure_cmds redis-server:redis-server openssl:openssl
  for name in redis-tls redis-mtls; do
    if tls_pid "$name" >/dev/null; then
      state=reused
    else
      [[ $name == redis-tls ]] && make_tls_material
      start_tls_redis "$name"
      state=started
    fi
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
    echo "$name: $LOCAL_HOST:$(tls_port "$name") ($state)"
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
  local secure=0
  case "${1:-}" in
    --secure) secure=1 ;;
    "") ;;
    *) die "up takes only --secure, got '$1'" ;;
  esac
  take_lock
  ensure_client_tools
  local redis_state kafka_state deadline

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

  # The timeout counts from here: package installs and the first jar
  # download are not the servers' fault.
  deadline=$(($(now) + UP_TIMEOUT))
  wait_redis "$deadline"
  wait_kafka "$deadline"
  forget_redis_snapshot

  echo "redis: $(redis_display "$REDIS_TARGET") ($redis_state)"
  echo "kafka: $KAFKA_TARGET ($kafka_state)"
  if ((secure)); then
    up_tls_redis "$deadline"
  fi
}

cmd_down() {
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
}

cmd_status() {
  local secure=0
  case "${1:-}" in
    --secure) secure=1 ;;
    "") ;;
    *) die "status takes only --secure, got '$1'" ;;
  esac
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
    down) cmd_down ;;
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
