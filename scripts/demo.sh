#!/usr/bin/env bash
# `make demo`: what this machine can do, then the main job: a throwaway VM on the
# default image runs one command and is deleted again.
set -euo pipefail
cd "$(dirname "$0")/.."
banger=./bin/banger
$banger doctor || { echo "demo: fix what doctor reports, then run 'make demo' again" >&2; exit 1; }
echo
echo "demo: banger vm run --rm -- uname -a (the first run builds the kernel and image: about a minute)"
exec $banger vm run --rm --disk-size 1G -- uname -a
