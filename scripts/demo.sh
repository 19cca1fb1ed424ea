#!/usr/bin/env bash
# `make demo`: what this machine can do, then a throwaway VM on the default image
# that runs one command and is deleted again (until `banger vm run --rm` lands).
set -euo pipefail
cd "$(dirname "$0")/.."
banger=./bin/banger
$banger doctor || { echo "demo: fix what doctor reports, then run 'make demo' again" >&2; exit 1; }
name="demo-$$"
cleanup() { $banger vm delete "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT
echo
echo "demo: booting a VM on the default image (the first run builds the kernel and image: about a minute)"
$banger vm create --name "$name" --disk-size 1G
$banger vm ssh "$name" -- uname -a
