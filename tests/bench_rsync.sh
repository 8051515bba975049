#!/usr/bin/env bash
# Benchmark of `rsync -a` onto the mount against the same copy into a local directory
# (not a test: it prints numbers). The issue's figure: rsync -a /usr/share/doc.
#
#   tests/bench_rsync.sh [SOURCE]      (default: /usr/share/doc)
#
# Prints the time of each copy, their ratio, the time until the mount has sent
# everything, and then compares the copy as the server has it (a fresh mount after the
# sync) with the local one: content, modes, file and directory times, link targets.
# Exits non-zero when anything differs.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
source_dir=${1:-/usr/share/doc}
command -v rsync >/dev/null || { echo "rsync is missing (tests/install-deps.sh)" >&2; exit 1; }

cargo build --release --workspace --bins -q
bin=$repo/target/release
work=$(mktemp -d -p "$repo/target" bench-rsync.XXXXXX)
server_pid= mount_pid=
mnt=$work/mnt
is_mounted() { awk -v d="$1" '$2 == d { f = 1 } END { exit !f }' /proc/mounts; }
cleanup() {
  set +e
  is_mounted "$mnt" && { fusermount3 -u "$mnt" || umount -l "$mnt"; }
  [ -n "$mount_pid" ] && kill "$mount_pid" 2>/dev/null
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$mnt" "$work/local"
"$bin/cubby-server" user add bench --password bench-pw --data "$work/data" >/dev/null
"$bin/cubby-server" serve --data "$work/data" --listen 127.0.0.1:0 >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/server.out" 2>/dev/null && break; sleep 0.05; done
export CUBBY_CONFIG=$work/client.json
echo bench-pw | "$bin/cubby" login --server "http://$(sed -n 's/^cubby-server listening on //p' "$work/server.out")" \
  --username bench --password-stdin 2>/dev/null

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

files=$(find "$source_dir" -type f | wc -l)
links=$(find "$source_dir" -type l | wc -l)
dirs=$(find "$source_dir" -type d | wc -l)
echo "source: $source_dir ($files files, $links symlinks, $dirs directories, $(du -sh "$source_dir" | cut -f1))"
# The source is read once first, so neither copy pays for a cold page cache.
tar cf - "$source_dir" 2>/dev/null | cat >/dev/null

start=$(now); rsync -a "$source_dir/" "$work/local/copy/"; local_secs=$(secs "$start" "$(now)")
mount_cubby first
start=$(now); rsync -a "$source_dir/" "$mnt/copy/"; mount_secs=$(secs "$start" "$(now)")
for _ in $(seq 12000); do
  "$bin/cubby" status "$mnt" --json | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["online"] and s["queue_depth"] == 0 else 1)' && break
  sleep 0.05
done
synced_secs=$(secs "$start" "$(now)")
unmount_cubby
python3 -c "l, m = $local_secs, $mount_secs; print(f'rsync -a   local {l:.3f} s   mount {m:.3f} s   mount/local {m / l:.2f}x   all sent after {$synced_secs:.3f} s')"

# The copy as the server has it: a fresh mount, nothing cached.
mount_cubby second
python3 - "$work/local/copy" "$mnt/copy" <<'PY'
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
