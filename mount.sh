#!/usr/bin/env bash
# Cubby as a folder, in one command.
#
#   ./mount.sh DIR            build (when needed), start a local server on the embedded
#                             defaults when none is configured, log in, and mount DIR
#   ./mount.sh --status DIR   say which parts run: the local server, the mount, sync
#   ./mount.sh --stop DIR     unmount DIR and stop the local server (once no mount of
#                             this script's is left)
#
# Safe to run again, and the way to recover: each part (server, login, mount) is
# checked, what runs is kept and what is down is started again (a local server that
# died, a mount whose daemon died). State it creates:
#   ~/.config/cubby/config.json        server and token (mode 0600)
#   ~/.local/share/cubby-server/       the local server's data (SQLite + blobs)
#   ~/.local/state/cubby/              pid files, logs, the local user's password
#   ~/.local/bin/cubby                 a link to the client, for `cubby status DIR`
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
usage() { echo "usage: $0 DIR | $0 --status DIR | $0 --stop DIR" >&2; exit 2; }

action=mount
case "${1:-}" in
  --stop) action=stop; shift ;;
  --status) action=status; shift ;;
  -h|--help|"") usage ;;
esac
[ $# -eq 1 ] || usage
mkdir -p "$state"
chmod 700 "$state"

is_mounted() { awk -v d="$1" '$2 == d { found = 1 } END { exit !found }' /proc/mounts; }
alive() { [ -f "$1" ] && runs "$(cat "$1")"; }
# A process that runs (one that exited and waits for its parent to reap it does not).
runs() { [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null; }
key_of() { printf '%s' "$1" | sha256sum | cut -c1-16; }

# The local server on this script's data directory, by pid, however it was started:
# from the pid file when that process runs, else any `cubby-server serve` whose
# command line or environment names the data directory (restarted by hand, say).
local_server_pids() {
  if alive "$state/server.pid"; then cat "$state/server.pid"; return; fi
  local proc args env
  for proc in /proc/[0-9]*; do
    args=$(tr '\0' '\n' <"$proc/cmdline" 2>/dev/null) || continue
    case "${args%%$'\n'*}" in *cubby-server) ;; *) continue ;; esac
    grep -qx 'serve' <<<"$args" || continue
    env=$(tr '\0' '\n' <"$proc/environ" 2>/dev/null) || env=
    if grep -qxF -e "$server_data" -e "--data=$server_data" <<<"$args" ||
      grep -qxF "CUBBY_DATA=$server_data" <<<"$env"; then
      echo "${proc#/proc/}"
    fi
  done
}
# A mounted folder whose daemon died answers "Transport endpoint is not connected".
answers_as_mount() { stat "$1" >/dev/null 2>&1; }
healthy() { curl -sf -o /dev/null --max-time 2 "http://$listen/healthz"; }
answers() { curl -s -o /dev/null --max-time 2 "http://$listen/"; } # anything at all listens there
configured_server() { sed -n 's/.*"server": *"\([^"]*\)".*/\1/p' "$config" 2>/dev/null | head -n 1; }

if [ "$action" = status ]; then
  dir=$(realpath -m "$1")
  key=$(key_of "$dir")
  pids=$(local_server_pids | tr '\n' ' ')
  if [ -n "$pids" ]; then
    if healthy; then echo "local server: running (pid ${pids% }) on $listen, data in $server_data"
    else echo "local server: process ${pids% } runs but does not answer on $listen"; fi
  elif [ -f "$state/local-password" ]; then
    echo "local server: down (run $0 $1 to start it again)"
  else
    echo "local server: none (the configured server is ${CUBBY_SERVER:-$(configured_server)})"
  fi
  if ! is_mounted "$dir"; then
    echo "mount: $dir is not mounted"
  elif ! answers_as_mount "$dir"; then
    echo "mount: $dir is mounted but its daemon is gone (run $0 $1 to mount it again)"
  else
    pid=$(cat "$state/mount-$key.pid" 2>/dev/null || echo "?")
    echo "mount: $dir is mounted (daemon pid $pid)"
    "$bin/cubby" --config "$config" status "$dir" | sed 's/^/  /'
  fi
  exit 0
fi

