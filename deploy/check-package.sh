#!/usr/bin/env bash
# Builds roomd's .deb from the release binary, installs it with dpkg, runs the installed
# /usr/bin/roomd with the installed /etc/roomd/roomd.toml as the roomd user, checks /readyz and a
# graceful SIGTERM stop, verifies the systemd unit, then removes and purges the package and
# leaves the machine as it found it. Also checks deploy/roomd.toml against config/roomd.toml,
# the Prometheus rules (promtool) and the Grafana dashboard (JSON, and that every metric they
# name is one roomd exports).
#
# Needs root on Debian 12 (as CI is); systemd need not be running. Called by .ci/run; by hand:
#   sudo bash deploy/check-package.sh             (runs cargo build --release --bin roomd first)
#   sudo bash deploy/check-package.sh --no-build  (packages target/release/roomd as it is: CI's,
#                                                  built and tested by cargo test --release)
# Installs what it lacks: cargo-deb (cargo install, about 2-3 min once) and promtool (taken out
# of Debian's prometheus package into ~/.cache/roomd-ci, without installing the Prometheus
# server or starting anything).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

CARGO_DEB_VERSION=3.8.0
start=$SECONDS
step() { echo "== check-package: $* (at $((SECONDS - start)) s)"; }
fail() { echo "check-package: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (dpkg -i, a system user)"
if dpkg-query -W -f='${Status}' roomd 2>/dev/null | grep -q 'installed'; then
  fail "a roomd package is installed on this machine already; not touching it"
fi

step "deploy/roomd.toml is config/roomd.toml with only data_dir changed"
bash deploy/config-copy.sh

step "tools"
if ! cargo deb --version 2>/dev/null | grep -q .; then
  t=$SECONDS
  cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
  echo "cargo-deb installed in $((SECONDS - t)) s"
fi
if command -v promtool >/dev/null 2>&1; then
  promtool=promtool
else
  tools=${XDG_CACHE_HOME:-$HOME/.cache}/roomd-ci
  promtool=$tools/promtool
  if [ ! -x "$promtool" ]; then
    t=$SECONDS
    dl=$(mktemp -d)
    # Only the promtool binary: installing the package would pull the Prometheus server in
    # and its init script would start it.
    if ! (cd "$dl" && apt-get download -q prometheus >/dev/null 2>&1); then
      apt-get update -q >/dev/null
      (cd "$dl" && apt-get download -q prometheus >/dev/null) || fail "cannot download Debian's prometheus package"
    fi
    mkdir -p "$tools"
    dpkg-deb --fsys-tarfile "$dl"/prometheus_*.deb | tar -x -O ./usr/bin/promtool >"$promtool.tmp"
    chmod 755 "$promtool.tmp" && mv "$promtool.tmp" "$promtool"
    rm -rf "$dl"
    echo "promtool extracted from Debian's prometheus package in $((SECONDS - t)) s"
  fi
fi

step "Prometheus rules and Grafana dashboard"
"$promtool" check rules deploy/prometheus-rules.yml
"$promtool" test rules deploy/prometheus-rules.test.yml
python3 -m json.tool deploy/grafana-dashboard.json >/dev/null
python3 - deploy/grafana-dashboard.json <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
ids = [p["id"] for p in d["panels"]]
assert len(ids) == len(set(ids)), "duplicate panel ids"
for p in d["panels"]:
    assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]
print(f"grafana-dashboard.json: {len(ids)} panels")
PY

step "build the .deb (from target/release/roomd)"
if [ "${1:-}" != --no-build ]; then cargo build --release --bin roomd; fi
[ -x target/release/roomd ] || fail "no target/release/roomd: build it first"
deb=$(cargo deb --no-build --fast | tail -n 1)
[ -f "$deb" ] || fail "cargo deb produced no package"
echo "$deb ($(du -h "$deb" | cut -f1))"
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'
dpkg-deb --contents "$deb"

# Everything below is undone on exit, whatever happens: our roomd stopped, the package purged,
# and the roomd user and /var/lib/roomd deleted if this script created them.
work=$(mktemp -d)
had_user=no; getent passwd roomd >/dev/null && had_user=yes
had_data=no; [ -e /var/lib/roomd ] && had_data=yes
pid=
cleanup() {
  status=$?
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" || true; fi
  if dpkg-query -W -f='${Status}' roomd 2>/dev/null | grep -q 'ok'; then dpkg --purge roomd >/dev/null || true; fi
  [ "$had_data" = yes ] || rm -rf /var/lib/roomd
  if [ "$had_user" = no ] && getent passwd roomd >/dev/null; then
    deluser --system --quiet roomd >/dev/null 2>&1 || userdel roomd || true
    getent group roomd >/dev/null && { delgroup --system --quiet roomd >/dev/null 2>&1 || groupdel roomd || true; }
  fi
  rm -rf "$work"
  exit $status
}
trap cleanup EXIT

