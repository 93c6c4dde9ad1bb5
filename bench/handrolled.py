#!/usr/bin/env python3
"""A hand-rolled mirror, for comparison in `make bench`.

This is the script a careful user would write instead of running xmirror:
redis-py and confluent-kafka, batched, with no per-entry round trip. The
bench runs it on the same backlog as xmirror and reports xmirror's rate
divided by this script's, so a user can see what the script would reach.
It is honest, not a straw man: it batches as well as these clients allow,
and it gives the at-least-once guarantee such a script can give (an entry
is acknowledged only after Kafka confirmed it; a record's offset is
committed only after Redis has it), not xmirror's exactly-once.

    handrolled.py r2k --redis URL --brokers B --stream S --topic T --group G
    handrolled.py k2r --redis URL --brokers B --topic T --stream S --group G --records N

It prints one JSON line: {"records": N, "seconds": S}, S the time from the
first read to the last confirmation (the bench also times the process).
"""

import argparse
import json
import sys
import time

import redis
from confluent_kafka import Consumer, KafkaException, Producer

BATCH = 1000


def redis_to_kafka(args):
    r = redis.Redis.from_url(args.redis)
    try:
        r.xgroup_create(args.stream, args.group, id="0")
    except redis.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise
    producer = Producer({
        "bootstrap.servers": args.brokers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "queue.buffering.max.messages": 1_000_000,
    })
    failed = []

    def delivered(err, _msg):
        if err is not None:
            failed.append(err)

    records, start = 0, time.monotonic()
    while True:
        reply = r.xreadgroup(args.group, "handrolled", {args.stream: ">"}, count=BATCH)
        if not reply:
            break  # one-shot: the backlog is drained
        entries = reply[0][1]
        ids = []
        for entry_id, fields in entries:
            value = json.dumps({k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape") for k, v in fields.items()})
            producer.produce(args.topic, value=value.encode("utf-8", "surrogateescape"),
                             headers=[("xmirror.stream", args.stream), ("xmirror.id", entry_id)],
                             on_delivery=delivered)
            ids.append(entry_id)
        producer.flush()  # every record of the batch confirmed (acks=all)
        if failed:
            raise KafkaException(failed[0])
        r.xack(args.stream, args.group, *ids)
        records += len(ids)
    return records, time.monotonic() - start


def kafka_to_redis(args):
    r = redis.Redis.from_url(args.redis)
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    consumer.subscribe([args.topic])
    records, start, idle_since = 0, None, time.monotonic()
    while records < args.records:
        msgs = consumer.consume(BATCH, timeout=1.0)
        if not msgs:
            if time.monotonic() - idle_since > 60:
                raise SystemExit(f"handrolled k2r: {records} of {args.records} records after a minute without any")
            continue
        if start is None:
            start = time.monotonic()
        idle_since = time.monotonic()
        pipe = r.pipeline(transaction=False)
        n = 0
        for m in msgs:
            if m.error():
                raise KafkaException(m.error())
            fields = json.loads(m.value())
            pipe.xadd(args.stream, fields)
            n += 1
        pipe.execute()
        consumer.commit(asynchronous=False)  # only once Redis has the batch
        records += n
    consumer.close()
    return records, time.monotonic() - (start or time.monotonic())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("direction", choices=["r2k", "k2r"])
    p.add_argument("--redis", required=True)
    p.add_argument("--brokers", required=True)
    p.add_argument("--stream", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--records", type=int, default=0, help="k2r: stop after this many records")
    args = p.parse_args()
    if args.direction == "r2k":
        records, seconds = redis_to_kafka(args)
    else:
        records, seconds = kafka_to_redis(args)
    print(json.dumps({"records": records, "seconds": seconds}))


if __name__ == "__main__":
    sys.exit(main())
