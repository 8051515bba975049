#!/usr/bin/env bash
# Benchmark of `rsync -a` onto the mount against the same copy into a local directory
# (not a test: it prints numbers). The issue's figure: rsync -a /usr/share/doc.
#
#   tests/bench_rsync.sh [SOURCE]      (default: /usr/share/doc; RUNS=3 by default)
#
# Each run starts on a fresh loop-mounted ext4 (as root; elsewhere a plain directory,
# said so): the local copy, the server's data and the mount's staging and cache all
# live there, so neither side pays for an aged filesystem (ext4 scans for recently
# deleted inodes after large deletes, which alone swung the local copy 0.6-5.6 s).
# A run prints the time of each copy, their ratio and the time until the mount has
# sent everything, then compares the copy as the server has it (a fresh mount after
# the sync) with the local one: content, modes, file and directory times, link
# targets. With bindfs installed (Debian's package), a run also times the copy through a
# plain FUSE passthrough: what crossing FUSE alone costs on the machine. The last line
# is the median ratio. Exits non-zero when anything differs.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
source_dir=${1:-/usr/share/doc}
runs=${RUNS:-3}
command -v rsync >/dev/null || { echo "rsync is missing (tests/install-deps.sh)" >&2; exit 1; }

cargo build --release --workspace --bins -q
bin=$repo/target/release
base=$(mktemp -d -p "$repo/target" bench-rsync.XXXXXX)
work=$base/fs
server_pid= mount_pid= loop_mounted=
mnt=$base/mnt
is_mounted() { awk -v d="$1" '$2 == d { f = 1 } END { exit !f }' /proc/mounts; }
stop_all() {
  is_mounted "$mnt" && { fusermount3 -u "$mnt" || umount -l "$mnt"; }
  [ -n "$mount_pid" ] && kill "$mount_pid" 2>/dev/null
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  wait 2>/dev/null
  mount_pid= server_pid=
  if [ -n "$loop_mounted" ]; then umount "$work"; loop_mounted=; fi
  rm -rf "$work" "$base/ext4.img"
}
cleanup() { set +e; stop_all; rm -rf "$base"; }
trap cleanup EXIT

fresh_filesystem() {
  mkdir -p "$work" "$mnt"
  if [ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null; then
    truncate -s 4G "$base/ext4.img"
    # Inode tables and journal written now: lazy initialisation would run in the
    # background during the copies and swing them (offline copies 4-13 s without this).
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$base/ext4.img"
    mount -o loop "$base/ext4.img" "$work"
    loop_mounted=1
  elif [ "$run" = 1 ]; then
    echo "(not root: every run on a plain directory of $(df --output=fstype "$base" | tail -1))"
  fi
}

mount_cubby() { # mount_cubby STATE_NAME
  "$bin/cubby" mount "$mnt" --staging-dir "$work/$1/staging" --cache-dir "$work/$1/cache" >>"$work/mount.log" 2>&1 &
  mount_pid=$!
  for _ in $(seq 200); do is_mounted "$mnt" && return; sleep 0.05; done
  echo "mount failed" >&2; exit 1
}
unmount_cubby() {
  fusermount3 -u "$mnt"
  wait "$mount_pid" 2>/dev/null || true
  mount_pid=
}
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }

