#!/usr/lib/banger/bin/sh
# banger's identity reader: how a VM restored from a snapshot learns who it is now.
#
# Every clone of a snapshot wakes up as the VM that was saved: its clock, its random generator,
# SSH host keys, machine-id, MAC, address and hostname. So before a VM is snapshotted the daemon
# starts this reader in it over SSH (`start`); it waits in the VM's memory, and every clone has
# one. After a restore the daemon connects to the VM's identity socket (QEMU: the virtio-serial
# port named banger.identity, /dev/vportNpM here, found by name in sysfs) and writes one line:
#   banger-identity v1 hostname=<label> ip=<a.b.c.d/n> gw=<a.b.c.d> dns=<a.b.c.d>
#     mac=<xx:xx:xx:xx:xx:xx> epoch=<unix seconds> seed=<64 hex> clone=<yes|no>
# (one line, single spaces; ip, gw, dns and mac may be `-`: keep what the guest has). Every field
# is checked first: a bad line is answered `error <why>` and nothing is applied. Then: the clock
# (date -s), the seed mixed into the kernel's pool and the generator reseeded from it (through
# perl or python3, whichever the image has: a shell cannot make the ioctl), with clone=yes a new
# machine-id and new SSH host keys that the running server is made to use (clone=no is the VM
# that was saved, resumed: it keeps its own, which banger pinned), and the hostname and network
# through network-setup.sh. It answers `ok`, or `error` naming what failed, and exits.
#
# Verbs. The daemon sends this text with `sh -c`, so VMs of images finalised before warm start
# work too; for the same reason the network and the keys are made by the network-setup.sh and
# first-boot.sh it is given (banger's own, of the daemon's version), not the image's copies.
#   start <this script> <network-setup.sh> <first-boot.sh> [sysfs]
#       runs the reader detached (setsid, stdio on /dev/null: it outlives the SSH session)
#       unless one runs already, and returns once it waits on the port. Exits 4 when the VM has
#       no banger.identity port (it was booted before warm start).
#   run <network-setup.sh> <first-boot.sh> [sysfs]
#       the reader itself. sysfs (default /sys) is for tests.
PATH=/usr/lib/banger/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
SH=/usr/lib/banger/bin/sh
PIDFILE=/run/banger/identity.pid
PORT_NAME=banger.identity
NO_PORT=4
MAX_LINE=512

# The device of the port named banger.identity, on stdout.
find_port() {
  for d in "$1"/class/virtio-ports/*; do
    n=""
    read -r n 2>/dev/null < "$d/name" || :
    if [ "$n" = "$PORT_NAME" ]; then
      echo "/dev/${d##*/}"
      return 0
    fi
  done
  return 1
}

# Sets st to a process's start time (field 22 of its stat): with the pid, it names one process
# for good, so a reader's pid taken over by another process is not mistaken for it.
started_at() {
  s=""
  read -r s 2>/dev/null < "/proc/$1/stat" || return 1
  set -f
  # shellcheck disable=SC2086 # the fields after the command name, split on purpose
  set -- ${s##*) }
  set +f
  [ "$#" -ge 20 ] || return 1
  st=${20}
}

reader_running() {
  pid=""; start=""
  read -r pid start 2>/dev/null < "$PIDFILE" || return 1
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  started_at "$pid" && [ "$st" = "$start" ]
}

start_reader() {
  self=$1; net=$2; keys=$3; sysfs=${4:-/sys}
  reader_running && exit 0
  if ! find_port "$sysfs" >/dev/null; then
    echo "this VM has no virtio port named $PORT_NAME" >&2
    exit "$NO_PORT"
  fi
  mkdir -p /run/banger || exit 1
  setsid "$SH" -c "$self" banger-identity run "$net" "$keys" "$sysfs" </dev/null >/dev/null 2>&1 &
  i=0
  while [ "$i" -lt 100 ]; do
    reader_running && exit 0
    sleep 0.1
    i=$((i + 1))
  done
  echo "the identity reader did not start within 10 s" >&2
  exit 1
}

bad() {
  why=$1
  return 1
}

is_label() {
  case "$1" in '' | -* | *- | *[!a-z0-9-]*) return 1 ;; esac
  [ "${#1}" -le 63 ]
}

