#!/usr/bin/env bash
# The brief's practice: upload 10 files through the HTTP API with curl, download them,
# and check that every byte came back. Starts its own server on a free loopback port
# with a temporary data directory, and stops it (by pid) on exit.
#
#   tests/practice_upload_download.sh [PATH_TO_cubby-server]
set -euo pipefail

bin=${1:-target/debug/cubby-server}
[ -x "$bin" ] || { echo "no server binary at $bin (cargo build first)" >&2; exit 1; }
for tool in curl python3 sha256sum; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done

work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" user add practice --password practice-pw --data "$work/data" >/dev/null
RUST_LOG=warn "$bin" serve --data "$work/data" --listen 127.0.0.1:0 >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
for _ in $(seq 100); do
  grep -q "listening on" "$work/server.out" 2>/dev/null && break
  sleep 0.05
done
addr=$(sed -n 's/^cubby-server listening on //p' "$work/server.out")
[ -n "$addr" ] || { echo "server did not start:"; cat "$work/server.err"; exit 1; } >&2
url="http://$addr"

json() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }

token=$(curl -sf -X POST -H 'content-type: application/json' \
  -d '{"username":"practice","password":"practice-pw"}' "$url/auth/login" | json token)

failures=0
for i in $(seq 1 10); do
  size=$(( (RANDOM * 32768 + RANDOM) % (3 * 1024 * 1024) + i ))
  head -c "$size" /dev/urandom >"$work/in.$i"
  answer=$(curl -sf -H "Authorization: Bearer $token" \
    -F "path=/practice/file-$i.bin" -F "file=@$work/in.$i" "$url/upload")
  file_id=$(echo "$answer" | json file_id)
  hash=$(echo "$answer" | json hash)
  curl -sf -H "Authorization: Bearer $token" -D "$work/headers.$i" \
    "$url/download?file_id=$file_id" -o "$work/out.$i"
  etag=$(tr -d '\r' <"$work/headers.$i" | sed -n 's/^etag: "\(.*\)"$/\1/Ip')
  want=$(sha256sum <"$work/in.$i" | cut -d' ' -f1)
  got=$(sha256sum <"$work/out.$i" | cut -d' ' -f1)
  if [ "$want" = "$got" ] && [ "$etag" = "$hash" ]; then
    echo "ok   file-$i.bin  $size bytes  id $file_id  blake3 $hash"
  else
    echo "FAIL file-$i.bin  sha256 sent $want got $got; blake3 $hash etag $etag"
    failures=$((failures + 1))
  fi
done

if [ "$failures" -ne 0 ]; then
  echo "$failures of 10 files did not round-trip" >&2
  exit 1
fi
echo "all 10 files round-tripped byte for byte"