compare_copies() { # compare_copies LOCAL MOUNTED
python3 - "$1" "$2" <<'PY'
import hashlib, os, stat, sys

def tree(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                what = "-> " + os.readlink(path)
                mtime = None
            elif stat.S_ISDIR(st.st_mode):
                what, mtime = "dir", st.st_mtime_ns
            else:
                with open(path, "rb") as f:
                    what = hashlib.blake2b(f.read()).hexdigest()
                mtime = st.st_mtime_ns
            out[rel] = (stat.S_IMODE(st.st_mode) if not stat.S_ISLNK(st.st_mode) else None,
                        stat.S_IFMT(st.st_mode), mtime, what)
    return out

local, mount = tree(sys.argv[1]), tree(sys.argv[2])
differ = sorted(set(local) ^ set(mount)) + sorted(
    p for p in set(local) & set(mount) if local[p] != mount[p])
for path in differ[:20]:
    print(f"  differs: {path}: local {local.get(path)} mount {mount.get(path)}")
print(f"compared {len(local)} entries: {len(differ)} differ")
sys.exit(1 if differ else 0)
PY
}

run_once() {
  fresh_filesystem
  mkdir -p "$work/local"
  "$bin/cubby-server" user add bench --password bench-pw --data "$work/data" >/dev/null
  "$bin/cubby-server" serve --data "$work/data" --listen 127.0.0.1:0 >"$work/server.out" 2>"$work/server.log" &
  server_pid=$!
  for _ in $(seq 100); do grep -q "listening on" "$work/server.out" 2>/dev/null && break; sleep 0.05; done
  export CUBBY_CONFIG=$work/client.json
  echo bench-pw | "$bin/cubby" login --server "http://$(sed -n 's/^cubby-server listening on //p' "$work/server.out")" \
    --username bench --password-stdin 2>/dev/null

  start=$(now); rsync -a "$source_dir/" "$work/local/copy/"; local_secs=$(secs "$start" "$(now)")
  floor=
  if command -v bindfs >/dev/null; then
    # The FUSE floor: the same copy through bindfs, a plain FUSE passthrough of a local
    # directory on the same disk (no server, no sync, nothing cached).
    mkdir -p "$work/under" "$mnt"
    bindfs "$work/under" "$mnt"
    start=$(now); rsync -a "$source_dir/" "$mnt/copy/"; bindfs_secs=$(secs "$start" "$(now)")
    fusermount3 -u "$mnt"
    rm -rf "$work/under"
    floor="   bindfs $bindfs_secs s ($(python3 -c "print(f'{$bindfs_secs / $local_secs:.2f}')")x)"
  fi
  mount_cubby first
  start=$(now); rsync -a "$source_dir/" "$mnt/copy/"; mount_secs=$(secs "$start" "$(now)")
  # Asked twice a second: a status and a python per ask, twenty times a second, took a
  # share of the two cores from the sync it measures (all sent after 86-98 s, against
  # 62-65 s asked every 7 s).
  for _ in $(seq 1200); do
    "$bin/cubby" status "$mnt" --json | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["online"] and s["queue_depth"] == 0 else 1)' && break
    sleep 0.5
  done
  synced_secs=$(secs "$start" "$(now)")
  unmount_cubby
  ratio=$(python3 -c "print(f'{$mount_secs / $local_secs:.2f}')")
  ratios+=("$ratio")
  echo "run $run: rsync -a   local $local_secs s   mount $mount_secs s   mount/local ${ratio}x   all sent after $synced_secs s$floor"

  # The copy as the server has it: a fresh mount, nothing cached.
  mount_cubby second
  compare_copies "$work/local/copy" "$mnt/copy" || failed=1
  stop_all
}

files=$(find "$source_dir" -type f | wc -l)
links=$(find "$source_dir" -type l | wc -l)
dirs=$(find "$source_dir" -type d | wc -l)
echo "source: $source_dir ($files files, $links symlinks, $dirs directories, $(du -sh "$source_dir" | cut -f1)), $runs runs"
# The source is read once first, so neither copy pays for a cold page cache.
tar cf - "$source_dir" 2>/dev/null | cat >/dev/null

ratios=() failed=0
for run in $(seq "$runs"); do run_once; done
python3 -c "import statistics, sys; r = sorted(map(float, sys.argv[1:])); print(f'median mount/local {statistics.median(r):.2f}x   (runs: {\" \".join(f\"{x:.2f}x\" for x in r)})')" "${ratios[@]}"
exit "$failed"
