#!/bin/bash
# Instructions roomd executes per published message, counted by valgrind's callgrind: a figure
# that does not move with the machine's load, for comparing two builds on a noisy machine.
#
#   bench/scripts/callgrind-per-publish.sh [ROOMD_BIN] [durable|relaxed]
#
# Runs `roomd-bench durable` with 64 publishers against roomd under callgrind. Counting starts
# 4 s after roomd does (past start-up and warm-up); the message count is the difference of
# roomd_messages_published_total over the same span. Checkpoints are spaced 20 s apart, as at
# full speed (roomd under callgrind is ~40x slower, so its 500 ms checkpoints would each hold
# 40x fewer messages). Kernel time is not counted: this is the user-space share of the cost.
# Prints the total and the share of the connection tasks, the room tasks and the writer thread.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${1:-$root/target/release/roomd}
mode=${2:-durable}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/wrap.sh" <<WRAP
#!/bin/bash
prev=""; for a in "\$@"; do [ "\$prev" = "--config" ] && cfg=\$a; prev=\$a; done
sed -i "s/^\\[storage\\]/[storage]\\ncheckpoint_interval_ms = 20000/" "\$cfg"
valgrind --tool=callgrind --callgrind-out-file=$work/cg.out "\$@" 2>>$work/valgrind.log &
pid=\$!
( sleep 3
  port=\$(ss -ltnp | grep "pid=\$pid," | awk '{print \$4}' | sed 's/.*://' | head -1)
  sleep 1
  callgrind_control -z \$pid >/dev/null 2>&1
  curl -s http://127.0.0.1:\$port/metrics | grep '^roomd_messages_published_total' > $work/m1
  while kill -0 \$pid 2>/dev/null; do
    curl -s http://127.0.0.1:\$port/metrics | grep '^roomd_messages_published_total' > $work/m.tmp && mv $work/m.tmp $work/m2
    sleep 0.5
  done ) &
wait \$pid
WRAP
chmod +x "$work/wrap.sh"
"$root/target/release/roomd-bench" durable --brokers roomd --concurrency 64 --modes "$mode" \
    --duration 6 --roomd-bin "$bin" --roomd-wrapper "$work/wrap.sh" >/dev/null
sleep 1
m1=$(awk '{s+=$2} END{print s}' "$work/m1")
m2=$(awk '{s+=$2} END{print s}' "$work/m2")
msgs=$((m2 - m1))
callgrind_annotate --inclusive=yes "$work/cg.out" 2>/dev/null | awk -v n="$msgs" -v bin="$bin" '
  /PROGRAM TOTALS/ { gsub(",", "", $1); total = $1 }
  /roomd::connection::run::\{\{closure\}\} \[/ { gsub(",", "", $1); conn = $1 }
  /roomd::room::actor::run::\{\{closure\}\} \[/ { gsub(",", "", $1); room = $1 }
  /roomd::store::writer::Writer::run \[/ { gsub(",", "", $1); writer = $1 }
  END {
    printf "%s: %d messages; instructions per message: %.0f (connection tasks %.0f, room tasks %.0f, writer thread %.0f, other %.0f)\n",
      bin, n, total / n, conn / n, room / n, writer / n, (total - conn - room - writer) / n
  }'
