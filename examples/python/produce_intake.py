#!/usr/bin/env python3
"""Write vectors to a hektor collection from Python with a plain Kafka client.

Any Kafka client can write to a collection's intake topic, ``hektor.<collection>.intake``,
with any partitioning: hektor reads it, checks every record like an HTTP write, and moves
it to its ring partition of ``hektor.<collection>.vectors``. Records are JSON with no
header (the same fields as the HTTP API's items, plus ``op`` and ``collection``):

    {"op": "upsert", "collection": "docs", "id": "a", "tenant": "t1",
     "vector": [0.1, 0.2, 0.3], "payload": {"title": "..."}}
    {"op": "delete", "collection": "docs", "id": "a", "tenant": "t1"}

Leave ``hlc`` out: hektor stamps each record from its Kafka timestamp and offset. The
key may be anything; keying by id keeps the writes of one id in order. Records that break
a rule (wrong dimension, bad id, ...) or are not JSON go to ``hektor.<collection>.deadletter``
with the reason in the header ``hektor-dlq-reason``.

Usage (the collection must exist, e.g. ``PUT /collections/docs``):

    pip install -r examples/python/requirements.txt
    python3 examples/python/produce_intake.py --brokers 127.0.0.1:9092 \\
        --collection docs --dimension 384 --count 1000 --tenants 3

It prints one JSON line: the ids written, each with its tenant, vector and payload.
With ``--poison`` it also writes two records hektor must dead-letter: an upsert with the
wrong dimension (id ``poison-dimension``) and a value that is not JSON (key
``poison-undecodable``).
"""

import argparse
import json
import random
import sys

from confluent_kafka import Producer


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", required=True, help="Kafka bootstrap servers, host:port[,...]")
    parser.add_argument("--collection", required=True, help="the hektor collection")
    parser.add_argument("--dimension", type=int, required=True, help="the collection's dimension")
    parser.add_argument("--count", type=int, default=100, help="vectors to write")
    parser.add_argument("--tenants", type=int, default=1, help="spread the vectors over this many tenants")
    parser.add_argument("--seed", type=int, default=7, help="seed of the random vectors")
    parser.add_argument("--prefix", default="py", help="ids are <prefix>-<n>")
    parser.add_argument("--poison", action="store_true", help="also write two poison records")
    return parser.parse_args()


def main():
    args = parse_args()
    topic = f"hektor.{args.collection}.intake"
    rng = random.Random(args.seed)
    producer = Producer({
        "bootstrap.servers": args.brokers,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
    })
    failures = []

    def delivered(err, msg):
        if err is not None:
            failures.append(f"{msg.key()!r}: {err}")

    written = []
    for n in range(args.count):
        record = {
            "op": "upsert",
            "collection": args.collection,
            "id": f"{args.prefix}-{n}",
            "tenant": f"tenant-{n % max(args.tenants, 1)}",
            # Away from zero so every vector has a cosine similarity.
            "vector": [round(rng.uniform(0.1, 1.0), 6) for _ in range(args.dimension)],
            "payload": {"n": n, "source": "produce_intake.py"},
        }
        # The client's default partitioner places it by key; hektor re-partitions by ring.
        producer.produce(topic, key=record["id"], value=json.dumps(record), on_delivery=delivered)
        producer.poll(0)
        written.append({k: record[k] for k in ("id", "tenant", "vector", "payload")})

    if args.poison:
        wrong = {
            "op": "upsert",
            "collection": args.collection,
            "id": "poison-dimension",
            "vector": [0.5] * (args.dimension + 1),
        }
        producer.produce(topic, key="poison-dimension", value=json.dumps(wrong), on_delivery=delivered)
        producer.produce(topic, key="poison-undecodable", value=b"\x00this is not json {", on_delivery=delivered)

    remaining = producer.flush(60)
    if remaining or failures:
        print(f"produce_intake: {remaining} records not delivered; errors: {failures}", file=sys.stderr)
        return 1
    print(json.dumps({"topic": topic, "written": written}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