step "dpkg -i (twice: the maintainer scripts are idempotent)"
dpkg -i "$deb"
dpkg -i "$deb"
[ -x /usr/bin/roomd ] || fail "/usr/bin/roomd missing"
dpkg-query -W -f='${Conffiles}\n' roomd | grep -q '^ */etc/roomd/roomd.toml ' || fail "/etc/roomd/roomd.toml is not a conffile"
cmp deploy/roomd.toml /etc/roomd/roomd.toml || fail "installed config differs from deploy/roomd.toml"
unit=/usr/lib/systemd/system/roomd.service
cmp deploy/roomd.service "$unit" || fail "installed unit differs from deploy/roomd.service"
getent passwd roomd | awk -F: '$3 >= 1000 { exit 1 }' || fail "roomd is not a system user"
[ "$(stat -c '%U:%G %a' /var/lib/roomd)" = "roomd:roomd 750" ] || fail "/var/lib/roomd: $(stat -c '%U:%G %a' /var/lib/roomd)"
[ "$(stat -c '%U:%G %a' /etc/roomd/roomd.toml)" = "root:roomd 640" ] || fail "/etc/roomd/roomd.toml: $(stat -c '%U:%G %a' /etc/roomd/roomd.toml)"
if [ ! -d /run/systemd/system ] && pgrep -u roomd >/dev/null; then
  fail "the package started roomd on a machine without systemd"
fi

step "the unit's stop timeout covers the config's lame duck + shutdown timeout"
# As systemd would run it: user roomd, cwd /, an empty environment. (exec: $! is roomd itself.)
as_roomd=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin setpriv --reuid=roomd --regid=roomd --init-groups --)
as_roomd() { (cd / && exec "${as_roomd[@]}" "$@"); }
as_roomd /usr/bin/roomd check-config /etc/roomd/roomd.toml >"$work/effective.toml"
ms() { sed -n "s/^$1 = \([0-9]*\)$/\1/p" "$work/effective.toml"; }
need=$(( ($(ms shutdown_timeout_ms) + $(ms lame_duck_ms)) / 1000 ))
have=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\?$/\1/p' "$unit")
[ -n "$have" ] && [ "$have" -gt "$need" ] || fail "TimeoutStopSec=$have is not above ${need}s"
echo "TimeoutStopSec=${have}s > lame_duck_ms + shutdown_timeout_ms = ${need}s"

step "run the installed roomd as the roomd user"
(cd / && exec "${as_roomd[@]}" /usr/bin/roomd --config /etc/roomd/roomd.toml --listen 127.0.0.1:0) \
  >"$work/out" 2>"$work/err" &
pid=$!
addr=
for _ in $(seq 100); do
  addr=$(sed -n 's|^listening on http://||p' "$work/out")
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/err" >&2; fail "roomd exited at start"; }
  sleep 0.1
done
[ -n "$addr" ] || { cat "$work/err" >&2; fail "roomd did not start within 10 s"; }
[ "$(ps -o user= -p "$pid")" = roomd ] || fail "roomd is not running as roomd"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/readyz")
[ "$code" = 200 ] || fail "/readyz answered $code"
echo "/readyz 200 on $addr"
[ -f /var/lib/roomd/roomd.redb ] && [ "$(stat -c %U /var/lib/roomd/roomd.redb)" = roomd ] \
  || fail "no roomd-owned database in /var/lib/roomd"
# Every metric the alerts and the dashboard name must be one roomd exports.
curl -s "http://$addr/metrics" >"$work/metrics"
python3 - "$work/metrics" deploy/prometheus-rules.yml deploy/grafana-dashboard.json <<'PY'
import re, sys
exported = set()
for line in open(sys.argv[1]):
    if line.strip() and not line.startswith("#"):
        name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
        exported.add(name)
used = set()
for f in sys.argv[2:]:
    used |= set(re.findall(r"\b((?:roomd|process)_[a-z_]+)", open(f).read()))
missing = sorted(used - exported)
assert not missing, f"named in rules or dashboard but not exported: {missing}"
print(f"{len(used)} metric names in the rules and dashboard, all exported")
PY
kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
pid=
[ "$rc" = 0 ] || { cat "$work/err" >&2; fail "roomd exited $rc after SIGTERM"; }
echo "SIGTERM: roomd exited 0"

step "systemd-analyze verify $unit"
# Its exit status ignores some problems, so any line about our unit counts as an error.
va=0; systemd-analyze verify "$unit" >"$work/verify" 2>&1 || va=$?
cat "$work/verify"
if [ "$va" != 0 ] || grep -q 'roomd' "$work/verify"; then fail "systemd-analyze verify"; fi

step "dpkg -r keeps the data, the config and the user; dpkg --purge removes the config"
dpkg -r roomd
[ ! -e /usr/bin/roomd ] || fail "/usr/bin/roomd left after dpkg -r"
[ -f /var/lib/roomd/roomd.redb ] || fail "dpkg -r removed the data"
[ -f /etc/roomd/roomd.toml ] || fail "dpkg -r removed the conffile"
getent passwd roomd >/dev/null || fail "dpkg -r removed the roomd user"
dpkg --purge roomd
[ ! -e /etc/roomd ] || fail "/etc/roomd left after purge"
[ ! -e /etc/systemd/system/multi-user.target.wants/roomd.service ] || fail "unit still enabled after purge"
! dpkg-statoverride --list /etc/roomd/roomd.toml >/dev/null || fail "statoverride left after purge"
[ -f /var/lib/roomd/roomd.redb ] || fail "purge removed the data (it is kept by policy)"

step "ok"
