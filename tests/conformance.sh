#!/usr/bin/env bash
# POSIX conformance of the mount: pjdfstest and fsx against a fresh server and mount,
# with the configurations in tests/conformance/ (the team's shared ones, so figures
# compare). Prints the counts; fails when pjdfstest passes fewer tests than the floor
# recorded below (so a regression fails CI) or when fsx finds any miscompare.
#
#   tests/conformance.sh                 (as root: pjdfstest switches users)
#   FSX_OPS=100000 FSX_LARGE_OPS=10000 FSX_LARGE_SEED=S PJD_FLOOR=N tests/conformance.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

# 90% of what tmpfs passes here (384 of 398); this version passes 347. docs/SEMANTICS.md
# lists every remaining failure and why.
PJD_FLOOR=${PJD_FLOOR:-346}
FSX_OPS=${FSX_OPS:-100000}
FSX_LARGE_OPS=${FSX_LARGE_OPS:-10000}
tools=$repo/.tools

[ "$(id -u)" -eq 0 ] || { echo "conformance: run as root (pjdfstest switches users)" >&2; exit 1; }
[ -e /dev/fuse ] || { echo "conformance: /dev/fuse is missing" >&2; exit 1; }

install_tool() { # install_tool CRATE VERSION
  if [ ! -x "$tools/bin/$1" ]; then
    echo "== installing $1 $2 into $tools"
    cargo install "$1" --version "$2" --root "$tools" --quiet
  fi
}
install_tool pjdfstest '^0.2'
install_tool fsx '^0.3'
cargo build --workspace --bins --quiet

work=$(mktemp -d /tmp/cubby-conformance.XXXXXX)
chmod 755 "$work"
server_pid= mount_pid=
cleanup() {
  set +e
  if awk -v d="$work/mnt" '$2 == d { f = 1 } END { exit !f }' /proc/mounts; then
    fusermount3 -u "$work/mnt" 2>/dev/null || umount -l "$work/mnt"
  fi
  if awk -v d="$work/second" '$2 == d { f = 1 } END { exit !f }' /proc/mounts; then
    umount -l "$work/second"
  fi
  [ -n "$mount_pid" ] && kill "$mount_pid" 2>/dev/null && wait "$mount_pid" 2>/dev/null
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/mnt" "$work/second"
chmod 755 "$work/mnt"
target/debug/cubby-server user add conformance --password conformance-pw --data "$work/data" >/dev/null
RUST_LOG=warn target/debug/cubby-server serve --data "$work/data" --listen 127.0.0.1:0 \
  >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/server.out" 2>/dev/null && break; sleep 0.05; done
url="http://$(sed -n 's/^cubby-server listening on //p' "$work/server.out")"
export CUBBY_CONFIG="$work/client.json"
echo conformance-pw | target/debug/cubby login --server "$url" --username conformance --password-stdin 2>/dev/null
RUST_LOG=warn target/debug/cubby mount "$work/mnt" --allow-other \
  --staging-dir "$work/staging" --cache-dir "$work/cache" >"$work/mount.out" 2>"$work/mount.err" &
mount_pid=$!
mounted() { awk -v d="$work/mnt" '$2 == d && $3 ~ /^fuse/ { f = 1 } END { exit !f }' /proc/mounts; }
for _ in $(seq 200); do
  mounted && break
  sleep 0.05
done
# Never a suite against the plain directory under a mount that did not appear or died.
require_mount() {
  mounted && kill -0 "$mount_pid" 2>/dev/null && return 0
  echo "conformance: the mount is not there ($1); see below" >&2
  tail -n 20 "$work/mount.err" >&2
  exit 1
}
require_mount "after starting it"
mount -t tmpfs -o size=16m tmpfs "$work/second"
mkdir "$work/mnt/pjd"
chmod 755 "$work/mnt/pjd"

require_mount "before pjdfstest"
echo "== pjdfstest"
set +e
(cd "$work" && timeout 1800 "$tools/bin/pjdfstest" -c "$repo/tests/conformance/pjdfstest.toml" \
  -p "$work/mnt/pjd" -s "$work/second") >"$work/pjdfstest.log" 2>&1
set -e
summary=$(grep '^Summary:' "$work/pjdfstest.log" || true)
mkdir -p target/conformance
cp "$work/pjdfstest.log" target/conformance/pjdfstest.log
echo "pjdfstest: ${summary:-no summary (see target/conformance/pjdfstest.log)}"
passed=$(echo "$summary" | sed -n 's/.* \([0-9]*\) passed.*/\1/p')
echo "pjdfstest failures by area:"
grep -E 'FAILED$' "$work/pjdfstest.log" | awk '{print $1}' | cut -d: -f1 | sort | uniq -c | sort -rn | sed 's/^/  /'

require_mount "after pjdfstest"

# fsx_run NAME CONFIG OPS SEED: one fsx run on the mount; a miscompare sets fsx_failed.
fsx_run() {
  echo "== fsx $1 ($3 operations, seed $4)"
  mkdir -p "$work/fsx-$1"
  set +e
  timeout 1800 "$tools/bin/fsx" -N "$3" -S "$4" -f "$repo/tests/conformance/$2" \
    -P "$work/fsx-$1" "$work/mnt/$1.dat" >"$work/fsx-$1.log" 2>&1
  local rc=$?
  set -e
  cp "$work/fsx-$1.log" "target/conformance/fsx-$1.log"
  tail -n 3 "$work/fsx-$1.log"
  if [ "$rc" -ne 0 ] || ! grep -q "All operations completed A-OK!" "$work/fsx-$1.log"; then
    echo "conformance: fsx $1 failed (exit $rc, seed $4); see target/conformance/fsx-$1.log" >&2
    fsx_failed=1
  fi
  require_mount "after fsx $1"
}
fsx_failed=0
# The small file with the team's fixed seed (figures compare); the file of many chunks
# with a seed that changes per run (printed, to replay a failure).
fsx_run small fsx.toml "$FSX_OPS" 1
fsx_run large fsx-large.toml "$FSX_LARGE_OPS" "${FSX_LARGE_SEED:-$(( $(date +%s) % 100000 ))}"

status=0
if [ -z "$passed" ] || [ "$passed" -lt "$PJD_FLOOR" ]; then
  echo "conformance: pjdfstest passed ${passed:-0}, below the floor of $PJD_FLOOR" >&2
  status=1
fi
[ "$fsx_failed" -eq 0 ] || status=1
[ "$status" -eq 0 ] && echo "conformance: pjdfstest $passed passed (floor $PJD_FLOOR); fsx $FSX_OPS and $FSX_LARGE_OPS (large) operations A-OK"
exit "$status"
