#!/usr/lib/banger/bin/sh
# root's login shell in images that have none (/usr/lib/banger/login-shell): banger's busybox sh,
# with busybox's applets on PATH after the image's own tools (the SSH server's PATH has neither
# /usr/lib/banger/bin nor, in such images, much else). No arguments: an interactive login.
PATH="${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}:/usr/lib/banger/bin"
export PATH
# An interactive login gets the image's OCI Env and, when it starts at home, its WorkingDir, as
# /etc/profile.d/banger-image-env.sh gives images with a profile (which applies the Env again
# after resetting PATH); banger's own commands (with arguments) never do.
if [ "$#" -eq 0 ]; then
  if [ -r /usr/lib/banger/image-env.sh ]; then
    # shellcheck disable=SC1091 # banger's own file in the guest
    . /usr/lib/banger/image-env.sh
    if [ -n "$banger_workdir" ] && [ "$PWD" = "$HOME" ]; then cd "$banger_workdir" || :; fi
  fi
  exec /usr/lib/banger/bin/sh -l
fi
exec /usr/lib/banger/bin/sh "$@"