if [ "$action" = stop ]; then
  dir=$(realpath -m "$1")
  key=$(key_of "$dir")
  if is_mounted "$dir"; then
    if command -v fusermount3 >/dev/null; then
      fusermount3 -u "$dir" 2>/dev/null || fusermount3 -uz "$dir" || umount -l "$dir"
    else
      umount "$dir" 2>/dev/null || umount -l "$dir"
    fi
    echo "unmounted $dir"
  else
    echo "$dir is not mounted"
  fi
  if alive "$state/mount-$key.pid"; then kill "$(cat "$state/mount-$key.pid")" || true; fi
  rm -f "$state/mount-$key.pid"
  for pidfile in "$state"/mount-*.pid; do # mounts that died leave no pid file behind
    [ -f "$pidfile" ] && ! alive "$pidfile" && rm -f "$pidfile"
  done
  # Stop the local server once no mount of this script's remains: the one it started,
  # or one started by hand on the same data directory.
  if ! ls "$state"/mount-*.pid >/dev/null 2>&1; then
    pids=$(local_server_pids)
    if [ -n "$pids" ]; then
      # shellcheck disable=SC2086
      kill $pids 2>/dev/null || true
      for _ in $(seq 50); do
        running=false
        for pid in $pids; do runs "$pid" && running=true; done
        $running || break
        sleep 0.1
      done
      echo "stopped the local server (pid $(echo $pids))"
    fi
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
mounted=false
if is_mounted "$dir"; then
  if answers_as_mount "$dir"; then
    mounted=true
  else
    echo "$dir is mounted but its daemon is gone: unmounting it to mount again"
    if alive "$state/mount-$key.pid"; then kill "$(cat "$state/mount-$key.pid")" || true; fi
    fusermount3 -uz "$dir" 2>/dev/null || umount -l "$dir"
    rm -f "$state/mount-$key.pid"
  fi
elif [ -f "$state/mount-$key.pid" ] && ! alive "$state/mount-$key.pid"; then
  echo "the mount of $dir had stopped (its daemon died): mounting it again"
  rm -f "$state/mount-$key.pid"
fi
mkdir -p "$dir"

if [ -x "$bin/cubby" ] && [ -x "$bin/cubby-server" ]; then
  echo "building (release; only what changed)..."
else
  echo "building (release; the first build takes about 5 minutes on 2 cores)..."
fi
# cargo's own progress: a bar on a terminal, a line per crate otherwise.
(cd "$root" && cargo build --release --workspace --bins) || die "the build failed (see above)"

# `cubby` on the PATH: a link in ~/.local/bin (never over a file that is not ours).
link_client() {
  local link=$HOME/.local/bin/cubby
  if [ -e "$link" ] && ! [ -L "$link" ]; then
    echo "note: $link exists and is not a link to this build; leaving it alone"
    return
  fi
  mkdir -p "$HOME/.local/bin"
  ln -sfn "$bin/cubby" "$link"
  case ":$PATH:" in
    *":$HOME/.local/bin:"*) ;;
    *) echo "note: $HOME/.local/bin is not on your PATH; add it (export PATH=\"\$HOME/.local/bin:\$PATH\") to run cubby by name" ;;
  esac
}
link_client

# Starts the local server unless the one this script started (or one on its data
# directory) runs and answers. Never takes a server it did not start for its own:
# another one on the address is said, and (unless CUBBY_LISTEN asked for that address)
# the local server gets a free port instead.
start_server() {
  local pids
  pids=$(local_server_pids | tr '\n' ' ')
  if [ -n "$pids" ] && healthy; then
    echo "local server: running (pid ${pids% }) on $listen"
    return 0
  fi
  [ -z "$pids" ] ||
    die "a server on $server_data runs (pid ${pids% }) but does not answer on $listen; stop it ($0 --stop DIR) and run this again"
  [ -f "$state/server.pid" ] && echo "local server: down; starting it again"
  rm -f "$state/server.pid"
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
elif [ -f "$state/local-password" ]; then
  # Our own local server: make sure it runs, and log in again if it moved (or the
  # login predates renewable ones).
  start_server
  if ! grep -q "\"http://$listen\"" "$config" || ! grep -q '"refresh_token"' "$config"; then
    local_login
  fi
fi

if $mounted; then
  echo "$dir is already mounted"
  exit 0
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
