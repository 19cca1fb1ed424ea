#!/bin/sh
# banger vm session, guest side: POSIX sh (dash and busybox ash; no bash, GNU options, perl or
# python), run over SSH as `sh -c <this> banger-session <verb> <base> <name> ...`; the layout of a
# session directory is described in src/guest/sessions.ts. Exits 3 (SESSION_ERROR_STATUS there)
# with `banger-session: <kind>: <message>` on stderr for errors it explains.
me=banger-session
die() { printf '%s: %s: %s\n' "$me" "$1" "$2" >&2; exit 3; }
# shellcheck disable=SC2046 # the fields of ls -ln, split on purpose: the fifth is the size
size() { set -- $(ls -ln "$1" 2>/dev/null); echo "${5:-0}"; }
nap() { sleep 0.1 2>/dev/null || sleep 1; }
bootid() { cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown; }
field() { v=; [ -f "$d/$1" ] && IFS= read -r v <"$d/$1"; printf '%s' "$v"; }
# Sets st to running, exited or lost (and pid) for the session in $d.
state() {
  pid=$(field pid)
  if [ -f "$d/exit-code" ]; then st=exited; return; fi
  if [ "$(field boot-id)" != "$(bootid)" ]; then st=lost; return; fi
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then st=running; return; fi
  sup=$(field supervisor)
  if [ -n "$sup" ] && kill -0 "$sup" 2>/dev/null; then st=running; return; fi
  # The supervisor writes exit-code before it exits: look again now that it is gone.
  if [ -f "$d/exit-code" ]; then st=exited; else st=lost; fi
}
record() {
  state
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${d##*/}" "$st" "$pid" "$(field exit-code)" \
    "$(field started-at)" "$(field cwd)" "$(field cmd)"
}
session() {
  case $2 in ''|.*|*/*) die invalid "invalid session name '$2'" ;; esac
  d=$1/$2
  [ -d "$d" ] || die notfound "no session named '$2'"
}
running() {
  state
  [ "$st" = running ] || die state "session '${d##*/}' is not running ($st)"
}
# Waits up to $1 tenths of a second for the session to stop running.
await_end() {
  i=0
  while [ $i -lt "$1" ]; do
    state
    [ "$st" = running ] || return 0
    nap
    i=$((i + 1))
  done
  state
  [ "$st" != running ]
}
findcmd() {
  case $1 in */*) [ -f "$1" ] && [ -x "$1" ]; return ;; esac
  old=$IFS; IFS=:
  for p in $PATH; do
    if [ -f "${p:-.}/$1" ] && [ -x "${p:-.}/$1" ]; then IFS=$old; return 0; fi
  done
  IFS=$old
  return 1
}
# Prints bytes [$2, $3) of file $1.
emit() { tail -c +$(($2 + 1)) "$1" 2>/dev/null | head -c $(($3 - $2)); }
# Prints the output from the start (or, for attach, from $gen/$off set by the caller)
# until the session is no longer running (or, for attach, the attaching shell is gone).
follow() {
  if [ "$1" = start ]; then
    gen=$(field gen); gen=${gen:-0}
    [ "$gen" -gt 0 ] && cat "$d/output.1" 2>/dev/null
    off=0
  fi
  while :; do
    [ "$1" = start ] || kill -0 "$$" 2>/dev/null || return 0
    state
    g=$(field gen); g=${g:-0}
    if [ "$g" != "$gen" ]; then
      # The file being read became output.1: print the rest of it, then go on with the new one.
      [ "$g" -eq $((gen + 1)) ] && tail -c +$((off + 1)) "$d/output.1" 2>/dev/null
      gen=$g; off=0
      continue
    fi
    s=$(size "$d/output")
    if [ "$s" -gt "$off" ]; then emit "$d/output" "$off" "$s" || return 0; off=$s; fi
    [ "$st" = running ] || return 0
    nap; nap; nap
  done
}

verb=$1; shift
case $verb in
start)
  base=$1; name=$2; cap=$3; cwd=$4; display=$5; supervisor=$6; shift 6
  command -v setsid >/dev/null 2>&1 || die precondition "setsid is not installed in the guest"
  command -v mkfifo >/dev/null 2>&1 || die precondition "mkfifo is not installed in the guest"
  # The command gets the image's OCI Env (image-env.sh); this script's own tools do not.
  imageenv=/usr/lib/banger/image-env.sh
  # No --cwd: the image's WorkingDir, else /root.
  # shellcheck disable=SC1090 # banger's own file in the guest
  [ -n "$cwd" ] || cwd=$({ [ -r "$imageenv" ] && . "$imageenv"; } || :; printf '%s' "${banger_workdir:-/root}")
  [ -d "$cwd" ] || die nocwd "no directory '$cwd' in the guest"
  cwd=$(cd "$cwd" && pwd -P) || die nocwd "cannot enter '$cwd' in the guest"
  # shellcheck disable=SC1090
  (cd "$cwd" && { [ ! -r "$imageenv" ] || . "$imageenv"; } && findcmd "$1") || die nocmd "'$1' is not an executable command in the guest (looked in PATH from $cwd)"
  case $name in ''|.*|*/*) die invalid "invalid session name '$name'" ;; esac
  mkdir -p "$base" || die internal "cannot create $base"
  d=$base/$name
  if [ -d "$d" ]; then
    state
    [ "$st" = running ] && die exists "session '$name' is already running (pid $pid)"
    rm -rf "$d"
  fi
  mkdir "$d" 2>/dev/null || die exists "session '$name' is being started by someone else"
  printf '%s\n' "$display" >"$d/cmd"
  printf '%s\n' "$cwd" >"$d/cwd"
  date -u +%Y-%m-%dT%H:%M:%SZ >"$d/started-at"
  bootid >"$d/boot-id"
  echo 0 >"$d/gen"
  : >"$d/output"
  mkfifo "$d/stdin" "$d/out.fifo" || die internal "mkfifo failed in $d"
  printf '%s' "$supervisor" >"$d/supervise.sh"
  setsid sh "$d/supervise.sh" "$d" "$cap" "$@" </dev/null >/dev/null 2>&1 &
  echo $! >"$d/supervisor"
  i=0
  while [ ! -f "$d/pid" ] && [ $i -lt 100 ]; do
    kill -0 "$(field supervisor)" 2>/dev/null || break
    nap; i=$((i + 1))
  done
  [ -f "$d/pid" ] || die internal "the supervisor of '$name' did not start the command"
  record
  ;;
