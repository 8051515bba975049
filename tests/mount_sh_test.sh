#!/usr/bin/env bash
# The README's first command, tested as a user meets it: `./mount.sh DIR` on an account
# with no Cubby configuration (a fresh HOME) builds, starts a local server, logs in and
# mounts; files round-trip; running it again is harmless; `--stop` unmounts and stops
# the server; mounting again finds the files. With someone else's server on the address,
# it says so and never logs in there; run again, it restarts a local server or a mount
# that died, with nothing lost; `--status` says what runs; `--stop` stops a local
# server restarted by hand and leaves no pid file. Also: an explicit CUBBY_LISTEN fails clearly, its own
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
foreign_pid= manual_pid=
cleanup() {
  set +e
  [ -n "$manual_pid" ] && kill "$manual_pid" 2>/dev/null
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

# Recovery. The client is on the PATH by a link in ~/.local/bin.
[ -L "$home/.local/bin/cubby" ] && "$home/.local/bin/cubby" --version >/dev/null ||
  fail "cubby is not linked into ~/.local/bin"
client() { HOME="$home" "$home/.local/bin/cubby" "$@"; }
state_dir=$home/.local/state/cubby
gone() { ! [ -e "/proc/$1" ] || grep -q '^[0-9]* (.*) Z' "/proc/$1/stat"; }
synced() {
  for _ in $(seq 300); do
    client status "$home/Cubby" --json | python3 -c 'import json,sys; s = json.load(sys.stdin); sys.exit(0 if s["online"] and s["queue_depth"] == 0 else 1)' && return 0
    sleep 0.1
  done
  fail "the mount did not sync: $(client status "$home/Cubby")"
}
# The local server dies under a live mount; what is written meanwhile waits.
server_pid=$(cat "$state_dir/server.pid")
kill -9 "$server_pid"
for _ in $(seq 50); do gone "$server_pid" && break; sleep 0.1; done
echo "written while the server was down" >"$home/Cubby/offline.txt"
out=$(run "$home/Cubby" 2>&1) || fail "running again with the server dead failed: $out"
echo "$out" | grep -q "local server: down; starting it again" || fail "the dead server was not said: $out"
echo "$out" | grep -q "already mounted" || fail "the live mount was not kept: $out"
curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" || fail "the server was not started again"
synced
client download /offline.txt "$home/offline.copy" >/dev/null
[ "$(cat "$home/offline.copy")" = "written while the server was down" ] ||
  fail "the file written while the server was down did not reach it"
# The mount's daemon dies: the folder is gone (or answers ENOTCONN) until mount.sh
# mounts it again.
mount_pid=$(cat "$state_dir"/mount-*.pid)
kill -9 "$mount_pid"
for _ in $(seq 50); do gone "$mount_pid" && break; sleep 0.1; done
out=$(run "$home/Cubby" 2>&1) || fail "running again with the daemon dead failed: $out"
# (With auto_unmount the folder is unmounted as the daemon dies; without, it hangs.)
echo "$out" | grep -q -e "its daemon is gone" -e "its daemon died" || fail "the dead daemon was not said: $out"
[ "$(cat "$home/Cubby/offline.txt")" = "written while the server was down" ] ||
  fail "the folder did not come back after its daemon died"
out=$(run --status "$home/Cubby")
echo "$out" | grep -q "local server: running" || fail "--status did not show the server: $out"
echo "$out" | grep -q "mount: $home/Cubby is mounted" || fail "--status did not show the mount: $out"
# A server restarted by hand on the same data directory is the one --stop stops.
server_pid=$(cat "$state_dir/server.pid")
kill "$server_pid"
for _ in $(seq 50); do gone "$server_pid" && break; sleep 0.1; done
"$repo/target/release/cubby-server" serve --data "$home/.local/share/cubby-server" \
  --listen "127.0.0.1:$port" >/dev/null 2>&1 &
manual_pid=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
out=$(run --stop "$home/Cubby")
echo "$out" | grep -q "stopped the local server (pid $manual_pid)" || fail "--stop missed the server restarted by hand: $out"
gone "$manual_pid" || fail "the server restarted by hand still runs after --stop"
[ ! -e "$state_dir/server.pid" ] || fail "--stop left a pid file"
manual_pid=
out=$(run --status "$home/Cubby")
echo "$out" | grep -q "local server: down" || fail "--status after --stop: $out"
echo "$out" | grep -q "is not mounted" || fail "--status after --stop: $out"
echo "mount.sh: a dead server and a dead daemon restored, a hand-started server stopped"

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
