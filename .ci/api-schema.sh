#!/usr/bin/env bash
# The server API against its own OpenAPI document: schemathesis (PyPI) generates valid and
# invalid requests for every operation from /api/openapi.json and checks every response
# (status documented, body matching its schema, bad input refused with 4xx, no 5xx, auth
# enforced), against the real release binary on a loopback port with a temp data dir.
#
# Checks left out, and why:
# - positive_data_acceptance: "schema-valid requests get 2xx" cannot hold for limits the schema
#   does not express (payload bytes, keys per room, mid bytes, incr on a non-integer: 413, 422).
# - use_after_free: a deleted state key reads as `ver: 0` (SPEC.md 4.5; what `cas` with ver 0
#   needs), and a deleted message stays in history as a tombstone: both by design.
set -euo pipefail
cd "$(dirname "$0")/.."

ST_VERSION=4.32.5
if ! st --version 2>/dev/null | grep -q "$ST_VERSION"; then
  pip install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
fi

work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
key=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat >"$work/roomd.toml" <<TOML
[server]
listen = "127.0.0.1:0"
data_dir = "$work/data"
[[api.keys]]
name = "schemathesis"
key = "$key"
scopes = ["publish", "read", "state", "presence", "admin"]
TOML
target/release/roomd --config "$work/roomd.toml" >"$work/out" 2>"$work/log" &
pid=$!
for _ in $(seq 100); do
  grep -q '^listening on ' "$work/out" && break
  sleep 0.1
done
base=$(sed -n 's/^listening on //p' "$work/out")
[ -n "$base" ] || { echo "roomd did not start:"; cat "$work/log"; exit 1; }

# One worker: with two threads, CPython 3.11's ast module (which hypothesis calls to describe its
# strategies) fails now and then with "AST constructor recursion depth mismatch", an error of
# the tool, not of the API. About 20 s.
st run "$base/api/openapi.json" \
  -H "Authorization: Bearer $key" \
  --checks all --exclude-checks positive_data_acceptance,use_after_free \
  --max-examples 50 --workers 1 --generation-database none \
  --no-color
