#!/bin/sh
# Prints every test file in the order `make test` hands them to node's runner, which starts them
# in this order, two at a time. VM files (those that use test/helpers/shared-image.ts, the only way
# a test gets a kernel and image to boot) queue for the VM lane (test/helpers/vm-lane.ts), so
# spreading them through the list, a share of the other files after each, keeps one slot booting
# VMs while the other runs the rest; the lane, not this order, is what keeps VM files apart.
# test/zz-leaks.test.ts comes last (it waits for every other file to end).
set -eu
cd "$(dirname "$0")/.."
all=$(find test -name '*.test.ts' ! -name 'zz-leaks.test.ts' | LC_ALL=C sort)
# shellcheck disable=SC2086 # one path a word: test file names have no spaces
vm=$(grep -l 'helpers/shared-image' $all || true)
other=$(printf '%s\n' "$all" | grep -vxF "$vm" || true)
printf '%s\n' "$vm" "$other" | awk -v nvm="$(printf '%s\n' "$vm" | grep -c .)" '
  NF == 0 { next }
  seen < nvm { vm[seen++] = $0; next }
  { other[n++] = $0 }
  END {
    per = nvm ? int((n + nvm - 1) / nvm) : n
    for (i = 0; i < nvm || j < n; i++) {
      if (i < nvm) print vm[i]
      for (k = 0; k < per && j < n; k++) print other[j++]
    }
  }'
echo test/zz-leaks.test.ts
