#!/usr/bin/env bash
# The README's first command, tested as a user meets it: `./mount.sh DIR` on an account
# with no Cubby configuration (a fresh HOME) builds, starts a local server, logs in and
# mounts; files round-trip; running it again is harmless; `--stop` unmounts and stops
# the server; mounting again finds the files. With someone else's server on the address,
# it says so and never logs in there: an explicit CUBBY_LISTEN fails clearly, its own
# remembered address moves to a free port. Cleans up what it started even on failure.
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
other=$(mktemp -d /tmp/cubby-mountsh-other.XXXXXX)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
run() { HOME="$home" USER=tester CUBBY_LISTEN="127.0.0.1:$port" "$repo/mount.sh" "$@"; }
foreign_pid=
cleanup() {
  set +e
  run --stop "$home/Cubby" >/dev/null 2>&1
  HOME="$other/home" "$repo/mount.sh" --stop "$other/home/Cubby" >/dev/null 2>&1
  for pidfile in "$home"/.local/state/cubby/*.pid "$other"/home/.local/state/cubby/*.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
  done
  [ -n "$foreign_pid" ] && kill "$foreign_pid" 2>/dev/null
  for d in "$home/Cubby" "$other/home/Cubby"; do
    awk -v d="$d" '$2 == d { f = 1 } END { exit !f }' /proc/mounts && umount -l "$d"
  done
  rm -rf "$home" "$other"
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

# Someone else's server (its own data, its own users) on an address mount.sh would use.
foreign=$(free_port)
"$repo/target/release/cubby-server" serve --data "$other/data" --listen "127.0.0.1:$foreign" \
  >"$other/foreign.log" 2>&1 &
foreign_pid=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$foreign/healthz" && break; sleep 0.1; done
mkdir -p "$other/home"
out=$(HOME="$other/home" USER=tester CUBBY_LISTEN="127.0.0.1:$foreign" \
  "$repo/mount.sh" "$other/home/Cubby" 2>&1) && fail "mount.sh used a server it did not start: $out"
echo "$out" | grep -q "something else answers on 127.0.0.1:$foreign" ||
  fail "an explicit address taken by another server was not said clearly: $out"
mkdir -p "$other/home/.local/state/cubby"
echo "127.0.0.1:$foreign" >"$other/home/.local/state/cubby/server.listen"
out=$(HOME="$other/home" USER=tester "$repo/mount.sh" "$other/home/Cubby" 2>&1) ||
  fail "mount.sh did not move off a taken address: $out"
echo "$out" | grep -q "another server answers on 127.0.0.1:$foreign" || fail "the taken address was not said: $out"
moved=$(cat "$other/home/.local/state/cubby/server.listen")
[ "$moved" != "127.0.0.1:$foreign" ] || fail "the local server did not get another port"
echo "own server" >"$other/home/Cubby/mine.txt"
[ "$(cat "$other/home/Cubby/mine.txt")" = "own server" ] || fail "the moved server's mount did not work"
HOME="$other/home" "$repo/mount.sh" --stop "$other/home/Cubby" >/dev/null
kill -0 "$foreign_pid" 2>/dev/null || fail "--stop stopped a server it did not start"
echo "mount.sh: another server on its address was said, and never used"