is_octet() {
  case "$1" in [0-9] | [1-9][0-9] | 1[0-9][0-9] | 2[0-4][0-9] | 25[0-5]) return 0 ;; esac
  return 1
}

is_ipv4() {
  case "$1" in '' | *[!0-9.]* | .* | *. | *..*) return 1 ;; esac
  IFS=.
  # shellcheck disable=SC2086 # digits and dots only (checked above), split on the dots
  set -- $1
  unset IFS
  [ "$#" -eq 4 ] && is_octet "$1" && is_octet "$2" && is_octet "$3" && is_octet "$4"
}

is_cidr() {
  case "$1" in */*/* | /* | */) return 1 ;; */*) ;; *) return 1 ;; esac
  is_ipv4 "${1%/*}" || return 1
  case "${1#*/}" in [1-9] | [12][0-9] | 3[0-2]) return 0 ;; esac
  return 1
}

is_mac() {
  h='[0-9a-f]'
  # The low bit of the first octet marks a group address: never a device's.
  case "$1" in ?[13579bdf]:*) return 1 ;; esac
  # shellcheck disable=SC2254 # $h is a pattern on purpose
  case "$1" in $h$h:$h$h:$h$h:$h$h:$h$h:$h$h) return 0 ;; esac
  return 1
}

is_epoch() {
  case "$1" in '' | 0* | *[!0-9]*) return 1 ;; esac
  [ "${#1}" -le 11 ]
}

is_seed() {
  case "$1" in *[!0-9a-f]*) return 1 ;; esac
  [ "${#1}" -eq 64 ]
}

# Sets v to the value of a word `<key>=<value>`.
value() {
  v=${1#"$2"=}
  [ "$1" = "$2=$v" ] || bad "expected $2= as word $3"
}

# Sets hostname ip gw dns mac epoch seed clone from the line, or why and fails.
parse_line() {
  l=$1
  [ "${#l}" -le "$MAX_LINE" ] || { bad "the line is longer than $MAX_LINE bytes"; return 1; }
  set -f
  IFS=' '
  # shellcheck disable=SC2086 # words, split on purpose
  set -- $l
  joined="$*"
  unset IFS
  set +f
  [ "$joined" = "$l" ] || { bad "the words are not separated by single spaces"; return 1; }
  [ "$#" -eq 10 ] || { bad "10 words expected, got $#"; return 1; }
  [ "$1 $2" = "banger-identity v1" ] || { bad "not a banger-identity v1 line"; return 1; }
  value "$3" hostname 3 && hostname=$v || return 1
  is_label "$hostname" || { bad "hostname is not a DNS label"; return 1; }
  value "$4" ip 4 && ip=$v || return 1
  [ "$ip" = - ] || is_cidr "$ip" || { bad "ip is not an IPv4 address with a prefix"; return 1; }
  value "$5" gw 5 && gw=$v || return 1
  [ "$gw" = - ] || is_ipv4 "$gw" || { bad "gw is not an IPv4 address"; return 1; }
  value "$6" dns 6 && dns=$v || return 1
  [ "$dns" = - ] || is_ipv4 "$dns" || { bad "dns is not an IPv4 address"; return 1; }
  value "$7" mac 7 && mac=$v || return 1
  [ "$mac" = - ] || is_mac "$mac" || { bad "mac is not a unicast MAC in lower case"; return 1; }
  value "$8" epoch 8 && epoch=$v || return 1
  is_epoch "$epoch" || { bad "epoch is not a time in seconds"; return 1; }
  value "$9" seed 9 && seed=$v || return 1
  is_seed "$seed" || { bad "seed is not 64 hex digits"; return 1; }
  value "${10}" clone 10 && clone=$v || return 1
  case "$clone" in yes | no) ;; *) bad "clone is neither yes nor no"; return 1 ;; esac
}

