#!/usr/bin/env bash
# Benchmark of the mount against a plain local directory on the same disk, in one run
# (not a test: it prints numbers). Run as root (it drops the kernel's caches).
#
#   tests/bench_mount.sh [SIZE_MIB] [SMALL_FILES]      (defaults: 1024, 3000)
#
# Workloads, each on the local directory and on a fresh mount of a fresh local server:
# sequential write ending in fsync; cold read (page cache and chunk cache dropped);
# warm read (chunk cache full); re-read (page cache); untar of small files (median about
# 4 KiB); ls -lR cold and warm; reading every small file; deleting them; a 1-byte
# overwrite in the middle of the large file and a rewrite with 1 byte inserted at the
# start (bytes the server received, time until committed). Prints each figure, the
# ratio local/mount, and the peak RSS of the daemon and the server.
#
# With bindfs (installed here from Debian's packages when missing), the same workloads also
# run through a bindfs passthrough of a local directory: what any FUSE filesystem costs
# on this machine, the floor under the mount's figures.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
size_mib=${1:-1024}
small_files=${2:-3000}
[ "$(id -u)" -eq 0 ] || { echo "run as root (drops caches)" >&2; exit 1; }

cargo build --release --workspace --bins -q
bin=$repo/target/release
work=$(mktemp -d -p "$repo/target" bench-mount.XXXXXX)
server_pid= mount_pid=
mnt=$work/mnt
bindmnt=$work/bindmnt
cleanup() {
  set +e
  awk -v d="$mnt" '$2 == d { f = 1 } END { exit !f }' /proc/mounts && { fusermount3 -u "$mnt" || umount -l "$mnt"; }
  awk -v d="$bindmnt" '$2 == d { f = 1 } END { exit !f }' /proc/mounts && { fusermount3 -u "$bindmnt" || umount -l "$bindmnt"; }
  pkill -f "cubby mount $mnt" 2>/dev/null
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work" /dev/shm/cubby-bench-src
}
trap cleanup EXIT

mkdir -p "$mnt" "$work/local"
"$bin/cubby-server" user add bench --password bench-pw --data "$work/data" >/dev/null
RUST_LOG=info "$bin/cubby-server" serve --data "$work/data" --listen 127.0.0.1:0 >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/server.out" 2>/dev/null && break; sleep 0.05; done
export CUBBY_CONFIG=$work/client.json
echo bench-pw | "$bin/cubby" login --server "http://$(sed -n 's/^cubby-server listening on //p' "$work/server.out")" --username bench --password-stdin 2>/dev/null

mount_cubby() {
  "$bin/cubby" mount "$mnt" --staging-dir "$work/staging" --cache-dir "$work/cache" >>"$work/mount.log" 2>&1 &
  mount_pid=$!
  for _ in $(seq 200); do awk -v d="$mnt" '$2 == d { f = 1 } END { exit !f }' /proc/mounts && return; sleep 0.05; done
  echo "mount failed" >&2; exit 1
}
unmount_cubby() {
  fusermount3 -u "$mnt"
  wait "$mount_pid" 2>/dev/null || true
  mount_pid=
}
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# Waits until the mount has sent everything (close uploads in the background).
wait_uploaded() {
  [ "$1" = "$mnt" ] || return 0
  for _ in $(seq 6000); do
    "$bin/cubby" status "$mnt" --json | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["online"] and s["queue_depth"] == 0 else 1)' && return
    sleep 0.05
  done
  echo "the mount did not finish uploading" >&2; exit 1
}
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }
row() { # row NAME LOCAL_SECONDS MOUNT_SECONDS [BINDFS_SECONDS]
  python3 - "$@" <<'PY'
import sys
name, local, mount = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
ratio = local / mount if mount else float("inf")
line = f"{name:<28} local {local:8.3f} s   mount {mount:8.3f} s   mount speed {ratio:6.3f}x local"
if len(sys.argv) > 4 and sys.argv[4]:
    bind = float(sys.argv[4])
    line += f"   bindfs {bind:8.3f} s ({local / bind if bind else float('inf'):6.3f}x)"
print(line)
PY
}

echo "preparing: ${size_mib} MiB random file in /dev/shm, ${small_files} small files"
head -c "$((size_mib << 20))" /dev/urandom >/dev/shm/cubby-bench-src
python3 - "$work/small" "$small_files" <<'PY'
import os, random, sys
root, count = sys.argv[1], int(sys.argv[2])
random.seed(7)
for i in range(count):
    d = os.path.join(root, f"d{i % 30:02d}", f"e{i % 7}")
    os.makedirs(d, exist_ok=True)
    size = max(1, int(random.lognormvariate(8.3, 0.8)))  # median about 4 KiB
    with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
        f.write(os.urandom(size))
PY
tar cf "$work/small.tar" -C "$work" small
mount_cubby

