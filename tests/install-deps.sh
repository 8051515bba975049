#!/usr/bin/env bash
# Installs the system tools the tests need, from Debian's packages, when missing.
# Safe to run again: it installs nothing that is already there.
set -euo pipefail

need=()
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
command -v mount >/dev/null || need+=(mount)
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v git >/dev/null || need+=(git)
command -v diff >/dev/null || need+=(diffutils)
command -v tar >/dev/null || need+=(tar)
command -v rsync >/dev/null || need+=(rsync)
command -v iptables >/dev/null || need+=(iptables)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing ${need[*]}; run as root or install them: apt-get install ${need[*]}" >&2
  exit 1
fi
echo "install-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}"
