#!/usr/bin/env bash
# The README's demo: seed a sample Redis stream, mirror it into Kafka, read
# the records back with kcat, mirror the topic back into a new Redis stream
# and show both sides. Run through `make demo`, which starts the servers and
# builds bin/xmirror first.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
XMIRROR=${XMIRROR:-bin/xmirror}
export XMIRROR_REDIS=${REDIS_URL:-redis://127.0.0.1:6379/0}
export XMIRROR_BROKERS=${KAFKA_BROKERS:-127.0.0.1:9092}
broker=${XMIRROR_BROKERS%%,*}

# A fresh name per run: the demo never collides with an earlier one, and
# Kafka's asynchronous topic deletion never gets in the way.
run=$(date +%s)
stream="demo.orders.$run"
copy="demo.orders.copy.$run"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
redis() { redis-cli -u "$XMIRROR_REDIS" "$@"; }

step "check: both servers reachable"
"$XMIRROR" check

step "seed: 10 orders into the Redis stream $stream"
for i in $(seq 1 10); do
  redis XADD "$stream" '*' order "$i" customer "c$((i % 3))" amount "$((i * 7)).50" note "café №$i" >/dev/null
done
redis XRANGE "$stream" - + COUNT 2 | paste -d " " - - - - - - - - -

step "redis-to-kafka: mirror the stream into the topic $stream (one-shot)"
"$XMIRROR" redis-to-kafka --stream "$stream" --create-topic

step "kcat: what landed in Kafka"
kcat -C -b "$broker" -t "$stream" -e -q -f 'partition %p offset %o key=%k headers=%h\n  %s\n'

step "run it again: nothing new, nothing copied twice"
"$XMIRROR" redis-to-kafka --stream "$stream"

step "add order 11 to $stream and run again: only that entry is mirrored"
echo "added entry $(redis XADD "$stream" '*' order 11 customer c2 amount 77.00 note late)"
"$XMIRROR" redis-to-kafka --stream "$stream"

step "kafka-to-redis: mirror the topic back into the stream $copy (one-shot)"
"$XMIRROR" kafka-to-redis --topic "$stream" --stream "$copy" --preserve-ids
redis XRANGE "$copy" - + COUNT 2 | paste -d " " - - - - - - - - -
echo "source stream: $(redis XLEN "$stream") entries, copy: $(redis XLEN "$copy") entries"

step "xmirror's keys in Redis: checkpoints (hashes) and what else a run left"
redis --scan --pattern "xmirror:*$run*" | sort | while read -r key; do
  type=$(redis TYPE "$key")
  echo "$key ($type)"
  case $type in
  hash) redis HGETALL "$key" | paste - - ;;
  string) redis GET "$key" ;;
  list) echo "keeps a run's writes in order; expires within 10 s" ;;
  set) redis SMEMBERS "$key" ;;
  zset) redis ZRANGE "$key" 0 -1 WITHSCORES | paste - - ;;
  none) echo "(expired meanwhile)" ;;
  *) echo "(a $type)" ;;
  esac | sed 's/^/  /'
done
