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
python3 - "$out/old.jsonl" "$out/new.jsonl" <<'PY'
import json, statistics as st, sys
def load(p):
    rows = {}
    for line in open(p):
        d = json.loads(line)
        if d["scenario"] == "fanout":
            key = f"fanout subs={d['subs']} pubs={d['pubs']} size={d['size']}"
            val = (d["deliveries_per_s"], d["server_cpu_s_per_1m_deliveries"])
        else:
            key = f"durable concurrency={d['concurrency']}"
            val = (d["acks_per_s"], d["server_cpu_us_per_ack"])
        rows.setdefault((key, d["broker"]), []).append(val)
    return rows
old, new = load(sys.argv[1]), load(sys.argv[2])
print("| cell | roomd old | roomd new | new/old | roomd/nats old | roomd/nats new | CPU old | CPU new |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for key in sorted({k for k, b in old if b == "roomd"}):
    med = lambda rows, i: st.median(r[i] for r in rows)
    o, n = old[(key, "roomd")], new[(key, "roomd")]
    no, nn = old[(key, "nats")], new[(key, "nats")]
    print(f"| {key} | {med(o,0):,.0f} | {med(n,0):,.0f} | {med(n,0)/med(o,0):.2f} | "
          f"{med(o,0)/med(no,0):.2f} | {med(n,0)/med(nn,0):.2f} | {med(o,1):.3f} | {med(n,1):.3f} |")
PY
