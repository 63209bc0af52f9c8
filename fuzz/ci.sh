#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each) from the committed seeds, in a
# fresh corpus (so the time does not grow with a local fuzz/corpus/ of earlier runs). Needs a nightly toolchain; installs cargo-fuzz
# if it is missing (about a minute); without nightly it prints a note and succeeds.
# Usage: fuzz/ci.sh [seconds per target]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: no nightly toolchain; skipping the fuzz targets (rustup toolchain install nightly)"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  if ! cargo install cargo-fuzz --locked --quiet; then
    echo "fuzz: cargo-fuzz could not be installed; skipping the fuzz targets"
    exit 0
  fi
fi

# The session target's servers live in temporary directories: keep them in one place.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Debug assertions (and so overflow checks) on; no sanitizer: the crates forbid unsafe code.
flags=(-a -s none)
cargo +nightly fuzz build "${flags[@]}"
for target in decode_client decode_server session session_ops; do
  mkdir -p "$tmp/corpus/$target"
  log="$tmp/$target.log"
  # session_ops reads structured operations: no seeds from the vectors (it starts empty).
  seeds=()
  if [ -d "seeds/$target" ]; then seeds=("seeds/$target"); fi
  if ! TMPDIR="$tmp" cargo +nightly fuzz run "${flags[@]}" "$target" "$tmp/corpus/$target" "${seeds[@]}" -- \
    -dict=msgpack.dict -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $target failed; the input is in fuzz/artifacts/$target/"
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  echo "fuzz: $target: ${runs:-?} inputs in ${secs} s, no failure"
done