# Makes the kernel's generator, whose state every clone shares, take in the pool now (the ioctl
# RNDRESEEDCRNG); without perl or python3 it does so only on its own schedule.
reseed() {
  if command -v perl >/dev/null 2>&1; then
    # shellcheck disable=SC2016 # perl's text
    perl -e 'open(my $f, "<", "/dev/urandom") or die "$!\n"; ioctl($f, 0x5207, 0) or die "$!\n"'
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import fcntl, os; fcntl.ioctl(os.open("/dev/urandom", os.O_RDONLY), 0x5207)'
  fi
}

# A new /etc/machine-id when the image has one (empty or `uninitialized`: systemd makes one).
new_machine_id() {
  [ -s /etc/machine-id ] || return 0
  old=""
  read -r old < /etc/machine-id || :
  [ "$old" = uninitialized ] && return 0
  id=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  case "$id" in *[!0-9a-f]*) return 1 ;; esac
  [ "${#id}" -eq 32 ] || return 1
  printf '%s\n' "$id" > /etc/machine-id || return 1
  # dbus keeps a copy of its own where it is not a link to /etc/machine-id.
  if [ -f /var/lib/dbus/machine-id ] && [ ! -L /var/lib/dbus/machine-id ]; then
    printf '%s\n' "$id" > /var/lib/dbus/machine-id || return 1
  fi
}

# Sets found to the pids of the listeners of the server binary $1: its processes whose parent
# is not one of them (a connection's processes are the listener's children).
listeners() {
  found=""
  for p in /proc/[0-9]*; do
    # -ef (busybox's and dash's test have it) costs no readlink process per /proc entry.
    # shellcheck disable=SC3013
    [ "$p/exe" -ef "$1" ] || continue
    s=""
    read -r s 2>/dev/null < "$p/stat" || continue
    set -f
    # shellcheck disable=SC2086 # the fields after the command name, split on purpose
    set -- "$1" ${s##*) }
    set +f
    # shellcheck disable=SC3013
    [ "/proc/$3/exe" -ef "$1" ] && continue
    found="$found ${p#/proc/}"
  done
}

# Waits (5 s at most) until none of the given processes is left.
gone() {
  i=0
  while [ "$i" -lt 50 ]; do
    left=""
    for p; do kill -0 "$p" 2>/dev/null && left=1; done
    [ -z "$left" ] && return 0
    sleep 0.1
    i=$((i + 1))
  done
  return 1
}

# Makes the running SSH server use the new host keys, leaving its sessions (this reader's
# among them) running. What runs it is ssh-server.sh: the image's sshd, else banger's dropbear.
reload_ssh_server() {
  if [ -x /usr/sbin/sshd ]; then
    # On HUP sshd executes itself again, reading its host keys; its connections carry on.
    listeners /usr/sbin/sshd
    for p in $found; do kill -HUP "$p" || return 1; done
    return 0
  fi
  # dropbear reads its host key when it starts (not per connection): it is restarted.
  listeners /usr/lib/banger/bin/dropbear
  [ -n "$found" ] || return 0
  if [ -d /run/systemd/system ]; then
    # banger-ssh.service. With KillMode=process its restart stops dropbear alone; an image
    # finalised before warm start has the default, which would stop every SSH session with it.
    [ "$(systemctl show -p KillMode --value banger-ssh.service 2>/dev/null)" = process ] ||
      { ssh_why="banger-ssh.service of an older banger would stop every session (rebuild or re-pull the image)"; return 1; }
    systemctl restart banger-ssh.service >/dev/null 2>&1
    return
  fi
  # shellcheck disable=SC2086 # pids
  kill -TERM $found 2>/dev/null
  # shellcheck disable=SC2086 # pids
  gone $found || return 1
  # banger's init, PID 1 in an image without an init of its own, starts it again within 1 s;
  # in an image whose init banger's handed PID 1 to, nothing does.
  # (busybox's grep stops at the NUL between arguments: the command line is read as words.)
  case "$(tr '\0' ' ' < /proc/1/cmdline 2>/dev/null)" in *"/usr/lib/banger/init "*) return 0 ;; esac
  setsid /usr/lib/banger/ssh-server </dev/null >/dev/console 2>&1 &
}

