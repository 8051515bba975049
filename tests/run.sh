#!/usr/bin/env bash
# The test command: formatting, lints, every test suite, and the practice script.
# CI runs exactly this (.ci/run); so does a developer before pushing.
set -euo pipefail
cd "$(dirname "$0")/.."

tests/install-deps.sh

echo "== format"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --profile ci
  # nextest does not run doctests.
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked
fi
echo "== practice: upload and download 10 files with curl"
cargo build --workspace --locked --bins
tests/practice_upload_download.sh target/debug/cubby-server
echo "== ./mount.sh, as the README gives it"
tests/mount_sh_test.sh
echo "== conformance: pjdfstest and fsx on a fresh mount"
if [ "$(id -u)" -eq 0 ]; then
  tests/conformance.sh
elif [ "${CI:-}" = "true" ]; then
  echo "conformance needs root (pjdfstest switches users); CI must run it" >&2
  exit 1
else
  echo "skipped: needs root (pjdfstest switches users)"
fi
echo "== all passed"
