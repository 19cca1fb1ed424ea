#!/usr/lib/banger/bin/sh
# root's login shell in images that have none (/usr/lib/banger/login-shell): banger's busybox sh,
# with busybox's applets on PATH after the image's own tools (the SSH server's PATH has neither
# /usr/lib/banger/bin nor, in such images, much else). No arguments: an interactive login.
PATH="${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}:/usr/lib/banger/bin"
export PATH
[ "$#" -eq 0 ] && exec /usr/lib/banger/bin/sh -l
exec /usr/lib/banger/bin/sh "$@"
