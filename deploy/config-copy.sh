#!/usr/bin/env bash
# deploy/roomd.toml is the config the .deb installs as /etc/roomd/roomd.toml: config/roomd.toml
# with only server.data_dir changed to /var/lib/roomd. This script keeps the two from drifting.
#   bash deploy/config-copy.sh          check (exit 1 with a diff when they differ otherwise)
#   bash deploy/config-copy.sh --write  regenerate deploy/roomd.toml from config/roomd.toml
set -euo pipefail
cd "$(dirname "$0")/.."

src=config/roomd.toml
dst=deploy/roomd.toml
generate() {
  # Exactly one `data_dir = ...` line (the one in [server]) must be in the source.
  if [ "$(grep -c '^data_dir = ' "$src")" != 1 ]; then
    echo "$src: expected exactly one 'data_dir = ' line" >&2
    exit 1
  fi
  sed 's|^data_dir = .*$|data_dir = "/var/lib/roomd"|' "$src"
}

if [ "${1:-}" = --write ]; then
  generate >"$dst"
  echo "wrote $dst"
elif ! diff -u "$dst" <(generate); then
  echo "$dst differs from $src in more than data_dir: run 'bash deploy/config-copy.sh --write'" >&2
  exit 1
fi
