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
python3 bench/scripts/ab_table.py "$out/off.jsonl" "$out/on.jsonl" off on
echo "raw: $out" >&2