list)
  [ -d "$1" ] || exit 0
  for d in "$1"/*; do
    [ -d "$d" ] && record
  done
  ;;
show)
  session "$1" "$2"
  record
  ;;
logs)
  session "$1" "$2"
  { [ "$(field gen)" != 0 ] && cat "$d/output.1" 2>/dev/null; cat "$d/output"; } | tail -c "$3" | base64
  ;;
send)
  session "$1" "$2"
  running
  # Read-write open: never blocks, and the supervisor's own open keeps the command from seeing EOF.
  dd bs=65536 1<>"$d/stdin" 2>/dev/null
  ;;
stop)
  session "$1" "$2"
  running
  kill -TERM -"$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  if ! await_end "$3"; then
    kill -KILL -"$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
    await_end 100 || die internal "session '$2' is still running after SIGKILL"
  fi
  record
  ;;
kill)
  session "$1" "$2"
  running
  kill -KILL -"$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
  await_end 100 || die internal "session '$2' is still running after SIGKILL"
  record
  ;;
follow)
  session "$1" "$2"
  follow start
  ;;
attach)
  session "$1" "$2"
  running
  # Where the output ends now: what the attached user sends is answered after this point.
  gen=$(field gen); gen=${gen:-0}
  off=$(size "$d/output")
  exec 4<&0
  follow attached &
  follower=$!
  # dd, not cat: busybox cat may sendfile(), which holds typed bytes back until EOF.
  dd bs=4096 <&4 1<>"$d/stdin" 2>/dev/null &
  forwarder=$!
  exec 4<&-
  # Ends when the session ends (follower done) or the client detaches (stdin closed).
  while kill -0 "$follower" 2>/dev/null && kill -0 "$forwarder" 2>/dev/null; do nap; nap; done
  kill "$follower" "$forwarder" 2>/dev/null
  wait
  ;;
*)
  die invalid "unknown verb '$verb'"
  ;;
esac
