#!/usr/bin/env bash
# Cubby as a folder, in one command.
#
#   ./mount.sh DIR          build (when needed), start a local server on the embedded
#                           defaults when none is configured, log in, and mount DIR
#   ./mount.sh --stop DIR   unmount DIR and stop what this script started
#
# Safe to run again: an existing mount or server is reused. State it creates:
#   ~/.config/cubby/config.json        server and token (mode 0600)
#   ~/.local/share/cubby-server/       the local server's data (SQLite + blobs)
#   ~/.local/state/cubby/              pid files, logs, the local user's password
set -euo pipefail

root=$(cd "$(dirname "$0")" && pwd)
state=${XDG_STATE_HOME:-$HOME/.local/state}/cubby
config=${CUBBY_CONFIG:-${XDG_CONFIG_HOME:-$HOME/.config}/cubby/config.json}
server_data=${CUBBY_DATA:-${XDG_DATA_HOME:-$HOME/.local/share}/cubby-server}
bin=$root/target/release
# The local server's address: CUBBY_LISTEN when given; else the one this script chose
# before (kept in $state/server.listen); else 127.0.0.1:8420, or a free port when
# something else answers there.
explicit_listen=${CUBBY_LISTEN:-}
listen=${CUBBY_LISTEN:-$(cat "$state/server.listen" 2>/dev/null || echo 127.0.0.1:8420)}

die() { echo "mount.sh: $*" >&2; exit 1; }
usage() { echo "usage: $0 DIR | $0 --stop DIR" >&2; exit 2; }

stop=false
case "${1:-}" in
  --stop) stop=true; shift ;;
  -h|--help|"") usage ;;
esac
[ $# -eq 1 ] || usage
mkdir -p "$state"
chmod 700 "$state"

is_mounted() { awk -v d="$1" '$2 == d { found = 1 } END { exit !found }' /proc/mounts; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
key_of() { printf '%s' "$1" | sha256sum | cut -c1-16; }

if $stop; then
  dir=$(realpath -m "$1")
  key=$(key_of "$dir")
  if is_mounted "$dir"; then
    if command -v fusermount3 >/dev/null; then fusermount3 -u "$dir" || umount "$dir"; else umount "$dir"; fi
    echo "unmounted $dir"
  else
    echo "$dir is not mounted"
  fi
  if alive "$state/mount-$key.pid"; then kill "$(cat "$state/mount-$key.pid")" || true; fi
  rm -f "$state/mount-$key.pid"
  # Stop the local server when this script started it and no mount of ours remains.
  if alive "$state/server.pid" && ! ls "$state"/mount-*.pid >/dev/null 2>&1; then
    kill "$(cat "$state/server.pid")" && echo "stopped the local server"
    rm -f "$state/server.pid"
  fi
  exit 0
fi

# What the mount needs from the machine.
[ -e /dev/fuse ] || die "/dev/fuse is missing: load FUSE (sudo modprobe fuse)"
[ -r /dev/fuse ] && [ -w /dev/fuse ] || die "no permission on /dev/fuse: add yourself to the 'fuse' group, or run as root"
if [ "$(id -u)" -ne 0 ] && ! command -v fusermount3 >/dev/null; then
  die "fusermount3 is missing: sudo apt-get install fuse3"
fi
command -v cargo >/dev/null || die "cargo is missing: install Rust (https://rustup.rs)"

dir=$(realpath -m "$1")
key=$(key_of "$dir")
if is_mounted "$dir"; then
  echo "$dir is already mounted"
  exit 0
fi
mkdir -p "$dir"

echo "building (release)..."
(cd "$root" && cargo build --release --workspace --bins --quiet)

healthy() { curl -sf -o /dev/null "http://$listen/healthz"; }
answers() { curl -s -o /dev/null "http://$listen/"; } # anything at all listens there

# Starts the local server unless the one this script started runs. Never takes a
# server it did not start for its own: another one on the address is said, and (unless
# CUBBY_LISTEN asked for that address) the local server gets a free port instead.
start_server() {
  if alive "$state/server.pid" && healthy; then return 0; fi
  local bind=$listen
  if answers; then
    [ -z "$explicit_listen" ] ||
      die "something else answers on $listen, not a server this script started; stop it or set CUBBY_LISTEN to a free address"
    echo "another server answers on $listen (not one this script started); the local server takes a free port"
    bind=127.0.0.1:0
  fi
  echo "starting a local server (data in $server_data)"
  mkdir -p "$server_data"
  : >"$state/server.out"
  # A local, loopback-only server. The mount renews its own login token.
  nohup "$bin/cubby-server" serve --data "$server_data" --listen "$bind" \
    >"$state/server.out" 2>>"$state/server.log" &
  echo $! >"$state/server.pid"
  for _ in $(seq 100); do
    bound=$(sed -n 's/^cubby-server listening on //p' "$state/server.out")
    if [ -n "$bound" ]; then
      listen=$bound
      echo "$listen" >"$state/server.listen"
      for _ in $(seq 50); do healthy && { echo "local server on $listen"; return 0; }; sleep 0.1; done
    fi
    alive "$state/server.pid" || break
    sleep 0.1
  done
  die "the server did not start; see $state/server.log"
}

# Logs in to the local server as the local user (created on first use).
local_login() {
  user=${USER:-$(id -un)}
  password_file="$state/local-password"
  if [ ! -f "$password_file" ]; then
    (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$password_file")
    "$bin/cubby-server" user add "$user" --data "$server_data" <"$password_file" >/dev/null \
      || die "could not create the local user $user"
  fi
  "$bin/cubby" --config "$config" login --server "http://$listen" --username "$user" \
    --password-stdin <"$password_file" || die "could not log in to the local server on $listen"
}

if [ ! -f "$config" ]; then
  start_server
  local_login
elif alive "$state/server.pid" || [ -f "$state/local-password" ]; then
  # Our own local server: make sure it runs, and log in again if it moved (or the
  # login predates renewable ones).
  start_server
  if ! grep -q "\"http://$listen\"" "$config" || ! grep -q '"refresh_token"' "$config"; then
    local_login
  fi
fi

nohup "$bin/cubby" --config "$config" mount "$dir" >>"$state/mount-$key.log" 2>&1 &
echo $! >"$state/mount-$key.pid"
for _ in $(seq 100); do
  if is_mounted "$dir"; then
    echo "Cubby is mounted at $dir (stop with: $0 --stop $dir)"
    exit 0
  fi
  alive "$state/mount-$key.pid" || break
  sleep 0.1
done
rm -f "$state/mount-$key.pid"
tail -n 20 "$state/mount-$key.log" >&2
die "mounting $dir failed; see $state/mount-$key.log"
