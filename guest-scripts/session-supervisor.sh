#!/bin/sh
# The supervisor of one banger session, written into its directory by `session.sh start` and run
# there under setsid, detached: $1 = session dir, $2 = output cap in bytes, the rest = the command.
d=$1; cap=$2; shift 2
limit=$((cap / 2 - 262144))
# shellcheck disable=SC2046 # the fields of ls -ln, split on purpose: the fifth is the size
size() { set -- $(ls -ln "$1" 2>/dev/null); echo "${5:-0}"; }
# Copies the command's output into $d/output one dd at a time (dd never reads more
# than it writes, so nothing is lost between two of them); rotates at half the cap.
collect() {
  gen=0
  while :; do
    before=$(size "$d/output")
    dd bs=65536 count=4 >>"$d/output" 2>/dev/null
    after=$(size "$d/output")
    [ "$after" = "$before" ] && return 0
    if [ "$after" -ge "$limit" ]; then
      mv -f "$d/output" "$d/output.1"
      : >"$d/output"
      gen=$((gen + 1))
      echo "$gen" >"$d/gen.tmp" && mv -f "$d/gen.tmp" "$d/gen"
    fi
  done
}
IFS= read -r cwd <"$d/cwd"
cd "$cwd" || exit 1
# Held open (read-write, so opening never blocks) for the command's whole life.
exec 3<>"$d/stdin"
collect <"$d/out.fifo" 3>&- &
collector=$!
# The command (only) gets the image's OCI Env; exec keeps $! the command's pid.
# shellcheck disable=SC1091 # banger's own file in the guest
(
  [ ! -r /usr/lib/banger/image-env.sh ] || . /usr/lib/banger/image-env.sh
  exec setsid "$@"
) <"$d/stdin" >"$d/out.fifo" 2>&1 3>&- &
pid=$!
echo "$pid" >"$d/pid.tmp" && mv -f "$d/pid.tmp" "$d/pid"
wait "$pid"
code=$?
exec 3>&-
# Let the collector drain the last output; bounded, as a child of the command may keep the pipe open.
i=0
while [ $i -lt 30 ] && kill -0 "$collector" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
echo "$code" >"$d/exit-code.tmp" && mv -f "$d/exit-code.tmp" "$d/exit-code"