# busybox's date reports a refused clock on stderr only: whether it took is read back.
set_clock() {
  date -s "@$epoch" >/dev/null 2>&1
  now=$(date +%s)
  [ "$now" -ge "$epoch" ] && [ "$now" -lt $((epoch + 60)) ]
}

# Applies the parsed line; sets failed to what could not be applied.
apply() {
  failed=""
  set_clock || failed="$failed, clock"
  # The seed's text stirs the pool as its bytes would (writes are mixed in, never credited).
  { printf '%s\n' "$seed" > /dev/urandom && reseed; } >/dev/null 2>&1 || failed="$failed, entropy"
  keys_ok=""
  if [ "$clone" = yes ]; then
    new_machine_id >/dev/null 2>&1 || failed="$failed, machine-id"
    if "$SH" -c "$keys" banger-first-boot renew >/dev/null 2>&1; then
      keys_ok=1
    else
      failed="$failed, ssh host keys"
    fi
  fi
  set -- "banger.hostname=$hostname"
  [ "$mac" = - ] || set -- "$@" "banger.mac=$mac"
  [ "$ip" = - ] || set -- "$@" "banger.ip=$ip"
  [ "$gw" = - ] || set -- "$@" "banger.gw=$gw"
  [ "$dns" = - ] || set -- "$@" "banger.dns=$dns"
  "$SH" -c "$net" banger-network-setup "$@" >/dev/null 2>&1 || failed="$failed, network"
  if [ -n "$keys_ok" ]; then
    ssh_why=""
    reload_ssh_server >/dev/null 2>&1 || failed="$failed, ssh server${ssh_why:+: $ssh_why}"
  fi
}

# Writes the answer; gives up after 10 s (a host that left would block the write until another
# connects, which would then read this answer instead of giving its own line).
answer() {
  printf '%s\n' "$1" >&3 &
  writer=$!
  (
    sleep 10 &
    timer=$!
    trap 'kill "$timer" 2>/dev/null; exit 0' TERM
    wait "$timer"
    kill "$writer" 2>/dev/null
  ) &
  dog=$!
  wait "$writer"
  status=$?
  kill "$dog" 2>/dev/null
  return "$status"
}

run_reader() {
  net=$1; keys=$2; sysfs=${3:-/sys}
  port=$(find_port "$sysfs") || { echo "no virtio port named $PORT_NAME" >&2; exit "$NO_PORT"; }
  # One opener at a time: a second reader's open fails here, before it claims the pidfile.
  exec 3<>"$port"
  started_at "$$" || exit 1
  mkdir -p /run/banger
  { printf '%s %s\n' "$$" "$st" > "$PIDFILE.$$" && mv -f "$PIDFILE.$$" "$PIDFILE"; } || exit 1
  trap 'rm -f "$PIDFILE"' EXIT
  trap 'exit 1' HUP INT TERM
  # While no host is connected a read ends at once (EOF); a line cut short by a host that left
  # is dropped with it.
  while :; do
    line=""
    IFS= read -r line <&3 && break
    sleep 0.2
  done
  if ! parse_line "$line"; then
    answer "error $why"
    exit 1
  fi
  apply
  if [ -n "$failed" ]; then
    answer "error could not apply: ${failed#, }"
    exit 1
  fi
  answer ok
}

case "${1:-}" in
  start)
    shift
    start_reader "$@"
    ;;
  run)
    shift
    run_reader "$@"
    ;;
  *)
    echo "usage: identity.sh start <script> <network-setup> <first-boot> [sysfs] | run <network-setup> <first-boot> [sysfs]" >&2
    exit 2
    ;;
esac