bench() { # bench LABEL DIR -> sets t_<label>
  local dir=$1 t0 t1
  t0=$(now); dd if=/dev/shm/cubby-bench-src of="$dir/big" bs=1M conv=fsync status=none; t1=$(now); w=$(secs "$t0" "$t1")
  if [ "$dir" = "$mnt" ]; then unmount_cubby; rm -rf "$work/cache"; drop_caches; mount_cubby; else drop_caches; fi
  t0=$(now); dd if="$dir/big" of=/dev/null bs=1M status=none; t1=$(now); cold=$(secs "$t0" "$t1")
  drop_caches
  t0=$(now); dd if="$dir/big" of=/dev/null bs=1M status=none; t1=$(now); warm=$(secs "$t0" "$t1")
  t0=$(now); dd if="$dir/big" of=/dev/null bs=1M status=none; t1=$(now); reread=$(secs "$t0" "$t1")
  t0=$(now); tar xf "$work/small.tar" -C "$dir"; t1=$(now); untar=$(secs "$t0" "$t1")
  sync; wait_uploaded "$dir"; t1=$(now); untar_sent=$(secs "$t0" "$t1")
  if [ "$dir" = "$mnt" ]; then unmount_cubby; drop_caches; mount_cubby; else drop_caches; fi
  t0=$(now); ls -lR "$dir/small" >/dev/null; t1=$(now); lscold=$(secs "$t0" "$t1")
  t0=$(now); ls -lR "$dir/small" >/dev/null; t1=$(now); lswarm=$(secs "$t0" "$t1")
  t0=$(now); find "$dir/small" -type f -exec cat {} + >/dev/null; t1=$(now); readall=$(secs "$t0" "$t1")
  t0=$(now); rm -r "$dir/small"; t1=$(now); delete=$(secs "$t0" "$t1")
  echo "$w $cold $warm $reread $untar $untar_sent $lscold $lswarm $readall $delete"
}

command -v bindfs >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bindfs >/dev/null \
  || echo "bindfs could not be installed: no FUSE floor in this run" >&2
echo "running on the local directory..."
read -r lw lc lwa lr lu lus llc llw lra ld < <(bench "$work/local")
if command -v bindfs >/dev/null; then
  echo "running on a bindfs passthrough of a local directory..."
  mkdir -p "$work/bindsrc" "$bindmnt"
  bindfs "$work/bindsrc" "$bindmnt"
  read -r bw bc bwa br bu bus blc blw bra bd < <(bench "$bindmnt")
  fusermount3 -u "$bindmnt"
fi
echo "running on the mount..."
read -r mw mc mwa mr mu mus mlc mlw mra md < <(bench "$mnt")

# Small edits of the large file on the mount: bytes the server received for them.
sent() { # bytes of the last upload = size - reused, from the server's log
  python3 - "$work/server.log" <<'PY'
import re, sys
lines = [l for l in open(sys.argv[1]) if "upload begun" in l]
last = lines[-1]
reused = int(re.search(r"reused_bytes\D*(\d+)", last).group(1))
print(reused)
PY
}
t0=$(now); printf 'X' | dd of="$mnt/big" bs=1 seek=$((size_mib << 19)) conv=notrunc status=none; wait_uploaded "$mnt"; t1=$(now)
overwrite_t=$(secs "$t0" "$t1"); overwrite_reused=$(sent)
t0=$(now); { printf 'Y'; cat /dev/shm/cubby-bench-src; } >"$work/inserted"; t1=$(now)
t0=$(now); cp "$work/inserted" "$mnt/big"; wait_uploaded "$mnt"; t1=$(now)
insert_t=$(secs "$t0" "$t1"); insert_reused=$(sent)
size_bytes=$((size_mib << 20))

echo
echo "== $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB, $(df -h "$repo/target" | awk 'NR==2 {print $1}'); ${size_mib} MiB file, ${small_files} small files"
row "sequential write + fsync" "$lw" "$mw" "${bw:-}"
row "cold read" "$lc" "$mc" "${bc:-}"
row "warm read (chunk cache)" "$lwa" "$mwa" "${bwa:-}"
row "re-read (page cache)" "$lr" "$mr" "${br:-}"
row "untar small files" "$lu" "$mu" "${bu:-}"
row "untar, until uploaded" "$lus" "$mus" "${bus:-}"
row "ls -lR cold" "$llc" "$mlc" "${blc:-}"
row "ls -lR warm" "$llw" "$mlw" "${blw:-}"
row "read all small files" "$lra" "$mra" "${bra:-}"
row "delete small files" "$ld" "$md" "${bd:-}"
echo "1-byte overwrite (middle)    committed in ${overwrite_t} s, server received $((size_bytes - overwrite_reused)) bytes"
echo "1-byte insert (start)        committed in ${insert_t} s, server received $((size_bytes + 1 - insert_reused)) bytes"
daemon=$(pgrep -f "cubby mount $mnt" | head -n 1)
echo "daemon peak RSS              $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' "/proc/$daemon/status") (the last mount)"
echo "server peak RSS              $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' "/proc/$server_pid/status")"
