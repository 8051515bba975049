#!/usr/bin/env bash
# Benchmark of the chunked protocol over loopback (not a test: it prints numbers).
#
#   tests/bench_transfer.sh [SIZE_MIB]      (default 1024)
#
# Builds release binaries, starts a fresh server on a free port with its data on the
# same disk as the repository, then: uploads a SIZE_MIB random file, downloads it,
# changes 1 byte in the middle and uploads again, inserts 1 byte at the start and
# uploads again. Prints MiB/s, bytes sent, and the peak RSS of server and client.
set -euo pipefail
cd "$(dirname "$0")/.."

size_mib=${1:-1024}
cargo build --release --workspace --bins -q
bin=target/release
work=$(mktemp -d -p "$PWD/target" bench.XXXXXX)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/cubby-server" user add bench --password bench-pw --data "$work/data" >/dev/null
RUST_LOG=warn "$bin/cubby-server" serve --data "$work/data" --listen 127.0.0.1:0 >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/server.out" 2>/dev/null && break; sleep 0.05; done
url="http://$(sed -n 's/^cubby-server listening on //p' "$work/server.out")"
export CUBBY_CONFIG="$work/client.json"
echo bench-pw | "$bin/cubby" login --server "$url" --username bench --password-stdin 2>/dev/null

json() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
timed() { # timed NAME CMD...: runs CMD, keeps its stdout in $work/NAME.json and its time -v in $work/NAME.time
  local name=$1; shift
  /usr/bin/time -v -o "$work/$name.time" "$@" >"$work/$name.json"
}
seconds() { awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; print s}' "$work/$1.time"; }
rss_mib() { awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2/1024}' "$work/$1.time"; }
rate() { python3 -c "print(f'{$size_mib/max($1,1e-9):.1f}')"; }

echo "creating a ${size_mib} MiB random file"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$work/file.bin"
sync

timed upload "$bin/cubby" upload "$work/file.bin" /bench/file.bin --json
t=$(seconds upload)
echo "upload:            ${t}s  $(rate "$t") MiB/s  sent $(json "$work/upload.json" bytes_sent) bytes  client peak RSS $(rss_mib upload) MiB"

timed download "$bin/cubby" download /bench/file.bin "$work/back.bin" --json
t=$(seconds download)
echo "download:          ${t}s  $(rate "$t") MiB/s  client peak RSS $(rss_mib download) MiB"
cmp -s "$work/file.bin" "$work/back.bin" && echo "download:          byte-identical" || { echo "download differs!" >&2; exit 1; }

printf '\xff' | dd of="$work/file.bin" bs=1 seek=$((size_mib * 512 * 1024)) conv=notrunc status=none
timed overwrite "$bin/cubby" upload "$work/file.bin" /bench/file.bin --json
echo "1-byte overwrite:  $(seconds overwrite)s  sent $(json "$work/overwrite.json" bytes_sent) bytes in $(json "$work/overwrite.json" chunks_sent) chunk(s)"

{ printf 'X'; cat "$work/file.bin"; } >"$work/inserted.bin"
timed insert "$bin/cubby" upload "$work/inserted.bin" /bench/file.bin --json
echo "1-byte insert:     $(seconds insert)s  sent $(json "$work/insert.json" bytes_sent) bytes in $(json "$work/insert.json" chunks_sent) chunk(s)"

echo "server peak RSS:   $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' "/proc/$server_pid/status")"
