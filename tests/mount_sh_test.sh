#!/usr/bin/env bash
# The README's first command, tested as a user meets it: `./mount.sh DIR` on an account
# with no Cubby configuration (a fresh HOME) builds, starts a local server, logs in and
# mounts; files round-trip; running it again is harmless; `--stop` unmounts and stops
# the server; mounting again finds the files. Cleans up what it started even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

if [ ! -e /dev/fuse ]; then
  [ "${CI:-}" = "true" ] && { echo "mount.sh test: /dev/fuse is missing in CI" >&2; exit 1; }
  echo "skipped: /dev/fuse is missing"; exit 0
fi

export RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
export CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
home=$(mktemp -d /tmp/cubby-mountsh.XXXXXX)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run() { HOME="$home" USER=tester CUBBY_LISTEN="127.0.0.1:$port" "$repo/mount.sh" "$@"; }
cleanup() {
  set +e
  run --stop "$home/Cubby" >/dev/null 2>&1
  for pidfile in "$home"/.local/state/cubby/*.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
  done
  awk -v d="$home/Cubby" '$2 == d { f = 1 } END { exit !f }' /proc/mounts && umount -l "$home/Cubby"
  rm -rf "$home"
}
trap cleanup EXIT
fail() { echo "mount.sh test: $*" >&2; exit 1; }

run "$home/Cubby"
echo "hello from mount.sh" >"$home/Cubby/hello.txt"
mkdir -p "$home/Cubby/a/b"
[ "$(cat "$home/Cubby/hello.txt")" = "hello from mount.sh" ] || fail "file did not read back"
run "$home/Cubby" | grep -q "already mounted" || fail "a second run did not find the mount"
run --stop "$home/Cubby"
awk -v d="$home/Cubby" '$2 == d { f = 1 } END { exit f }' /proc/mounts || fail "still mounted after --stop"
! curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || fail "the server still answers after --stop"
run "$home/Cubby"
[ "$(cat "$home/Cubby/hello.txt")" = "hello from mount.sh" ] || fail "the file did not survive a restart"
[ -d "$home/Cubby/a/b" ] || fail "the directory did not survive a restart"
[ "$(stat -c %a "$home/.config/cubby/config.json")" = 600 ] || fail "config.json is not mode 600"
echo "mount.sh: mounted, used, stopped and mounted again"
