#!/usr/bin/env bash
# How long a restarted roomd takes to answer the first `sub` of a large room (#19): fill one
# room with N messages published without `mid`, kill -9, restart, and time `sub` -> `subbed`,
# once warm and once with the page cache dropped (root). Needs `npm ci` in sdk-js (ws, msgpack).
# Usage: bash bench/scripts/room-load/run.sh [ROOMD_BINARY] [N]   (default target/release/roomd, 500000)
set -u
here=$(dirname "$0")
bin=$(realpath "${1:-$here/../../../target/release/roomd}"); n=${2:-500000}
cd "$here"
dir=$(mktemp -d); port=$((20000 + RANDOM % 20000))
cat >"$dir/roomd.toml" <<T
[server]
listen = "127.0.0.1:$port"
data_dir = "$dir/data"
T
start() {
  "$bin" --config "$dir/roomd.toml" >"$dir/out" 2>"$dir/err" &
  pid=$!
  for _ in $(seq 200); do grep -q listening "$dir/out" 2>/dev/null && break; sleep 0.05; done
}
stop() { kill -9 "$pid"; wait "$pid" 2>/dev/null; }
start
node fill.mjs "ws://127.0.0.1:$port/ws" "$n"
stop
start; node sub.mjs "ws://127.0.0.1:$port/ws" | sed 's/^/warm (after kill -9): /'; stop
sync; echo 3 >/proc/sys/vm/drop_caches
start; node sub.mjs "ws://127.0.0.1:$port/ws" | sed 's/^/cold (page cache dropped): /'; stop
du -sh "$dir/data" | sed 's/^/data: /'
rm -rf "$dir"
