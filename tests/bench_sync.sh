#!/usr/bin/env bash
# Benchmark of the background sync (not a test: it prints numbers): an untar of N small
# files (default 3,000, 30 x 7 directories, sizes around 4 KiB) onto a fresh mount, and
# the time until the server holds all of it.
#
#   tests/bench_sync.sh [N]            online: the untar, then until nothing waits
#   OFFLINE=1 tests/bench_sync.sh [N]  the server stopped during the untar, then started:
#                                      the time of the drain alone
#
# Prints the untar's time, the time until everything was sent with the rate in files a
# second, both processes' memory and CPU, and compares the tree on the mount with the
# source. Exits non-zero when anything differs. SERVER_LOG is the server's RUST_LOG (warn);
# KEEP=1 keeps the work directory (its server.log) under target/.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
n=${1:-3000}
cargo build --release --workspace --bins -q
bin=$repo/target/release
work=$(mktemp -d -p "$repo/target" bench-sync.XXXXXX)
mnt=$work/mnt
mkdir -p "$mnt"
server_pid= mount_pid=
cleanup() {
  set +e
  awk -v d="$mnt" '$2 == d { f = 1 } END { exit !f }' /proc/mounts && { fusermount3 -u "$mnt" || umount -l "$mnt"; }
  [ -n "$mount_pid" ] && kill "$mount_pid"
  [ -n "$server_pid" ] && kill "$server_pid"
  wait
  if [ -n "${KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

python3 - "$work/small" "$n" <<'PY'
import os, random, sys
root, count = sys.argv[1], int(sys.argv[2])
random.seed(7)
for i in range(count):
    d = os.path.join(root, f"d{i % 30:02d}", f"e{i % 7}")
    os.makedirs(d, exist_ok=True)
    size = max(1, int(random.lognormvariate(8.3, 0.8)))
    with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
        f.write(os.urandom(size))
PY
tar cf "$work/small.tar" -C "$work" small

"$bin/cubby-server" user add bench --password bench-pw --data "$work/data" >/dev/null
start_server() {
  RUST_LOG=${SERVER_LOG:-warn} "$bin/cubby-server" serve --data "$work/data" --listen "${1:-127.0.0.1:0}" \
    >"$work/server.out" 2>>"$work/server.log" &
  server_pid=$!
  for _ in $(seq 200); do grep -q "listening on" "$work/server.out" 2>/dev/null && break; sleep 0.05; done
  addr=$(sed -n 's/^cubby-server listening on //p' "$work/server.out")
  [ -n "$addr" ] || { echo "the server did not start" >&2; cat "$work/server.log" >&2; exit 1; }
}
start_server
export CUBBY_CONFIG=$work/client.json
echo bench-pw | "$bin/cubby" login --server "http://$addr" --username bench --password-stdin >/dev/null
RUST_LOG=warn "$bin/cubby" mount "$mnt" --staging-dir "$work/staging" --cache-dir "$work/cache" \
  >"$work/mount.log" 2>&1 &
mount_pid=$!
for _ in $(seq 200); do awk -v d="$mnt" '$2 == d { f = 1 } END { exit !f }' /proc/mounts && break; sleep 0.05; done
ls "$mnt" >/dev/null

waiting() {
  "$bin/cubby" status "$mnt" --json |
    python3 -c 'import json,sys; s=json.load(sys.stdin); print(int(s["online"]), s["queue_depth"])'
}
if [ -n "${OFFLINE:-}" ]; then
  kill "$server_pid"; wait "$server_pid" || true; server_pid=
  sleep 2.5 # the heartbeat takes the mount offline
fi
t0=$(date +%s.%N)
tar xf "$work/small.tar" -C "$mnt"
t1=$(date +%s.%N)
if [ -n "${OFFLINE:-}" ]; then start_server "$addr"; from=$(date +%s.%N); what="the server started"; else from=$t0; what="the untar began"; fi
while :; do
  read -r online queue < <(waiting)
  [ "$online" = 1 ] && [ "$queue" = 0 ] && break
  sleep 0.25
done
t2=$(date +%s.%N)
python3 -c "print(f'untar {$t1 - $t0:.2f} s; all sent {$t2 - $from:.2f} s after $what ({$n / ($t2 - $from):.0f} files a second)')"
ps -o rss=,cputime= -p "$server_pid" | awk '{print "server: rss", $1, "KiB, cpu", $2}'
ps -o rss=,cputime= -p "$mount_pid" | awk '{print "daemon: rss", $1, "KiB, cpu", $2}'
diff -r "$work/small" "$mnt/small" && echo "the mount holds the same tree"
