#!/usr/bin/env bash
# Same-hour A/B of one roomd build with auth off and on (an HS256 token whose `rooms` claim
# every request is checked against), alternating, beside nats-server: fan-out deliveries and
# CPU per delivery, and durable publish. Permission checks run at subscribe and publish, never
# per delivery, so fan-out should not move. Prints the medians side by side.
# Usage: [ROUNDS=2] bash bench/scripts/auth-ab.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${ROUNDS:-2}
out=$(mktemp -d)
cargo build --release -q -p roomd --bin roomd
cargo build --release -q -p roomd-bench
bench=target/release/roomd-bench
secret=$(head -c 32 /dev/urandom | base64 | tr -d '=+/' | head -c 40)
printf '[auth]\njwt_secret = "%s"\n' "$secret" >"$out/auth.toml"
token=$(target/release/roomd token --config "$out/auth.toml" --user bench --ttl 1d \
  --room 'bench:never=sub' --room '*=sub,pub,hist,state.read,state.write,presence')
extra="[auth]\\njwt_secret = \"$secret\""
for round in $(seq "$rounds"); do
  for which in off on; do
    echo "round $round: auth $which" >&2
    args=()
    [ "$which" = on ] && args=(--roomd-extra-toml "$extra" --roomd-token "$token")
    "$bench" "${args[@]}" --brokers roomd,nats --subs 100,1000 --pubs 1 --sizes 64,1024 \
      --duration 3 --json-out "$out/$which.jsonl" fanout >/dev/null
    "$bench" "${args[@]}" --brokers roomd --concurrency 64 --modes durable \
      --duration 3 --json-out "$out/$which.jsonl" durable >/dev/null
  done
done
python3 - "$out/off.jsonl" "$out/on.jsonl" <<'PY'
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
off, on = load(sys.argv[1]), load(sys.argv[2])
print("| cell | auth off | auth on | on/off | CPU off | CPU on | CPU on/off | nats (off run, on run) |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for key in sorted({k for k, b in off if b == "roomd"}):
    med = lambda rows, i: st.median(r[i] for r in rows)
    a, b = off[(key, "roomd")], on[(key, "roomd")]
    nats = ""
    if (key, "nats") in off:
        nats = f"{med(off[(key, 'nats')], 0):,.0f}, {med(on[(key, 'nats')], 0):,.0f}"
    print(f"| {key} | {med(a,0):,.0f} | {med(b,0):,.0f} | {med(b,0)/med(a,0):.2f} | "
          f"{med(a,1):.3f} | {med(b,1):.3f} | {med(b,1)/med(a,1):.2f} | {nats} |")
PY
echo "raw: $out" >&2
