#!/usr/bin/env bash
# Same-hour A/B of two roomd builds: fan-out and durable publish, alternating the builds (the
# VM's speed drifts), each run beside nats-server; prints the medians side by side.
# Usage: OLD=/path/to/old/roomd NEW=/path/to/new/roomd [ROUNDS=2] bash bench/scripts/ab.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OLD:?set OLD to the old roomd binary}" "${NEW:?set NEW to the new roomd binary}"
rounds=${ROUNDS:-2}
out=$(mktemp -d)
cargo build --release -p roomd-bench -q
bench=target/release/roomd-bench
for round in $(seq "$rounds"); do
  for which in old new; do
    bin=$OLD; [ "$which" = new ] && bin=$NEW
    echo "round $round: $which" >&2
    "$bench" --roomd-bin "$bin" --brokers roomd,nats --subs 100,1000 --pubs 1,4 --sizes 64,1024 \
      --duration 3 --json-out "$out/$which.jsonl" fanout >/dev/null
    "$bench" --roomd-bin "$bin" --brokers roomd,nats --concurrency 1,64 --modes durable \
      --duration 3 --json-out "$out/$which.jsonl" durable >/dev/null
  done
done
python3 bench/scripts/ab_table.py "$out/old.jsonl" "$out/new.jsonl" old new
